"""code_interpreter's sandbox, for real: bubblewrap, the kernel, the pool, and an escape suite.

Every test runs code in a real sandbox on this machine. Kernels are shared across tests where that
does not weaken them (one pool for the module, one session per concern); tests that break a kernel
on purpose use sessions of their own. The escape suite runs once per way a server may run (as root,
as root that may make no memory cgroup, as an unprivileged user, as the container's user), each in
a server-side process of its own (``sandbox_driver.py``) whose environment holds secrets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import threadline
from threadline.config import Settings
from threadline.errors import SandboxBusyError, SandboxUnavailableError
from threadline.tools.sandbox import ExecutionResult, SandboxLimits, SandboxPool, cgroup, launcher, seccomp
from threadline.tools.sandbox.pool import Image, WrittenFile, _KernelGone, _parse_reply

T = TypeVar("T")

if shutil.which("bwrap") is None and not os.environ.get("CI"):
    pytest.skip("bubblewrap is not installed (make test installs it)", allow_module_level=True)

LIMITS = SandboxLimits(
    memory_bytes=768 * 1024 * 1024,
    disk_bytes=32 * 1024 * 1024,
    processes=64,
    call_seconds=20.0,  # loaded machines import pandas slowly; tests of the time limit pass their own
    session_cpu_seconds=60,
    max_kernels=4,  # as any user but root, every kernel's processes count against one process limit
)


class Loop:
    """One event loop in a thread, so kernels outlive a single test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def pool(loop: Loop) -> Iterator[SandboxPool]:
    shared = SandboxPool(LIMITS)
    yield shared
    loop.run(shared.close())


@pytest.fixture
def run(loop: Loop, pool: SandboxPool) -> Callable[..., ExecutionResult]:
    def execute(session: str, code: str, **kwargs: Any) -> ExecutionResult:
        return loop.run(pool.execute(session, code, **kwargs))

    return execute


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except FileNotFoundError:
                pass
    return found


# --- what code can do -------------------------------------------------------------------------


def test_state_survives_between_calls(run: Callable[..., ExecutionResult]) -> None:
    first = run("state", "numbers = [1, 2, 3]\nprint('stored')")
    assert first.logs == "stored\n" and first.error is None
    assert not first.session_restarted
    second = run("state", "numbers.append(4)\nsum(numbers)", continuing=True)
    assert second.logs == "10\n"
    assert not second.session_restarted


def test_a_session_this_pool_never_saw_is_a_restart_when_the_caller_knows_it_ran(
    run: Callable[..., ExecutionResult],
) -> None:
    # Another worker ran the thread's earlier calls, or the server restarted since.
    result = run("elsewhere", "print('numbers' in globals())", continuing=True)
    assert result.session_restarted and result.logs == "False\n"


def test_errors_come_back_as_the_code_s_traceback(run: Callable[..., ExecutionResult]) -> None:
    result = run("errors", "print('before')\n1 / 0")
    assert result.logs == "before\n"
    assert result.error is not None and result.error.startswith("Traceback")
    assert "ZeroDivisionError" in result.error and "_execute" not in result.error
    syntax = run("errors", "def broken(:")
    assert syntax.error is not None and "SyntaxError" in syntax.error


def test_output_of_child_processes_is_captured(run: Callable[..., ExecutionResult]) -> None:
    result = run(
        "logs",
        "import subprocess, sys\nsubprocess.run(['echo', 'from a child'])\nprint('oops', file=sys.stderr)",
    )
    assert "from a child\n" in result.logs and "oops\n" in result.logs


def test_chart_with_chinese_labels_comes_back_as_png(run: Callable[..., ExecutionResult]) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "from matplotlib import font_manager\n"
        "plt.bar(['一月', '二月', '三月'], [3, 5, 2])\n"
        "plt.title('每月销售额')\n"
        "print(font_manager.findfont(plt.gca().title.get_fontproperties()))\n"
    )
    result = run("chart", code)
    assert result.error is None, result.error
    assert "missing from font" not in result.logs  # matplotlib warns when it draws boxes instead
    assert "wqy" in result.logs.lower() or "cjk" in result.logs.lower()
    (image,) = result.images
    assert image.png.startswith(b"\x89PNG\r\n\x1a\n") and image.png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", image.png[16:24])
    assert (width, height) == (640, 480)
    assert 8_000 < len(image.png) < 500_000


def test_a_csv_in_mnt_data_is_read_by_pandas(run: Callable[..., ExecutionResult]) -> None:
    csv = "城市,销量\n北京,120\n上海,80\n".encode()
    code = (
        "import pandas as pd\n"
        "frame = pd.read_csv('/mnt/data/sales.csv')\n"
        "frame.assign(double=frame['销量'] * 2).to_csv('/mnt/data/out/double.csv', index=False)\n"
        "print(frame['销量'].sum())\n"
    )
    run("csv", "import os; os.makedirs('/mnt/data/out')")
    result = run("csv", code, files={"sales.csv": csv})
    assert result.error is None, result.error
    assert result.logs == "200\n"
    (written,) = result.files  # the placed file is not reported back as written by the code
    assert written.path == "out/double.csv"
    assert written.data == "城市,销量,double\n北京,120,240\n上海,80,160\n".encode()


# --- escape suite: as root, as an unprivileged user, as the container's user --------------------
#
# Each mode runs a real pool in a server-side process of its own (tests/sandbox_driver.py) whose
# environment holds secrets, as a deployed server's does. As root the test starts it directly (once
# as a host where memory cgroups can be made, once as one where they cannot, as in most containers);
# for the other users it drops to that uid first (``setpriv``), inside a private mount namespace
# where any directory that user may not enter on the way to Python and the sources (a 0700 home) is
# covered by a 0755 tmpfs and the needed tree bound back; the host is not changed.

SECRETS = {
    "THREADLINE_UPSTREAM_API_KEY": "sk-upstream-d41d8cd98f00b204",
    "AWS_SECRET_ACCESS_KEY": "aws-e9800998ecf8427e",
    "THREADLINE_DATABASE_URL": "postgresql://threadline:pg-8f14e45fceea167a@db:5432/threadline",
}
ROOT = Path(__file__).resolve().parents[2]
CONTAINER_UID = 10001
"""deploy/Dockerfile's ``USER``."""


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    uid: int | None
    """The user the server runs as; None: the test's own (root)."""
    cgroup: bool = True
    """Whether the server may make memory cgroups (where the host allows them)."""
    environment: tuple[tuple[str, str], ...] = ()


MODES = [
    Mode("root", None),
    Mode("root-without-cgroup", None, cgroup=False),
    Mode("unprivileged", 65534),
    Mode(
        "container-user",
        CONTAINER_UID,
        environment=(("THREADLINE_HOST", "0.0.0.0"), ("THREADLINE_PORT", "8000"), ("PYTHONUNBUFFERED", "1")),
    ),
]


def unavailable(reason: str) -> None:
    """Skip, except under CI, where the suite must run in every mode this machine can offer."""
    if os.environ.get("CI"):
        pytest.fail(f"the sandbox escape suite must run here: {reason}")
    pytest.skip(reason)


def _hidden_directories(paths: list[Path]) -> dict[Path, set[Path]]:
    """For each directory others may not enter on the way to ``paths``, its children on those ways."""
    hidden: dict[Path, set[Path]] = {}
    for path in paths:
        chain = [*reversed(path.parents), path]
        for directory, child in itertools.pairwise(chain):
            if directory != Path("/") and not directory.stat().st_mode & 0o001:
                hidden.setdefault(directory, set()).add(child)
                break
    return hidden


def _as_user(uid: int, command: list[str]) -> list[str]:
    """``command`` as ``uid`` (from root), with the Python and sources it needs reachable."""
    needed = [Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix), ROOT]
    needed.append(Path(threadline.__file__).resolve().parents[1])
    lines = ["set -e"]
    fd = 3
    for directory, children in _hidden_directories([p.resolve() for p in needed]).items():
        opened = []
        for child in sorted(children):
            lines.append(f"exec {fd}<{shlex.quote(str(child))}")
            opened.append((fd, child))
            fd += 1
        lines.append(f"mount -t tmpfs -o mode=0755,size=1m threadline-tests {shlex.quote(str(directory))}")
        for number, child in opened:
            lines += [
                f"mkdir -p {shlex.quote(str(child))}",
                f"mount --no-canonicalize --bind /proc/self/fd/{number} {shlex.quote(str(child))}",
                f"exec {number}<&-",
            ]
    lines.append('exec "$@"')
    setpriv = [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all",
    ]  # fmt: skip
    private = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines), "sh"]
    return private + setpriv + command


class Sandbox:
    """A driver process: a server-side pool as one mode's user, with secrets in its environment."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        limits = json.dumps(dataclasses.asdict(LIMITS))
        command = [sys.executable, "-m", "tests.sandbox_driver", limits]
        if not mode.cgroup:
            command.append("--no-cgroup")
        if mode.uid is not None and os.geteuid() == 0:
            command = _as_user(mode.uid, command)
        source = str(Path(threadline.__file__).resolve().parents[1])
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([source, str(ROOT)]),
            **SECRETS,
            **dict(mode.environment),
        }
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            cwd=ROOT,
            env=environment,
            text=True,
        )
        try:
            hello = self._read(60)
        except AssertionError:  # it could not start as that user here (no mount namespace, say)
            self.errors.seek(0)
            hello = {"pid": 0, "uid": mode.uid, "refused": self.errors.read()[-500:].decode(errors="replace")}
        self.pid: int = hello["pid"]
        self.uid: int = hello["uid"]
        self.refused: str | None = hello.get("refused")
        self.describe: str = hello.get("describe", "")
        self.cgroup: bool = hello.get("cgroup", False)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, "the driver did not answer in time"
        line = self.process.stdout.readline()
        assert line, f"the driver exited ({self.process.poll()})"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(self, timeout: float = 90.0, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()
        return self._read(timeout)

    def run(
        self, session: str, code: str, *, files: dict[str, bytes] | None = None, timeout: float | None = None
    ) -> ExecutionResult:
        encoded = {name: base64.b64encode(data).decode() for name, data in (files or {}).items()}
        reply = self.request(op="run", session=session, code=code, files=encoded, timeout=timeout)
        return ExecutionResult(
            logs=reply["logs"],
            error=reply["error"],
            images=tuple(Image(i["name"], base64.b64decode(i["png"])) for i in reply["images"]),
            files=tuple(
                WrittenFile(f["path"], f["size"], None if f["data"] is None else base64.b64decode(f["data"]))
                for f in reply["files"]
            ),
            interrupted=reply["interrupted"],
            session_restarted=reply["session_restarted"],
            kernel_stopped=reply["kernel_stopped"],
        )

    def pids(self, session: str) -> list[int]:
        pids: list[int] = self.request(op="pids", session=session)["pids"]
        return pids

    def end(self, session: str) -> None:
        self.request(op="end", session=session)

    def close(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it may have exited already
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.errors.close()


@pytest.fixture(scope="module", params=MODES, ids=[mode.name for mode in MODES])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    driver = start(request.param)
    try:
        yield driver
    finally:
        driver.close()


def start(mode: Mode) -> Sandbox:
    """A driver in ``mode``, or a skip (a failure under CI) where this machine cannot offer it."""
    if os.geteuid() != 0 and mode.uid is None:
        pytest.skip(f"{mode.name}: the server runs as root in this mode, and the tests do not")
    if shutil.which("unshare") is None and mode.uid is not None and os.geteuid() == 0:
        unavailable("util-linux's unshare is needed to run the server as another user")
    driver = Sandbox(mode)
    if driver.refused is not None:
        driver.close()
        unavailable(f"{mode.name}: {driver.refused} (unprivileged user namespaces may be off here)")
    assert driver.uid == (os.geteuid() if mode.uid is None or os.geteuid() != 0 else mode.uid)
    return driver


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_each_mode_describes_its_confinement(sandbox: Sandbox) -> None:
    assert "empty environment" in sandbox.describe and "read-only / and /dev" in sandbox.describe
    if sandbox.cgroup:
        assert "a cgroup per kernel" in sandbox.describe
    else:
        assert "no cgroup allowed here" in sandbox.describe and "watchdog" in sandbox.describe
    assert ("host uids 200000+" if sandbox.uid == 0 else "user namespace") in sandbox.describe


def test_no_network_not_even_the_host_s_own_services(sandbox: Sandbox) -> None:
    code = (
        "import socket\n"
        "for host, port in [('127.0.0.1', 5432), ('127.0.0.1', 6379), ('1.1.1.1', 53), ('10.0.0.1', 80)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=1).close()\n"
        "        print('CONNECTED', port)\n"
        "    except OSError as exc:\n"
        "        print('refused', port, exc.errno)\n"
        "print(sorted(socket.if_nameindex()))\n"
    )
    result = sandbox.run("intruder", code)
    assert result.error is None, result.error
    assert "CONNECTED" not in result.logs
    assert result.logs.count("refused") == 4
    assert "[(1, 'lo')]" in result.logs  # no interface but its own loopback
    for port in (5432, 6379):  # where the host listens, the sandbox was refused all the same
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                assert f"refused {port}" in result.logs


def test_host_files_cannot_be_read(sandbox: Sandbox, tmp_path: Path) -> None:
    database = tmp_path / "threadline.db"
    database.write_text("secret rows")
    database.chmod(0o644)
    source = Path(threadline.__file__)
    targets = ["/etc/shadow", "/etc/passwd", str(source), str(database), str(Path(__file__)), "/root/.bashrc"]
    code = (
        f"for path in {targets!r} + ['/proc/1/root' + p for p in {targets!r}]:\n"
        "    try:\n"
        "        open(path).read()\n"
        "        print('READ', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', type(exc).__name__)\n"
    )
    result = sandbox.run("intruder", code)
    assert result.error is None, result.error
    assert "READ" not in result.logs
    assert result.logs.count("denied") == 2 * len(targets)


def test_another_session_s_files_are_out_of_reach(sandbox: Sandbox) -> None:
    sandbox.run("victim", "open('/mnt/data/victim-secret.txt', 'w').write('the victim s data')")
    code = (
        "import os\n"
        "found = []\n"
        "for top in ['/mnt', '/tmp', '/dev/shm', '/proc/1/root', '/']:\n"
        "    for root, dirs, files in os.walk(top):\n"
        "        dirs[:] = [d for d in dirs if not (root == '/' and d in ('proc', 'usr'))]\n"
        "        found += [os.path.join(root, f) for f in files if 'victim' in f]\n"
        "print(found, os.listdir('/mnt/data'))\n"
    )
    result = sandbox.run("intruder", code)
    assert result.error is None, result.error
    assert "victim-secret" not in result.logs


def test_nothing_outside_mnt_data_and_tmp_is_writable(sandbox: Sandbox) -> None:
    targets = [
        "/", "/usr", "/usr/lib", "/etc", "/etc/fonts", "/dev", "/mnt", "/proc/1/root", sys.prefix,
        sys.base_prefix,
    ]  # fmt: skip
    code = (
        f"for directory in {targets!r}:\n"
        "    try:\n"
        "        open(directory + '/written-by-sandbox', 'w').write('x')\n"
        "        print('WROTE', directory)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "for directory in ['/mnt/data', '/tmp', '/dev/shm']:\n"
        "    open(directory + '/ok', 'w').write('x')\n"
        "print('scratch ok')\n"
    )
    result = sandbox.run("intruder", code)
    assert result.error is None, result.error
    assert "WROTE" not in result.logs
    assert result.logs.count("refused") == len(targets)
    assert "scratch ok" in result.logs
    for directory in targets:
        if not directory.startswith("/proc/"):
            assert not Path(directory, "written-by-sandbox").exists()


@pytest.mark.parametrize("directory", ["/", "/dev", "/mnt", "/etc"])
def test_root_and_dev_cannot_be_filled(sandbox: Sandbox, directory: str) -> None:
    """In a user namespace bubblewrap's root and /dev are tmpfs mounts of the code's own uid, with no
    size: gigabytes written there would be host memory past every limit."""
    code = (
        "import os\n"
        "written = 0\n"
        "try:\n"
        f"    with open({directory!r} + '/fill', 'wb') as out:\n"
        "        while written < 2 * 1024 ** 3:\n"
        "            out.write(b'x' * 1024 * 1024)\n"
        "            written += 1024 * 1024\n"
        "except OSError as exc:\n"
        "    print(exc.errno, written)\n"
        "try:\n"
        f"    os.mkdir({directory!r} + '/made')\n"
        "    print('MADE')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    result = sandbox.run("filler", code)
    assert result.error is None, result.error
    fill, made = result.logs.splitlines()
    errno, written = (int(n) for n in fill.split())
    assert errno in (13, 30) and written == 0  # EACCES (another uid's, as root) or EROFS
    assert made in ("13", "30")


def test_no_environment_of_the_server_anywhere_inside(sandbox: Sandbox) -> None:
    """Every process the code can see, pid 1 and a child of its own included: no environment holds
    anything but the sandbox's own variables, and no readable /proc file holds a secret."""
    code = (
        "import json, os, subprocess\n"
        "child = subprocess.Popen(['cat'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "child.stdin.write(b'up\\n'); child.stdin.flush(); child.stdout.readline()  # past its exec\n"
        "seen = {}\n"
        "for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):\n"
        "    for name in ('environ', 'cmdline', 'status'):\n"
        "        try:\n"
        "            seen[pid + '/' + name] = open(f'/proc/{pid}/{name}', 'rb').read().decode(errors='replace')\n"
        "        except OSError as exc:\n"
        "            seen[pid + '/' + name] = type(exc).__name__\n"
        "child.kill()\n"
        "print(json.dumps({'seen': seen, 'kernel': os.getpid(), 'child': child.pid, 'env': dict(os.environ)}))\n"
    )
    result = sandbox.run("environment", code)
    assert result.error is None, result.error
    for secret in SECRETS.values():
        assert secret not in result.logs
    report = json.loads(result.logs)
    seen: dict[str, str] = report["seen"]
    pids = {key.split("/")[0] for key in seen}
    assert pids == {"1", str(report["kernel"]), str(report["child"])}, pids
    expected = {f"{name}={value}" for name, value in launcher.ENVIRONMENT.items()} | {"PWD=/mnt/data"}
    assert report["env"] == {**launcher.ENVIRONMENT, "PWD": "/mnt/data"}  # PWD: bubblewrap's --chdir
    for pid in pids - {"1"}:
        assert set(seen[f"{pid}/environ"].strip("\0").split("\0")) == expected
    assert seen["1/environ"] == "PermissionError"
    for pid in pids:  # pid 1 too: nothing inside runs without the seccomp filter
        assert "\nSeccomp:\t2\n" in seen[f"{pid}/status"], seen[f"{pid}/status"]


def test_no_process_of_the_sandbox_starts_with_the_server_s_environment(sandbox: Sandbox) -> None:
    """Seen from the host: bubblewrap itself is started with an empty environment, so no process of
    the sandbox, inside or out, holds the server's (``--clearenv`` leaves the original in /proc)."""
    if os.geteuid() != 0:
        pytest.skip("reading other processes' environment from the host needs root")
    sandbox.run("host-view", "x = 1")
    pids = sandbox.pids("host-view")
    environments = [Path(f"/proc/{pid}/environ").read_bytes() for pid in pids]
    assert environments[0] == b""  # bubblewrap, outside the sandbox
    expected = {f"{name}={value}".encode() for name, value in launcher.ENVIRONMENT.items()}
    for environment in environments[1:]:
        assert set(environment.split(b"\0")) - {b""} <= expected | {b"PWD=/mnt/data"}, environment


def test_pid_1_cannot_be_read_written_or_signalled(sandbox: Sandbox) -> None:
    code = (
        "import os, signal, time\n"
        "for what in ['environ', 'mem', 'maps', 'auxv', 'fd', 'root', 'cwd']:\n"
        "    path = '/proc/1/' + what\n"
        "    try:\n"
        "        if what in ('fd', 'root', 'cwd'):\n"
        "            os.listdir(path)\n"
        "        elif what == 'mem':\n"
        "            open(path, 'r+b').close()\n"
        "        else:\n"
        "            open(path, 'rb').read()\n"
        "        print('READ', what)\n"
        "    except OSError as exc:\n"
        "        print('refused', what, type(exc).__name__)\n"
        "for sig in [*range(1, 32), signal.SIGRTMIN]:\n"
        "    if sig != signal.SIGCONT:\n"
        "        try:\n"
        "            os.kill(1, sig)\n"
        "        except OSError:\n"
        "            pass\n"
        "time.sleep(0.3)\n"
        "print('pid 1', open('/proc/1/stat').read().rsplit(')', 1)[1].split()[0])\n"
    )
    first = sandbox.run("pid1", "kept = 'still here'")
    assert first.error is None, first.error
    result = sandbox.run("pid1", code)
    assert result.error is None, result.error
    assert "READ" not in result.logs
    assert result.logs.count("refused") == 7
    assert result.logs.splitlines()[-1] == "pid 1 S"  # asleep in wait(): not stopped, not gone
    after = sandbox.run("pid1", "print(kept)")
    assert after.logs == "still here\n" and not after.session_restarted and not after.kernel_stopped


def test_the_kernel_runs_under_its_limits(sandbox: Sandbox) -> None:
    code = (
        "import resource\n"
        "for name in ['RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_NOFILE', 'RLIMIT_FSIZE', 'RLIMIT_CPU', 'RLIMIT_CORE']:\n"
        "    print(*resource.getrlimit(getattr(resource, name)))\n"
    )
    result = sandbox.run("limits", code)
    cpu = LIMITS.session_cpu_seconds
    assert result.logs.splitlines() == [
        f"{LIMITS.memory_bytes} {LIMITS.memory_bytes}",
        f"{LIMITS.processes} {LIMITS.processes}",
        "256 256",
        f"{LIMITS.disk_bytes} {LIMITS.disk_bytes}",
        f"{cpu} {cpu + 5}",
        "0 0",
    ]


def test_no_privileges_inside(sandbox: Sandbox) -> None:
    code = (
        "import os\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
        "print(os.getuid(), os.geteuid(), os.getgroups())\n"
        "print(status['CapEff'], status['CapBnd'], status['NoNewPrivs'])\n"
    )
    result = sandbox.run("intruder", code)
    uid_line, caps_line = result.logs.splitlines()
    assert not uid_line.startswith("0 ")
    assert caps_line == "0000000000000000 0000000000000000 1"


def test_kernel_interfaces_off_limits_are_refused(sandbox: Sandbox) -> None:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the filter's numbers are known for x86-64 and arm64 only")
    numbers = seccomp._ARCHES[platform.machine()][1]
    names = [
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
    ]
    code = (
        "import ctypes, subprocess, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"for name, number in {[(n, numbers[n]) for n in names]!r}:\n"
        "    flags = 0x10000000 if name == 'unshare' else 0\n"  # CLONE_NEWUSER
        "    print(name, libc.syscall(number, flags, 0, 0, 0, 0), ctypes.get_errno())\n"
        f"print('clone3', libc.syscall({numbers['clone3']}, 0, 0), ctypes.get_errno())\n"
        "print(subprocess.run(['unshare', '--user', '--map-root-user', 'true']).returncode)\n"
        "worker = threading.Thread(target=print, args=('threads still work',))\n"
        "worker.start()\n"
        "worker.join()\n"
    )
    result = sandbox.run("intruder", code)
    assert result.error is None, result.error
    lines = result.logs.splitlines()
    assert lines[: len(names)] == [f"{name} -1 1" for name in names]  # EPERM
    assert lines[len(names)] == "clone3 -1 38"  # ENOSYS, so C libraries fall back to clone
    assert lines[-2] == "1" and lines[-1] == "threads still work"


def test_signals_cannot_reach_anything_outside(sandbox: Sandbox) -> None:
    code = (
        "import os, signal\n"
        f"for pid in [{sandbox.pid}, {os.getpid()}, {os.getppid()}]:\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print('KILLED', pid)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)\n"
        "except OSError:\n"
        "    pass\n"
        "print('still here')\n"
    )
    result = sandbox.run("intruder", code)
    assert "KILLED" not in result.logs
    assert result.logs.count("refused ProcessLookupError") == 3  # outside its namespace: not even seen
    assert "still here" in result.logs
    assert sandbox.run("intruder", "print('answering')").logs == "answering\n"  # the server lives


def test_a_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = sandbox.run("bomb", "import os\nwhile True:\n    os.fork()")
    assert time.monotonic() - started < 30
    assert result.error is not None and "BlockingIOError" in result.error
    # No process outlives its call, and the kernel still answers.
    after = sandbox.run(
        "bomb", "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    )
    assert after.logs.count(",") == 1, after.logs  # pid 1 and the kernel
    assert not after.session_restarted
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks


def test_background_processes_do_not_outlive_their_call(sandbox: Sandbox) -> None:
    sandbox.run("background", "import subprocess\nsubprocess.Popen(['sleep', '1000'])")
    result = sandbox.run(
        "background", "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    assert result.logs == "2\n"


def test_a_stopped_kernel_leaves_no_process_behind(sandbox: Sandbox) -> None:
    """Stopping a kernel kills bubblewrap; pid 1 of the sandbox must follow, and everything with it."""
    sandbox.run("ended", "import subprocess\nthreads = [subprocess.Popen(['sleep', '1000'])]")
    pids = sandbox.pids("ended")
    assert len(pids) >= 3 and all(alive(pid) for pid in pids)  # bubblewrap, pid 1, the kernel
    sandbox.end("ended")
    wait_for(lambda: not any(alive(pid) for pid in pids))


@pytest.mark.parametrize("mode", MODES, ids=[mode.name for mode in MODES])
def test_a_killed_server_leaves_no_sandbox_behind(mode: Mode) -> None:
    driver = start(mode)
    try:
        driver.run("orphan", "import subprocess\nchild = subprocess.Popen(['sleep', '1000'])")
        pids = driver.pids("orphan")
        os.kill(driver.pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in pids))
    finally:
        driver.close()
        own = cgroup._own_memory_cgroup()  # the killed server's cgroups, empty now: tidy the host
        for base in own[0].glob(f"threadline-sandbox-{driver.pid}-*") if own is not None else []:
            cgroup.MemoryCgroups(base, 0, own[1]).remove()


def test_a_memory_bomb_fails_inside_and_the_kernel_survives(sandbox: Sandbox) -> None:
    sandbox.run("memory", "kept = 'still here'")
    result = sandbox.run("memory", "hog = []\nwhile True:\n    hog.append(bytearray(10 ** 8))")
    assert result.error is not None and "MemoryError" in result.error
    after = sandbox.run("memory", "del hog\nprint(kept)")
    assert after.logs == "still here\n" and not after.session_restarted


def test_memory_is_bounded_across_processes(sandbox: Sandbox) -> None:
    """Four children of three quarters of the limit each: each is within its address space, together
    they are not. A cgroup's OOM killer or, without one, the pool's watchdog must stop them."""
    share = LIMITS.memory_bytes * 3 // 4
    code = (
        "import os, time\n"
        "children = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        hold = b'x' * {share}\n"
        "        time.sleep(1.5)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "print(sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))\n"
    )
    sandbox.run("hungry", "kept = 1")
    result = sandbox.run("hungry", code)
    assert result.logs != "[0, 0, 0, 0]\n", result  # not all four held their share
    if not sandbox.cgroup:
        assert result.kernel_stopped
        limit = f"over its limit of {LIMITS.memory_bytes // 2**20} MiB"
        assert result.error is not None and "memory" in result.error and limit in result.error, result.error
    if result.kernel_stopped:
        assert result.error is not None and "fresh session" in result.error
        after = sandbox.run("hungry", "print('kept' in globals())")
        assert after.logs == "False\n" and after.session_restarted
    else:  # the cgroup's OOM killer took a child
        assert "-9" in result.logs


def test_pages_forked_children_share_count_once(sandbox: Sandbox) -> None:
    """Half the limit, then three forked children that only read it: resident sets add up to twice
    the limit, the memory used does not, and nothing is killed."""
    code = (
        "import os, time\n"
        f"data = b'x' * {LIMITS.memory_bytes // 2}\n"
        "children = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(0.5)\n"
        "        os._exit(data[-1] == ord('x'))\n"
        "    children.append(pid)\n"
        "print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])\n"
        "del data\n"
    )
    result = sandbox.run("sharing", code)
    assert result.error is None and not result.kernel_stopped, result
    assert result.logs == "[1, 1, 1]\n"


@pytest.mark.parametrize("directory", ["/mnt/data", "/dev/shm", "/tmp"])
def test_scratch_space_is_bounded(sandbox: Sandbox, directory: str) -> None:
    code = (
        "written = 0\n"
        "try:\n"
        f"    with open('{directory}/fill', 'wb') as out:\n"
        "        while written < 10 * 1024 ** 3:\n"
        "            out.write(b'x' * 1024 * 1024)\n"
        "            written += 1024 * 1024\n"
        "except OSError as exc:\n"
        "    print(exc.errno, written // 1024 ** 2)\n"
        "import os\n"
        f"os.remove('{directory}/fill')\n"
    )
    result = sandbox.run("disk", code)
    assert result.error is None, result.error
    errno, megabytes = (int(n) for n in result.logs.split())
    assert errno in (27, 28)  # EFBIG (the file size limit) or ENOSPC (the tmpfs is full)
    assert megabytes <= 64


# --- limits in one pool of this process ---------------------------------------------------------


def test_memory_is_bounded_across_processes_where_a_cgroup_can_be_made(loop: Loop) -> None:
    pool = SandboxPool(dataclasses.replace(LIMITS, call_seconds=30))
    try:
        cgroups = loop.run(pool.launcher()).cgroups
        if cgroups is None:
            pytest.skip(
                "this host lets the server make no memory cgroup: the per-process limit alone applies"
            )
        # Four processes of 400 MiB: each is within the address-space limit, together they are not.
        code = (
            "import os, time\n"
            "children = []\n"
            "for _ in range(4):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        hold = b'x' * (400 * 1024 * 1024)\n"
            "        time.sleep(0.5)\n"
            "        os._exit(0)\n"
            "    children.append(pid)\n"
            "print(sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))\n"
        )
        result = loop.run(pool.execute("hungry", code))
        assert result.kernel_stopped or "-9" in result.logs, result  # the cgroup's OOM killer stepped in
        assert cgroups.peak_bytes(0) <= cgroups.limit_bytes < 4 * 400 * 1024 * 1024
        after = loop.run(pool.execute("hungry", "print('ok')"))
        assert after.logs == "ok\n"
    finally:
        loop.run(pool.close())


def test_an_infinite_loop_is_interrupted_and_the_kernel_kept(run: Callable[..., ExecutionResult]) -> None:
    run("loop", "counter = 7")
    started = time.monotonic()
    result = run("loop", "while True:\n    counter += 1", timeout=1.5)
    assert 1.5 < time.monotonic() - started < 6
    assert result.interrupted and not result.kernel_stopped
    assert result.error is not None and "time limit" in result.error
    after = run("loop", "counter > 7")
    assert after.logs == "True\n" and not after.session_restarted


def test_code_that_ignores_the_interrupt_is_killed_and_the_next_call_says_so(
    run: Callable[..., ExecutionResult], pool: SandboxPool
) -> None:
    run("stubborn", "value = 1")
    uid = LIMITS.uid_base + pool._kernels["stubborn"].slot
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    result = run("stubborn", code, timeout=1.0)
    assert result.interrupted and result.kernel_stopped
    assert result.error is not None and "fresh session" in result.error
    if os.geteuid() == 0:
        wait_for(lambda: not processes_of(uid))
    after = run("stubborn", "print('value' in globals())")
    assert after.session_restarted
    assert after.logs == "False\n"


def test_a_kernel_over_its_session_cpu_is_stopped(loop: Loop) -> None:
    pool = SandboxPool(SandboxLimits(call_seconds=60, session_cpu_seconds=1))
    try:
        started = time.monotonic()
        result = loop.run(pool.execute("cpu", "while True:\n    pass"))
        assert time.monotonic() - started < 45  # one CPU second, however busy the machine
        assert result.kernel_stopped and not result.interrupted
        after = loop.run(pool.execute("cpu", "print('fresh')"))
        assert after.logs == "fresh\n" and after.session_restarted
    finally:
        loop.run(pool.close())


def test_a_kernel_that_forges_replies_is_killed(run: Callable[..., ExecutionResult]) -> None:
    code = (
        "import os\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        '        os.write(int(fd), b\'{"logs": "forged", "images": [{"name": "../x", "data": "AAAA"}]}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
    )
    result = run("forger", code)
    assert result.kernel_stopped
    assert result.error is not None and "not a reply" in result.error
    assert "forged" not in result.logs


@pytest.mark.parametrize(
    "reply",
    [
        b"[]",
        b'{"logs": 3, "images": [], "files": []}',
        b'{"logs": "", "error": null, "images": [{"name": "a.png", "data": "bm90IGEgcG5n"}], "files": []}',
        b'{"logs": "", "error": null, "images": [], "files": [{"path": "../../etc/passwd", "size": 1, "data": null}]}',
        b'{"logs": "", "error": null, "images": [], "files": [{"path": "/etc/passwd", "size": 1, "data": null}]}',
        b'{"logs": "", "error": null, "images": [], "files": [{"path": "a", "size": -1, "data": null}]}',
        b"not json",
    ],
)
def test_malformed_replies_are_refused(reply: bytes) -> None:
    with pytest.raises(_KernelGone):
        _parse_reply(reply)


def test_oversized_logs_are_cut(run: Callable[..., ExecutionResult]) -> None:
    result = run("logs", "print('x' * 10_000_000)")
    assert len(result.logs) < 300_000 and result.logs.endswith("[output truncated]")


# --- the pool -----------------------------------------------------------------------------------


def test_idle_kernels_are_reaped_and_the_next_call_is_told(loop: Loop) -> None:
    pool = SandboxPool(SandboxLimits(idle_seconds=0.3))
    try:
        loop.run(pool.execute("idle", "x = 1"))
        assert pool.sessions == ["idle"]
        reaper = asyncio.run_coroutine_threadsafe(pool.run_reaper(), loop.loop)
        wait_for(lambda: pool.sessions == [])
        reaper.cancel()
        after = loop.run(pool.execute("idle", "print('x' in globals())"))
        assert after.session_restarted and after.logs == "False\n"
    finally:
        loop.run(pool.close())


def test_past_max_kernels_the_least_recently_used_is_stopped(loop: Loop) -> None:
    pool = SandboxPool(SandboxLimits(max_kernels=2, call_seconds=5))
    try:
        for session in ("a", "b"):
            loop.run(pool.execute(session, f"name = '{session}'"))
        loop.run(pool.execute("a", "name"))  # b is now the least recently used
        loop.run(pool.execute("c", "name = 'c'"))
        assert sorted(pool.sessions) == ["a", "c"]
        again = loop.run(pool.execute("b", "print('name' in globals())"))
        assert again.session_restarted and again.logs == "False\n"
        # Both slots busy: a third session is refused, not queued behind running code.
        busy = [
            asyncio.run_coroutine_threadsafe(pool.execute(s, "import time; time.sleep(3)"), loop.loop)
            for s in ("a", "b")
        ]
        wait_for(lambda: all(k.users for k in pool._kernels.values()))
        with pytest.raises(SandboxBusyError):
            loop.run(pool.execute("d", "1"))
        for future in busy:
            assert future.result(10).error is None
    finally:
        loop.run(pool.close())


def test_without_bubblewrap_code_never_runs(
    loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    pool = SandboxPool(SandboxLimits())
    marker = tmp_path / "ran"
    with pytest.raises(SandboxUnavailableError, match="bubblewrap"):
        loop.run(pool.execute("s", f"open({str(marker)!r}, 'w')"))
    with pytest.raises(SandboxUnavailableError):  # and it stays refused
        loop.run(pool.execute("s", "1"))
    assert not marker.exists()


def test_a_sandbox_that_cannot_start_is_refused(loop: Loop) -> None:
    pool = SandboxPool(SandboxLimits(python="/nonexistent/python3"))
    with pytest.raises(SandboxUnavailableError, match="unavailable"):
        loop.run(pool.execute("s", "1"))


def test_a_cancelled_call_does_not_leave_its_reply_for_the_next(loop: Loop, pool: SandboxPool) -> None:
    loop.run(pool.execute("cancelled", "kept = 1"))
    call = asyncio.run_coroutine_threadsafe(
        pool.execute("cancelled", "import time\ntime.sleep(15)\nprint('late reply')"), loop.loop
    )
    wait_for(lambda: pool._kernels["cancelled"].users == 1)
    call.cancel()
    after = loop.run(pool.execute("cancelled", "print('fresh')"))
    assert after.logs == "fresh\n", after
    assert after.session_restarted


def test_placed_files_land_in_mnt_data_whatever_their_names(run: Callable[..., ExecutionResult]) -> None:
    result = run(
        "placed",
        "import os\nprint(sorted(os.listdir('/mnt/data')))",
        files={"../../tmp/escape.txt": b"1", "notes.txt": "中文".encode()},
    )
    assert result.logs == "['escape.txt', 'notes.txt']\n"


def test_a_kernel_that_exits_is_replaced_and_the_next_call_told(run: Callable[..., ExecutionResult]) -> None:
    run("exits", "value = 1")
    gone = run("exits", "import os\nos._exit(3)")
    assert gone.kernel_stopped and gone.error is not None
    after = run("exits", "print('value' in globals(), b'\\xff'.decode('latin-1'))")
    assert after.session_restarted and after.logs == "False ÿ\n"


def test_limits_come_from_the_settings() -> None:
    settings = Settings.from_env(
        {
            "THREADLINE_SANDBOX_MEMORY_MB": "256",
            "THREADLINE_SANDBOX_DISK_MB": "64",
            "THREADLINE_SANDBOX_CALL_SECONDS": "7.5",
            "THREADLINE_SANDBOX_MAX_KERNELS": "3",
        }
    )
    limits = SandboxLimits.from_settings(settings)
    assert (limits.memory_bytes, limits.disk_bytes) == (256 * 2**20, 64 * 2**20)
    assert (limits.call_seconds, limits.max_kernels, limits.idle_seconds) == (7.5, 3, 3600.0)


def test_doctor_says_how_kernels_are_confined() -> None:
    from threadline.cli import _sandbox_status

    status = _sandbox_status(Settings())
    assert "bwrap" in status and "seccomp" in status and "empty environment" in status, status
    assert ("host uids 200000+" if os.geteuid() == 0 else "user namespace") in status
    assert "memory: a cgroup per kernel (1664 MiB, tmpfs included)" in status or (
        "memory: no cgroup allowed here, so 1024 MiB per process (RLIMIT_AS) and for the kernel's "
        "processes together (a watchdog, every 50 ms while code runs)" in status
    )


def test_ending_a_session_stops_its_kernel(
    run: Callable[..., ExecutionResult], loop: Loop, pool: SandboxPool
) -> None:
    run("deleted", "secret = 1")
    kernel = pool._kernels["deleted"]
    loop.run(pool.end("deleted"))
    assert "deleted" not in pool.sessions and kernel.process.returncode is not None
    after = run("deleted", "print('secret' in globals())")
    assert after.logs == "False\n" and not after.session_restarted


def test_an_interpreter_under_tmp_stays_visible_inside() -> None:
    """A checkout under /tmp: the interpreter's bind must come after the sandbox's own /tmp tmpfs,
    or the tmpfs hides it and no kernel can start."""
    limits = SandboxLimits.from_settings(Settings())
    python = "/tmp/checkout/.venv/bin/python"
    checkout = launcher.Launcher(limits, "/usr/bin/bwrap", python, ("/tmp/checkout/.venv",), False, None, b"")
    args = checkout.command(0, "pass", 3)
    tmpfs = args.index("/tmp", args.index("--tmpfs"))
    bind = args.index("--ro-bind-try")
    assert args[bind + 1] == "/tmp/checkout/.venv" and tmpfs < bind
    assert args[args.index("--tmpfs", tmpfs + 1) + 1] == "/dev/shm"
