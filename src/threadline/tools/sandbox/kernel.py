"""The program that runs inside the sandbox: a Python REPL over a pipe, speaking JSON lines.

It is not imported by the server: ``launcher.py`` reads this file's text and starts it with
``python -I -B -c <text>`` inside bubblewrap, so it may use the standard library only (matplotlib is
used when the code imported it). One request per line on stdin::

    {"code": "...", "timeout": 60.0, "files": [{"name": "data.csv", "data": "<base64>"}]}

one response per line on the original stdout (``{"ready": true}`` first, once)::

    {"logs": "...", "error": "Traceback ..." | null, "interrupted": false,
     "images": [{"name": "figure-1.png", "data": "<base64>"}],
     "files": [{"path": "out.csv", "size": 12, "data": "<base64>" | null}]}

Everything the code prints, from Python or from child processes, goes to an anonymous file in /tmp
that is read back after each call. Variables live in one namespace for the life of the kernel.

Started as pid 1 of the sandbox (bubblewrap's ``--as-pid-1``, in a user namespace: see
``launcher.py``), the program first splits in two (:func:`_become_init`): pid 1 stays behind as the
sandbox's init, made non-dumpable so that the code, which runs as the same uid, can neither read
its ``/proc`` files nor write its memory, and with no signal handler, so that no signal from inside
reaches it; it reaps orphans and exits with the kernel, which ends the sandbox. The child is the
kernel and runs the code.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import json
import os
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any

DATA = "/mnt/data"
MAX_LOG_BYTES = 256 * 1024
MAX_IMAGES = 10
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_REPORTED_FILES = 100
MAX_RETURNED_BYTES = 32 * 1024 * 1024
MPL_CONFIG = "/tmp/.matplotlib"
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
# Fonts tried in order: the first that is installed draws CJK text (Chinese labels).
MATPLOTLIBRC = """\
backend: Agg
font.family: sans-serif
font.sans-serif: WenQuanYi Micro Hei, Noto Sans CJK SC, Noto Sans CJK JP, DejaVu Sans
axes.unicode_minus: False
"""


class ExecutionInterrupted(BaseException):
    """Raised in the code when its time is up; a BaseException so ``except Exception`` does not eat it."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise ExecutionInterrupted("execution interrupted: the call's time limit was reached")


def _snapshot() -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for root, _dirs, names in os.walk(DATA):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (st.st_mode & 0o170000) == 0o100000:  # regular files only, never through links
                found[os.path.relpath(path, DATA)] = (st.st_size, st.st_mtime_ns)
            if len(found) >= 10_000:
                return found
    return found


def _place_files(files: list[dict[str, Any]]) -> None:
    for item in files:
        name = os.path.basename(str(item["name"]))
        if name in ("", ".", ".."):
            continue
        with open(os.path.join(DATA, name), "wb") as out:
            out.write(base64.b64decode(item["data"]))


def _run(code: str, namespace: dict[str, Any]) -> None:
    tree = ast.parse(code, "<code>", "exec")
    # Like a notebook cell: the value of a final expression is shown.
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
    else:
        last = None
    exec(compile(tree, "<code>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<code>", "eval"), namespace)
        if value is not None:
            print(repr(value))


def _traceback(exc: BaseException) -> str:
    """The traceback of the code's own frames and the libraries it called, not the kernel's."""
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__, limit=-20)
    # The kernel runs as ``python -c``, so its frames are the ones from "<string>".
    summary.stack = traceback.StackSummary.from_list([f for f in summary.stack if f.filename != "<string>"])
    return "".join(summary.format())


def _figures() -> list[dict[str, str]]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    images = []
    for number in pyplot.get_fignums()[:MAX_IMAGES]:
        buffer = io.BytesIO()
        pyplot.figure(number).savefig(buffer, format="png", dpi=100)
        if buffer.tell() > MAX_IMAGE_BYTES:
            print(f"[figure {number} is over {MAX_IMAGE_BYTES // 2**20} MiB as a PNG: not returned]")
            continue
        images.append({"name": f"figure-{number}.png", "data": base64.b64encode(buffer.getvalue()).decode()})
    pyplot.close("all")
    return images


def _written(before: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    budget = MAX_RETURNED_BYTES
    for path, (size, mtime) in sorted(_snapshot().items()):
        if before.get(path) == (size, mtime) or len(files) >= MAX_REPORTED_FILES:
            continue
        data = None
        if size <= budget:
            try:
                with open(os.path.join(DATA, path), "rb") as handle:
                    raw = handle.read(size + 1)
            except OSError:
                raw = b""
            if len(raw) <= budget:
                budget -= len(raw)
                data = base64.b64encode(raw).decode()
        files.append({"path": path, "size": size, "data": data})
    return files


def _end_other_processes() -> None:
    """Kill what the code left running (no process outlives its call), then reap our own children."""
    me = os.getpid()
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # everything we may signal here, except ourselves and pid 1
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not others or time.monotonic() > deadline:
            return
        time.sleep(0.01)  # pid 1 (see _become_init) reaps the orphans


def _read_logs(capture: int) -> str:
    os.lseek(capture, 0, os.SEEK_SET)
    raw = os.read(capture, MAX_LOG_BYTES + 1)
    os.ftruncate(capture, 0)
    os.lseek(capture, 0, os.SEEK_SET)
    text = raw[:MAX_LOG_BYTES].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(raw) > MAX_LOG_BYTES else "")


def _execute(request: dict[str, Any], namespace: dict[str, Any], capture: int, kernel: int) -> dict[str, Any]:
    error = None
    interrupted = False
    images: list[dict[str, str]] = []
    before: dict[str, tuple[int, int]] | None = None
    try:
        _place_files(list(request.get("files") or []))
        before = _snapshot()
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
        try:
            _run(str(request["code"]), namespace)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        images = _figures()
    except ExecutionInterrupted as exc:
        interrupted = True
        error = _traceback(exc)  # where the code was when its time ran out
    except BaseException as exc:  # the code's own errors, SystemExit and KeyboardInterrupt included
        error = _traceback(exc)
    if os.getpid() != kernel:
        os._exit(0)  # a child forked by the code must never answer in the kernel's place
    _end_other_processes()
    sys.stdout.flush()
    sys.stderr.flush()
    return {
        "logs": _read_logs(capture),
        "error": error,
        "interrupted": interrupted,
        "images": images,
        "files": [] if before is None else _written(before),
    }


def _become_init() -> None:
    """Fork the kernel; as pid 1, stay behind as the sandbox's init until the kernel exits."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    # Before the fork, so the code never sees a dumpable pid 1; the kernel (the code's own process)
    # becomes dumpable again below, as any process is.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # bubblewrap's --die-with-parent set it already; it is what ends the sandbox with bubblewrap.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    kernel = os.fork()
    if kernel == 0:
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        return
    # Python's SIGINT handler is the only one it installs; pid 1 receives no signal it does not handle.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # the pipes are the kernel's alone: its exit is their end
        os.dup2(null, fd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == kernel:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell says


def main() -> None:
    if os.getpid() == 1:
        _become_init()
    kernel = os.getpid()
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    capture = os.open("/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)
    os.dup2(capture, 1)
    os.dup2(capture, 2)
    # These stay open for the kernel's life.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
    os.makedirs(MPL_CONFIG, exist_ok=True)
    with open(os.path.join(MPL_CONFIG, "matplotlibrc"), "w", encoding="utf-8") as rc:
        rc.write(MATPLOTLIBRC)
    os.chdir(DATA)
    signal.signal(signal.SIGALRM, _interrupt)
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in requests:
        reply = _execute(json.loads(line), namespace, capture, kernel)
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    main()
