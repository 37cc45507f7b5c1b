"""code_interpreter's sandbox: persistent Python kernels in bubblewrap, one per session (thread).

``SandboxPool(SandboxLimits.from_settings(settings))`` is the whole API: ``await pool.execute(key,
code, files=...)`` returns an :class:`ExecutionResult` (logs, error, PNG images, files written under
``/mnt/data``, ``session_restarted``). ``launcher.py`` builds the sandbox, ``kernel.py`` is the program
that runs inside it, ``pool.py`` keeps the kernels. Code never runs unless a sandbox could be made:
otherwise ``SandboxUnavailableError``.
"""

from threadline.tools.sandbox.launcher import SandboxLimits
from threadline.tools.sandbox.pool import ExecutionResult, Image, SandboxPool, WrittenFile

__all__ = ["ExecutionResult", "Image", "SandboxLimits", "SandboxPool", "WrittenFile"]
