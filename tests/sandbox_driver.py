"""A server-side process for the sandbox's escape suite: a real :class:`SandboxPool`, run as root or as
an unprivileged user (``test_sandbox.py`` starts it each way), driven over JSON lines.

``python -m tests.sandbox_driver LIMITS_JSON [--no-cgroup]`` prints one line about itself first
(``pid``, ``uid``, ``describe`` or ``refused``), then answers each request line on stdin:

    {"op": "run", "session": "s", "code": "...", "timeout": null, "files": {"name": "<base64>"}}
        -> the ExecutionResult's fields (bytes in base64)
    {"op": "pids", "session": "s"}  -> {"pids": [host pids of the session's sandbox, bubblewrap first]}
    {"op": "end", "session": "s"}   -> {"ended": true}

``--no-cgroup``: as a server that may not make memory cgroups (root in most containers).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
from typing import Any

from threadline.errors import SandboxUnavailableError
from threadline.tools.sandbox import SandboxLimits, SandboxPool, watchdog
from threadline.tools.sandbox.cgroup import MemoryCgroups


def _no_cgroup(limit_bytes: int) -> MemoryCgroups | None:
    return None


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


async def serve(pool: SandboxPool) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        session = request["session"]
        reply: dict[str, Any]
        if request["op"] == "run":
            files = {name: base64.b64decode(data) for name, data in request.get("files", {}).items()}
            result = await pool.execute(session, request["code"], files=files, timeout=request.get("timeout"))
            reply = _encode(dataclasses.asdict(result))
        elif request["op"] == "pids":
            kernel = pool._kernels[session]
            reply = {"pids": [kernel.process.pid, *watchdog.children(kernel.process.pid)]}
            reply["pids"] += watchdog.sandbox_processes(kernel.process.pid)
        else:
            await pool.end(session)
            reply = {"ended": True}
        print(json.dumps(reply), flush=True)


async def main(limits: SandboxLimits) -> None:
    pool = SandboxPool(limits)
    hello: dict[str, Any] = {"pid": os.getpid(), "uid": os.getuid()}
    try:
        launcher = await pool.launcher()
        hello |= {"describe": launcher.describe(), "cgroup": launcher.cgroups is not None}
    except SandboxUnavailableError as exc:
        hello["refused"] = exc.message
    print(json.dumps(hello), flush=True)
    if "refused" not in hello:
        try:
            await serve(pool)
        finally:
            await pool.close()


if __name__ == "__main__":
    if "--no-cgroup" in sys.argv:
        MemoryCgroups.create = _no_cgroup  # type: ignore[method-assign]
    asyncio.run(main(SandboxLimits(**json.loads(sys.argv[1]))))
