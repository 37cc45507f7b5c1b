"""How one kernel is started: the bubblewrap command line, the resource limits, the unprivileged user.

Two ways, chosen by who runs the server:

- **as root** (containers, this project's CI): bubblewrap builds the sandbox with every namespace but
  the user one, keeps only the capabilities needed to change user, and ``setpriv`` then becomes a
  dedicated host uid (``sandbox_uid_base`` + the kernel's slot), drops every capability, clears the
  bounding set and sets ``no_new_privs`` before Python starts. Each live kernel has its own uid, so
  the process limit (``RLIMIT_NPROC``, counted per uid) is per kernel, and no kernel can signal or
  read another.
- **as any other user** (``deploy/Dockerfile``'s ``USER 10001``): bubblewrap creates a user namespace
  (``--unshare-user``), maps the server's uid to 65534 inside and drops every capability.
  ``RLIMIT_NPROC`` then counts the server user's own processes as well, so run the server under a
  user of its own.

Both ways are sealed alike. In the second every process of the sandbox, the code's included, runs
as the server's host uid, so what the code must not read has to be absent or made unreadable:

- **No environment.** bubblewrap is started with an empty environment (the helpers it runs are
  resolved to absolute paths by :func:`prepare`, so no ``PATH`` is needed) and the kernel gets
  :data:`ENVIRONMENT` only. A process's ``/proc/N/environ`` is the environment it was *started*
  with, which ``--clearenv`` does not erase: bubblewrap started with the server's environment would
  show the server's secrets to anything that can read its ``/proc`` files.
- **A pid 1 the code cannot read or signal.** As root, bubblewrap's own pid 1 (its reaper) stays
  root while the code runs as another uid: it can neither read that process's ``/proc`` files
  (``environ``, ``mem``, ``fd``) nor signal it. In a user namespace that reaper would run as the
  code's own uid, readable and even writable through ``/proc/1/mem``; so there bubblewrap runs with ``--as-pid-1`` and pid 1 is the kernel program
  itself (``kernel.py``), under the filter, which makes itself non-dumpable (``environ``, ``mem``,
  ``fd`` and ``root`` of a non-dumpable process refuse a process without ``CAP_SYS_PTRACE``), sets
  SIGKILL as its parent-death signal, installs no signal handler (pid 1 of a namespace gets no
  signal from inside that it does not handle) and forks the kernel that runs the code; it reaps
  orphans and exits with the kernel, which ends every process of the sandbox. Not as root too,
  because after ``setpriv`` it would be the code's uid, and a parent-death signal is sent with the
  dying parent's credentials: bubblewrap, root without ``CAP_KILL``, may not signal another uid,
  so the sandbox would outlive it.
- **Every writable mount sized.** ``/`` and ``/dev`` are remounted read-only once built; ``/tmp``,
  ``/dev/shm`` (64 MiB each) and ``/mnt/data`` (``sandbox_disk_mb``) are size-limited tmpfs mounts.

Otherwise the sandbox has no network, a read-only ``/usr`` and Python, and nothing else of the host;
a seccomp filter (``seccomp.py``) refuses new namespaces and other kernel interfaces code never
needs. Memory: each process has an address-space limit; where the server may make a memory cgroup
(``cgroup.py``, as root on most hosts) it bounds the whole sandbox, tmpfs pages included; where it
may not, the pool's watchdog (``watchdog.py``) adds up the memory of the kernel's processes while
they run and kills the kernel past the same limit. :func:`prepare` starts a trivial sandbox once: when
bubblewrap is missing or refuses (no namespaces), the pool refuses to run code.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from threadline.config import Settings
from threadline.errors import SandboxUnavailableError
from threadline.tools.sandbox.cgroup import MemoryCgroups
from threadline.tools.sandbox.seccomp import program as seccomp_program
from threadline.tools.sandbox.watchdog import BUSY_SECONDS

KERNEL_SOURCE = (Path(__file__).with_name("kernel.py")).read_text(encoding="utf-8")
SMALL_TMPFS_BYTES = 64 * 1024 * 1024
"""Size of ``/tmp`` and of ``/dev/shm`` in each sandbox."""
OPEN_FILES = 256
INSIDE_UID = 65534
BWRAP_ENVIRONMENT: dict[str, str] = {}
"""The environment bubblewrap is started with: none of the server's (its helpers have absolute paths)."""
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
    "MPLBACKEND": "Agg",
    # One BLAS thread: threads count against the process limit and a kernel gets a share of a core.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one kernel may use; built from :class:`Settings` by :meth:`from_settings`."""

    memory_bytes: int = 1024 * 1024 * 1024
    disk_bytes: int = 512 * 1024 * 1024
    processes: int = 64
    call_seconds: float = 60.0
    session_cpu_seconds: int = 900
    idle_seconds: float = 3600.0
    max_kernels: int = 16
    python: str = ""
    uid_base: int = 200_000

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            memory_bytes=settings.sandbox_memory_mb * 1024 * 1024,
            disk_bytes=settings.sandbox_disk_mb * 1024 * 1024,
            processes=settings.sandbox_processes,
            call_seconds=settings.sandbox_call_seconds,
            session_cpu_seconds=settings.sandbox_session_cpu_seconds,
            idle_seconds=settings.sandbox_idle_seconds,
            max_kernels=settings.sandbox_max_kernels,
            python=settings.sandbox_python,
            uid_base=settings.sandbox_uid_base,
        )


@dataclass(frozen=True, slots=True)
class Launcher:
    """Builds and starts sandboxes for one interpreter; made by :func:`prepare`, which checks it works."""

    limits: SandboxLimits
    bwrap: str
    python: str
    python_roots: tuple[str, ...]
    as_root: bool
    cgroups: MemoryCgroups | None
    """Per-slot memory cgroups, where the host allows them; else the rlimits alone."""
    seccomp: bytes
    """The seccomp filter (``seccomp.py``), handed to bubblewrap through a file descriptor."""
    prlimit: str = "/usr/bin/prlimit"
    setpriv: str = "/usr/bin/setpriv"
    shell: str = "/bin/sh"
    """Absolute paths of the helpers, found by :func:`prepare`: bubblewrap runs with no ``PATH``."""

    def describe(self) -> str:
        """One line for ``threadline doctor``: how kernels are confined on this machine."""
        user = (
            f"as host uids {self.limits.uid_base}+ (root)"
            if self.as_root
            else f"in a user namespace as uid {INSIDE_UID}"
        )
        mib = self.limits.memory_bytes // 2**20
        if self.cgroups is not None:
            memory = f"memory: a cgroup per kernel ({self.cgroups.limit_bytes // 2**20} MiB, tmpfs included)"
        else:
            memory = (
                f"memory: no cgroup allowed here, so {mib} MiB per process (RLIMIT_AS) and for the"
                f" kernel's processes together (a watchdog, every {BUSY_SECONDS * 1000:.0f} ms while code runs)"
            )
        return (
            f"{self.bwrap}, {user}, empty environment, read-only / and /dev, {memory},"
            f" seccomp for {platform.machine()}, {self.python}"
        )

    def seccomp_fd(self) -> int:
        """A fresh descriptor holding the filter, for one ``command``; the caller closes it after spawning."""
        fd = os.memfd_create("threadline-seccomp")
        os.write(fd, self.seccomp)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def command(self, slot: int, program: str, seccomp_fd: int) -> list[str]:
        """The full command line for a sandbox running ``python -c program`` as the slot's user."""
        args = [
            *self._confinement(slot),
            self.bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        for name, value in ENVIRONMENT.items():
            args += ["--setenv", name, value]
        args += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        # The small tmpfs mounts come before the interpreter's binds, which land on top of them: an
        # interpreter installed under /tmp (a checkout there) must stay visible inside.
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "1777", "--size", str(SMALL_TMPFS_BYTES), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(SMALL_TMPFS_BYTES), "--tmpfs", "/dev/shm",
        ]  # fmt: skip
        made: set[str] = {"/tmp", "/dev", "/dev/shm"}
        # /etc/fonts only: fontconfig (used by matplotlib) reads it; the rest of /etc stays out.
        for root in (*self.python_roots, "/etc/fonts"):
            # Parents are made world-readable: bubblewrap would copy modes such as /root's 0700.
            for parent in reversed(Path(root).parents[:-1]):
                if str(parent) not in made:
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind-try", root, root]
        args += [
            "--perms", "0777", "--size", str(self.limits.disk_bytes), "--tmpfs", "/mnt/data",
            "--chdir", "/mnt/data",
            "--seccomp", str(seccomp_fd),
            # Last, once every mount point exists: the root and /dev tmpfs mounts, unsized, become
            # read-only (the mounts on them, /tmp, /dev/shm, /mnt/data, keep their own sizes).
            "--remount-ro", "/dev",
            "--remount-ro", "/",
        ]  # fmt: skip
        python = [self.python, "-I", "-B", "-c", program]
        if not self.as_root:
            return [
                *args,
                "--as-pid-1",  # no bubblewrap inside: pid 1 is the kernel program (see the module's doc)
                "--unshare-user",
                "--disable-userns",
                "--uid", str(INSIDE_UID),
                "--gid", str(INSIDE_UID),
                "--cap-drop", "ALL",
                "--", *python,
            ]  # fmt: skip
        uid = str(self.limits.uid_base + slot)
        return [
            *args,
            "--cap-drop", "ALL",
            "--cap-add", "CAP_SETUID",
            "--cap-add", "CAP_SETGID",
            "--cap-add", "CAP_SETPCAP",
            "--",
            self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            "--", *python,
        ]  # fmt: skip

    def _confinement(self, slot: int) -> list[str]:
        """What runs before bubblewrap, as commands rather than a ``preexec_fn`` (which is unsafe in a
        threaded server): a shell that moves itself into the slot's cgroup, then ``prlimit``. The
        kernel and its children inherit both."""
        limits = self.limits
        cpu = limits.session_cpu_seconds
        rlimits = [
            self.prlimit,
            f"--as={limits.memory_bytes}",
            f"--nproc={limits.processes}",
            f"--nofile={OPEN_FILES}",
            f"--fsize={limits.disk_bytes}",
            "--core=0",
            # Soft limit: SIGXCPU ends the kernel; the hard limit is the backstop if it is caught.
            f"--cpu={cpu}:{cpu + 5}",
            "--",
        ]
        if self.cgroups is None:
            return rlimits
        procs = self.cgroups.slot(slot)
        # The shell exports a PWD of its own: unset, so bubblewrap starts with no environment at all.
        script = 'echo $$ > "$0" && unset PWD OLDPWD && exec "$@"'
        return [self.shell, "-c", script, str(procs), *rlimits]


def prepare(limits: SandboxLimits) -> Launcher:
    """A launcher for this machine, after starting one sandbox to prove it works; else a refusal."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "code_interpreter is unavailable: bubblewrap (bwrap) is not installed on this server"
        )
    as_root = os.geteuid() == 0
    helpers: dict[str, str] = {}
    for tool in ("prlimit", "setpriv", "sh") if as_root else ("prlimit", "sh"):
        found_tool = shutil.which(tool)
        if found_tool is None:
            raise SandboxUnavailableError(f"code_interpreter is unavailable: {tool} is not installed")
        helpers[tool] = str(Path(found_tool).absolute())
    seccomp = seccomp_program()
    if seccomp is None:
        raise SandboxUnavailableError(
            f"code_interpreter is unavailable: no seccomp filter for this machine ({platform.machine()})"
        )
    python = limits.python or sys.executable
    python = shutil.which(python) or python  # an absolute path: nothing inside searches a PATH for it
    try:
        found = subprocess.run(
            [python, "-I", "-c", "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix]))"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        roots = tuple(str(Path(p).resolve()) for p in json.loads(found.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxUnavailableError(f"code_interpreter is unavailable: cannot run {python}") from exc
    # Drop roots that another root already covers (a venv's base inside /usr, say).
    kept = tuple(
        sorted({r for r in (*roots, "/usr") if not any(_inside(r, o) for o in (*roots, "/usr") if o != r)})
    )
    launcher = Launcher(
        limits=limits,
        bwrap=str(Path(bwrap).absolute()),
        python=python,
        python_roots=tuple(r for r in kept if r != "/usr"),
        as_root=as_root,
        cgroups=MemoryCgroups.create(limits.memory_bytes + limits.disk_bytes + 2 * SMALL_TMPFS_BYTES),
        seccomp=seccomp,
        prlimit=helpers["prlimit"],
        setpriv=helpers.get("setpriv", "/usr/bin/setpriv"),
        shell=helpers["sh"],
    )
    try:
        fd = launcher.seccomp_fd()
        try:
            done = subprocess.run(
                launcher.command(0, "import os; print(os.getuid())", fd),
                capture_output=True,
                timeout=60,
                pass_fds=(fd,),
                env=BWRAP_ENVIRONMENT,
                check=False,
            )
        finally:
            os.close(fd)
        failure = None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()[-500:]
        expected = str(limits.uid_base if as_root else INSIDE_UID)
        if failure is None and done.stdout.decode(errors="replace").strip() != expected:
            failure = "the sandbox ran as the wrong user"
    except (OSError, subprocess.SubprocessError) as exc:
        failure = str(exc)
    if failure is not None:
        if launcher.cgroups is not None:
            launcher.cgroups.remove()
        raise SandboxUnavailableError(
            f"code_interpreter is unavailable: a sandbox could not be created here ({failure or 'no output'})"
        )
    return launcher


def _inside(path: str, other: str) -> bool:
    return path != other and Path(path).is_relative_to(other)
