"""The ``code_interpreter`` tool: the model's Python runs in the thread's sandboxed kernel.

Each thread has its own persistent kernel (:class:`~threadline.tools.sandbox.pool.SandboxPool`,
keyed by thread id), so variables and files in ``/mnt/data`` last between calls and runs while the
kernel lives. Before each call the files of the assistant's and thread's
``tool_resources.code_interpreter`` are placed in ``/mnt/data``. What the code prints comes back as
``logs``; charts it draws and files it writes are kept as files (purpose ``assistants_output``) of
the thread's project, charts as ``image`` outputs and written files in the details' ``files`` (the
run loop links them from the answer). The model is told what was printed, any error, the files
made, and when the session had to start afresh: the run loop says whether the thread ran code
before (``ToolCall.ran_code_before``), since a kernel another worker or an earlier server held is
unknown here. The result's ``kernel_until`` says how long this process keeps the thread's kernel.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import posixpath
import time
from typing import Any

from threadline.domain.ports.tool_services import ToolFiles
from threadline.domain.ports.tools import CODE_INTERPRETER, ToolCall, ToolError, ToolResult
from threadline.domain.steps import (
    BuiltinType,
    CodeInterpreterDetails,
    CodeOutput,
    ImageOutput,
    LogsOutput,
    SavedFile,
)
from threadline.errors import SandboxBusyError, SandboxUnavailableError
from threadline.tools.sandbox.pool import ExecutionResult, SandboxPool

log = logging.getLogger(__name__)

MODEL_OUTPUT_CHARS = 20_000
"""What the model is told of one call's output, at most (the run's context is the real limit)."""
RESTARTED = (
    "Note: this thread's Python session had ended (idle, limits, a server restart, or another "
    "worker) and started afresh: variables and files from earlier calls are gone; files the user "
    "attached are back."
)


def _file_ids(resources: dict[str, Any]) -> list[str]:
    ids = (resources.get("code_interpreter") or {}).get("file_ids") or []
    return [str(i) for i in ids]


class CodeInterpreterTool:
    type: BuiltinType = "code_interpreter"
    name: str = CODE_INTERPRETER.name
    description: str = CODE_INTERPRETER.description
    parameters: dict[str, Any] = CODE_INTERPRETER.parameters

    def __init__(self, pool: SandboxPool, files: ToolFiles) -> None:
        self.pool = pool
        self.files = files
        self._reaper: asyncio.Task[None] | None = None

    def start(self, call: ToolCall) -> CodeInterpreterDetails:
        code = call.arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError("code_interpreter needs {'code': '<Python source>'}.")
        return CodeInterpreterDetails(input=code)

    async def run(self, call: ToolCall) -> ToolResult:
        code = self.start(call).input
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self.pool.run_reaper(), name="threadline-sandbox-reaper")
        placed = await self._inputs(call)
        try:
            result = await self.pool.execute(
                call.thread_id, code, files=placed, continuing=call.ran_code_before
            )
        except (SandboxUnavailableError, SandboxBusyError) as exc:
            raise ToolError(exc.message) from None
        details, made = await self._outputs(call.project_id, code, result)
        return ToolResult(
            details=details,
            output=self._told(result, made),
            kernel_until=time.time() + (0 if result.kernel_stopped else self.pool.limits.idle_seconds),
        )

    async def _inputs(self, call: ToolCall) -> dict[str, bytes]:
        placed: dict[str, bytes] = {}
        budget = self.pool.limits.disk_bytes
        for file_id in dict.fromkeys(_file_ids(call.assistant_resources) + _file_ids(call.thread_resources)):
            filename, data = await self.files.read(call.project_id, file_id, budget)
            budget -= len(data)
            placed[filename] = data
        return placed

    async def _outputs(
        self, project_id: str, code: str, result: ExecutionResult
    ) -> tuple[CodeInterpreterDetails, list[str]]:
        """The call's details (logs, charts and written files kept as files) and what the model is
        told of the files."""
        outputs: list[CodeOutput] = [LogsOutput(text) for text in (result.logs, result.error) if text]
        files: list[SavedFile] = []
        made = []
        for image in result.images:
            saved = await self.files.save(project_id, image.name, image.png, "image/png")
            outputs.append(ImageOutput(saved))
            made.append(f"an image {image.name} was shown to the user (file {saved})")
        for written in result.files:
            path = f"/mnt/data/{written.path}"
            if written.data is None:
                made.append(f"{path} ({written.size} bytes) is too large to return")
                continue
            kind = mimetypes.guess_type(written.path)[0] or "application/octet-stream"
            saved = await self.files.save(project_id, posixpath.basename(written.path), written.data, kind)
            files.append(SavedFile(path, saved))
            made.append(f"{path} was saved as file {saved}; link it for the user as sandbox:{path}")
        return CodeInterpreterDetails(code, tuple(outputs), tuple(files)), made

    @staticmethod
    def _told(result: ExecutionResult, made: list[str]) -> str:
        parts = [RESTARTED] if result.session_restarted else []
        parts.append(result.logs or ("(no output)" if not result.error else ""))
        if result.error:
            parts.append(result.error)
        if result.interrupted:
            parts.append("The call ran out of time and was interrupted.")
        parts += made
        text = "\n".join(p for p in parts if p)
        if len(text) > MODEL_OUTPUT_CHARS:
            text = text[: MODEL_OUTPUT_CHARS // 2] + "\n…(output cut)…\n" + text[-MODEL_OUTPUT_CHARS // 2 :]
        return text

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await self.pool.close()
