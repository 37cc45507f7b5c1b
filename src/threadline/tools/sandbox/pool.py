"""The kernel pool: one persistent sandboxed Python kernel per session (a thread), behind ``execute``.

``SandboxPool.execute(session_key, code, files=...)`` starts the session's kernel when it has none,
sends the code, and returns an :class:`ExecutionResult`. Kernels are kept between calls (variables
and ``/mnt/data`` survive), stopped when idle for ``idle_seconds`` (``run_reaper``), when the pool
is full and another session needs a slot (least recently used first), or when they break a limit.
A call that finds its session's kernel gone says so (``session_restarted``) so the model can be told.

Everything read from a kernel is treated as hostile: replies are bounded lines of JSON, checked
field by field; a kernel that sends anything else is killed. Where no memory cgroup bounds a kernel,
a watchdog task per kernel (``watchdog.py``) kills it when its processes together pass its memory
limit, and the call says so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import os
import posixpath
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from threadline.errors import SandboxBusyError, SandboxUnavailableError
from threadline.tools.sandbox import watchdog
from threadline.tools.sandbox.launcher import (
    BWRAP_ENVIRONMENT,
    KERNEL_SOURCE,
    Launcher,
    SandboxLimits,
    prepare,
)

MAX_REPLY_BYTES = 64 * 1024 * 1024
MAX_LOG_CHARS = 256 * 1024
MAX_IMAGES = 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START_SECONDS = 30.0
KILL_GRACE_SECONDS = 5.0
"""How long code past its time may take to answer the interrupt before its kernel is killed."""
REMEMBERED_SESSIONS = 10_000
"""Ended sessions remembered, to tell a later call that its session started afresh."""


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    png: bytes


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file the code created or changed under ``/mnt/data``; ``data`` is None when too large to return."""

    path: str
    size: int
    data: bytes | None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    logs: str
    """What the code printed (stdout and stderr, child processes included), and a final expression's value."""
    error: str | None = None
    """The traceback, or why the kernel stopped; None when the code ran to the end."""
    images: tuple[Image, ...] = ()
    files: tuple[WrittenFile, ...] = ()
    interrupted: bool = False
    """The call's time ran out (the kernel was interrupted, or killed when it did not stop)."""
    session_restarted: bool = False
    """This session had a kernel before and it was gone (idle, evicted, or killed at a limit): earlier
    variables and files are lost."""
    kernel_stopped: bool = False
    """The kernel did not survive this call; the next one starts afresh."""


class _KernelGone(Exception):
    """The kernel died, overran its time, or answered with something that is not a reply."""

    def __init__(self, why: str, *, timed_out: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.timed_out = timed_out


class _Kernel:
    def __init__(self, process: asyncio.subprocess.Process, slot: int) -> None:
        self.process = process
        self.slot = slot
        self.lock = asyncio.Lock()
        self.users = 0
        self.last_used = time.monotonic()
        self.abandoned = False
        self.stopped_because: str | None = None
        """Why the pool killed it (its memory), when it did; the call in flight reports it."""
        self.watchdog: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.abandoned

    def abandon(self) -> None:
        """Kill it now, without waiting: a call was cancelled, and its late reply would answer the next."""
        self.abandoned = True
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def read_line(self, timeout: float) -> bytes:
        assert self.process.stdout is not None
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
        # the awaited call completes, and a cancelled call would then wait out the code's reply.
        try:
            async with asyncio.timeout(timeout):
                line = await self.process.stdout.readline()
        except TimeoutError as exc:
            raise _KernelGone("the code did not stop when its time ran out", timed_out=True) from exc
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise _KernelGone("it sent more than a reply may hold") from exc
        if not line.endswith(b"\n"):
            raise _KernelGone("it exceeded a limit (memory, CPU time or processes), or exited")
        return line

    async def call(self, request: dict[str, Any], timeout: float) -> bytes:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            async with asyncio.timeout(timeout):
                await self.process.stdin.drain()
        except (OSError, TimeoutError) as exc:
            raise _KernelGone("it exited") from exc
        return await self.read_line(timeout)

    async def watch_memory(self, limit_bytes: int) -> None:
        """Kill the kernel when its processes together use more than ``limit_bytes`` (no cgroup)."""
        while self.process.returncode is None:
            busy = self.lock.locked()
            await asyncio.sleep(watchdog.BUSY_SECONDS if busy else watchdog.IDLE_SECONDS)
            used = watchdog.over_limit(self.process.pid, limit_bytes)
            if used is not None and self.process.returncode is None:
                self.stopped_because = (
                    f"its processes together used {used // 2**20} MiB of memory, over its limit of "
                    f"{limit_bytes // 2**20} MiB"
                )
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                return

    async def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            await asyncio.wait([self.watchdog])
        # Killing bubblewrap kills the whole sandbox (pid 1 of its namespace has it as parent-death signal).
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


class SandboxPool:
    """Kernels for sessions, in one event loop. Create with limits, ``await close()`` at the end."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self._launcher: Launcher | SandboxUnavailableError | None = None
        self._kernels: dict[str, _Kernel] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._free_slots: deque[int] = deque(range(limits.max_kernels))
        self._lock = asyncio.Lock()

    @property
    def sessions(self) -> list[str]:
        """Sessions that have a live kernel now."""
        return [key for key, kernel in self._kernels.items() if kernel.alive]

    async def launcher(self) -> Launcher:
        """The checked launcher; raises :class:`SandboxUnavailableError` (every time) if there is none."""
        if self._launcher is None:
            try:
                self._launcher = await asyncio.to_thread(prepare, self.limits)
            except SandboxUnavailableError as exc:
                self._launcher = exc
        if isinstance(self._launcher, SandboxUnavailableError):
            raise self._launcher
        return self._launcher

    async def execute(
        self,
        session_key: str,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        timeout: float | None = None,
        continuing: bool = False,
    ) -> ExecutionResult:
        """Run ``code`` in the session's kernel, after placing ``files`` (name → bytes) in /mnt/data.

        ``continuing``: the caller knows the session ran code before (its thread has earlier
        code_interpreter calls), so a fresh kernel is reported as a restart even when this pool never
        saw the session (another worker ran it, or the server restarted).
        """
        seconds = self.limits.call_seconds if timeout is None else min(timeout, self.limits.call_seconds)
        request = {
            "code": code,
            "timeout": seconds,
            "files": [
                {"name": name, "data": base64.b64encode(data).decode()}
                for name, data in (files or {}).items()
            ],
        }
        restarted = False
        while True:
            kernel, started_afresh = await self._checkout(session_key, continuing)
            restarted = restarted or started_afresh
            try:
                async with kernel.lock:
                    if not kernel.alive:
                        continue  # it was stopped while this call waited for it: take a fresh one
                    kernel.last_used = time.monotonic()
                    try:
                        result = _parse_reply(await kernel.call(request, seconds + KILL_GRACE_SECONDS))
                    except _KernelGone as exc:
                        result = await self._lost(session_key, kernel, exc)
                    except asyncio.CancelledError:
                        kernel.abandon()
                        raise
                    kernel.last_used = time.monotonic()
                    break
            finally:
                kernel.users -= 1
        if restarted:
            return dataclasses.replace(result, session_restarted=True)
        return result

    async def _lost(self, session_key: str, kernel: _Kernel, gone: _KernelGone) -> ExecutionResult:
        await self._stop(session_key, kernel)
        why = kernel.stopped_because or gone.why
        return ExecutionResult(
            logs="",
            error=f"The Python session was stopped: {why}. Its variables and files are lost; "
            "the next call starts a fresh session.",
            interrupted=gone.timed_out,
            kernel_stopped=True,
        )

    async def _checkout(self, session_key: str, continuing: bool) -> tuple[_Kernel, bool]:
        """The session's kernel, started if need be, and whether it had to start afresh."""
        launcher = await self.launcher()
        async with self._lock:
            kernel = self._kernels.get(session_key)
            restarted = False
            if kernel is not None and not kernel.alive:
                await self._stop(session_key, kernel)
                kernel = None
            if kernel is None:
                restarted = continuing or session_key in self._ended
                kernel = await self._start(launcher)
                self._kernels[session_key] = kernel
                self._ended.pop(session_key, None)
            kernel.users += 1
            return kernel, restarted

    async def _start(self, launcher: Launcher) -> _Kernel:
        if not self._free_slots:
            idle = [(k.last_used, key) for key, k in self._kernels.items() if k.users == 0]
            if not idle:
                raise SandboxBusyError(
                    f"all {self.limits.max_kernels} code_interpreter sessions are running code; retry later"
                )
            _, oldest = min(idle)
            await self._stop(oldest, self._kernels[oldest])
        slot = self._free_slots.popleft()
        seccomp_fd = launcher.seccomp_fd()
        try:
            process = await asyncio.create_subprocess_exec(
                *launcher.command(slot, KERNEL_SOURCE, seccomp_fd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(seccomp_fd,),
                env=BWRAP_ENVIRONMENT,
                limit=MAX_REPLY_BYTES,
            )
        except OSError as exc:
            self._free_slots.append(slot)
            raise SandboxUnavailableError(f"code_interpreter could not start a sandbox: {exc}") from exc
        finally:
            os.close(seccomp_fd)
        kernel = _Kernel(process, slot)
        try:
            ready = await kernel.read_line(START_SECONDS)
            if json.loads(ready) != {"ready": True}:
                raise _KernelGone("unexpected greeting")
        except (_KernelGone, ValueError) as exc:
            await kernel.stop()
            self._free_slots.append(slot)
            assert process.stderr is not None
            detail = (await process.stderr.read(2000)).decode(errors="replace").strip()
            raise SandboxUnavailableError(
                f"code_interpreter could not start a Python kernel: {detail or exc}"
            ) from exc
        if launcher.cgroups is None:
            kernel.watchdog = asyncio.create_task(kernel.watch_memory(self.limits.memory_bytes))
        return kernel

    async def _stop(self, session_key: str, kernel: _Kernel) -> None:
        if self._kernels.get(session_key) is kernel:
            del self._kernels[session_key]
            self._free_slots.append(kernel.slot)
            self._ended[session_key] = None
            self._ended.move_to_end(session_key)
            while len(self._ended) > REMEMBERED_SESSIONS:
                self._ended.popitem(last=False)
        await kernel.stop()

    async def end(self, session_key: str) -> None:
        """Stop the session's kernel now (its thread was deleted); a later call starts afresh."""
        async with self._lock:
            kernel = self._kernels.get(session_key)
            if kernel is not None:
                await self._stop(session_key, kernel)
            self._ended.pop(session_key, None)  # a deleted thread's id is not coming back

    async def reap_idle(self) -> int:
        """Stop kernels unused for ``idle_seconds``; returns how many were stopped."""
        now = time.monotonic()
        async with self._lock:
            idle = [
                (key, k)
                for key, k in self._kernels.items()
                if k.users == 0 and now - k.last_used >= self.limits.idle_seconds
            ]
            for key, kernel in idle:
                await self._stop(key, kernel)
        return len(idle)

    async def run_reaper(self) -> None:
        """Reap idle kernels forever (run it as a task; cancel it to stop)."""
        while True:
            await asyncio.sleep(max(0.1, min(self.limits.idle_seconds / 4, 60.0)))
            await self.reap_idle()

    async def close(self) -> None:
        """Stop every kernel and remove the pool's cgroups (the pool may still be used afterwards)."""
        async with self._lock:
            for key, kernel in list(self._kernels.items()):
                await self._stop(key, kernel)
            if isinstance(self._launcher, Launcher) and self._launcher.cgroups is not None:
                await asyncio.to_thread(self._launcher.cgroups.remove)


def _parse_reply(line: bytes) -> ExecutionResult:
    """A reply checked field by field; anything unexpected means the kernel is not to be trusted."""
    try:
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise TypeError("not an object")
        logs = _text(reply.get("logs"))
        error = reply.get("error")
        if error is not None:
            error = _text(error)
        images = [_image(item) for item in _list(reply.get("images"))[:MAX_IMAGES]]
        files = [_file(item) for item in _list(reply.get("files"))]
        return ExecutionResult(
            logs=logs,
            error=error,
            images=tuple(images),
            files=tuple(files),
            interrupted=reply.get("interrupted") is True,
        )
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise _KernelGone("it sent something that is not a reply") from exc


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    if len(value) > MAX_LOG_CHARS:
        return value[:MAX_LOG_CHARS] + "\n[output truncated]"
    return value


def _list(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TypeError("expected a list of objects")
    return value


def _image(item: dict[str, Any]) -> Image:
    png = base64.b64decode(item["data"], validate=True)
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    return Image(name=_safe_name(item["name"]), png=png)


def _file(item: dict[str, Any]) -> WrittenFile:
    size = item["size"]
    if not isinstance(size, int) or size < 0:
        raise TypeError("bad size")
    data = None if item["data"] is None else base64.b64decode(item["data"], validate=True)
    return WrittenFile(path=_safe_name(item["path"]), size=size, data=data)


def _safe_name(value: object) -> str:
    """A relative path under /mnt/data, as reported by the kernel, checked before anyone uses it."""
    if not isinstance(value, str) or not value or len(value) > 1024 or "\x00" in value:
        raise ValueError("bad name")
    normal = posixpath.normpath(value)
    if normal.startswith(("/", "..")):
        raise ValueError("bad name")
    return normal
