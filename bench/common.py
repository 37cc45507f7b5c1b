"""What the benchmarks share: the report file, the machine's description, child processes, PostgreSQL.

Each ``bench`` module measures one thing, prints markdown and replaces only its own sections of
``docs/benchmarks.md`` (``write_sections``), so the benchmarks can run one at a time, in any order. The
processes they start (the scripted model, ``threadline serve``, ``threadline worker``) are ``Child``
objects: real processes on 127.0.0.1 whose output goes to a log file and whose CPU time is read from
``/proc``. Benchmarks that also measure on PostgreSQL make a throwaway database with
``postgres_database`` when one answers, and skip it otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
TITLE = "# Benchmarks"
HOST = "127.0.0.1"
BETA = {"OpenAI-Beta": "assistants=v2"}
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_USED = "a fresh database on 127.0.0.1:5432, dropped afterwards"
STOP_TIMEOUT = 10.0
LINE_POLL_SECONDS = 0.05
HEALTH_POLL_SECONDS = 0.1

Section = tuple[str, str]
"""A report section: its heading line (``## ...``, or the title) and its body."""


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


# --- the machine and the date -----------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What a reader needs to weigh the figures: cores, CPU, system, Python, load when measuring began."""

    cores: int | None
    cpu: str
    os: str
    python: str
    load: str

    def __str__(self) -> str:
        return (
            f"{self.cores} cores, {self.cpu}; {self.os}; Python {self.python};"
            f" load average (1 min) at start {self.load}"
        )


def load_average() -> str:
    """The 1-minute load average, or ``n/a`` where the system has none."""
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "n/a"


def machine() -> Machine:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    # The cores this process may use, which is what the benchmark's processes share.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Machine(
        cores=cores,
        cpu=cpu,
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        load=load_average(),
    )


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- the report -------------------------------------------------------------------------------------


def render(sections: Sequence[Section]) -> str:
    """Sections as markdown, the way they stand in the report file."""
    return "\n\n".join(f"{heading}\n\n{body.strip(chr(10))}" for heading, body in sections)


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def write_sections(sections: Sequence[Section], path: Path = DOCS) -> None:
    """Replace each section in ``path``, keeping every other section as it is.

    A section runs from its heading line to the next ``## `` heading; the title's (``# Benchmarks``) is
    the text before the first section. A section not there yet is added at the end, the title at the top.
    """
    lines = path.read_text().splitlines() if path.exists() else [TITLE, ""]
    for heading, body in sections:
        new = [heading, "", *body.strip("\n").splitlines(), ""]
        if heading in lines:
            start = lines.index(heading)
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            lines[start:end] = new
        elif heading == TITLE:
            lines[0:0] = new
        else:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += ["", *new]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    for heading, _ in sections:
        log(f"wrote the section {heading!r} of {_shown(path)}")


def write_section(heading: str, body: str, path: Path = DOCS) -> None:
    """Replace the ``heading`` section of ``path`` (up to the next ``## ``), or append it."""
    write_sections([(heading, body)], path)


def publish(sections: Sequence[Section], *, write: bool, began: float) -> None:
    """Print the sections, write them into the report unless told not to, and say how long it all took
    (``began`` is a ``time.monotonic()`` reading)."""
    print(render(sections))
    if write:
        write_sections(sections)
    log(f"bench took {time.monotonic() - began:.0f} s")


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, nearest rank; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


# --- processes --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), or ``None`` off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without its ``THREADLINE_*`` settings, plus ``extra``: a child gets
    exactly the settings the benchmark gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        logfile: Path,
        *,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.name = name
        self.logfile = logfile
        self.stop_timeout = stop_timeout
        self._log = logfile.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid)

    def text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.text().splitlines()[-lines:])
        return ""

    def size(self) -> int:
        """The log's length in bytes: an offset for ``count_since``."""
        with contextlib.suppress(OSError):
            return self.logfile.stat().st_size
        return 0

    def count_since(self, offset: int, needle: str) -> int:
        """Log lines after byte ``offset`` that contain ``needle``."""
        with self.logfile.open("rb") as f:
            f.seek(offset)
            return sum(1 for line in f.read().decode(errors="replace").splitlines() if needle in line)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def line(self, needle: str, *, prefix: bool = False) -> str | None:
        """The first log line containing ``needle`` (starting with it, with ``prefix``); ``None`` while
        there is none and the process runs."""
        lines = self.text().splitlines()
        found = next((ln for ln in lines if (ln.startswith(needle) if prefix else needle in ln)), None)
        if found is None:
            self.check_alive()
        return found

    def _silent(self, needle: str, timeout: float) -> RuntimeError:
        return RuntimeError(f"{self.name} did not log {needle!r} within {timeout:g}s:\n{self.tail()}")

    def wait_for_line(self, needle: str, timeout: float, *, prefix: bool = False) -> str:
        """``line``, once there is one; fails when the process exits or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while (found := self.line(needle, prefix=prefix)) is None:
            if time.monotonic() >= deadline:
                raise self._silent(needle, timeout)
            time.sleep(LINE_POLL_SECONDS)
        return found

    async def await_line(self, needle: str, timeout: float, *, prefix: bool = False) -> str:
        """``wait_for_line`` that lets the event loop run meanwhile."""
        deadline = time.monotonic() + timeout
        while (found := self.line(needle, prefix=prefix)) is None:
            if time.monotonic() >= deadline:
                raise self._silent(needle, timeout)
            await asyncio.sleep(LINE_POLL_SECONDS)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(self.stop_timeout)
        self._log.close()


def start_scripted_model(workdir: Path, name: str, first_delay: float, *, stop_timeout: float) -> Child:
    """The scripted model (``python -m threadline.testing``) in its own process, on a free port, starting
    every answer after ``first_delay`` seconds; ``scripted_model_url`` waits until it listens."""
    argv = [sys.executable, "-m", "threadline.testing", "--port", "0", "--first-delay", str(first_delay)]
    return Child(
        f"model {name}", argv, child_env({}), workdir / f"model-{name}.log", stop_timeout=stop_timeout
    )


def scripted_model_url(model: Child, timeout: float) -> str:
    """The model's base URL, from the ``ready <url>`` line it prints once it accepts connections."""
    return model.wait_for_line("ready ", timeout, prefix=True).split(" ", 1)[1].strip()


def wait_healthy(server: Child, port: int, timeout: float) -> str:
    """Threadline's base URL (``.../v1``) once ``GET /healthz`` on ``port`` answers 200."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            server.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://{HOST}:{port}/healthz").status_code == 200:
                    return f"http://{HOST}:{port}/v1"
            time.sleep(HEALTH_POLL_SECONDS)
    raise RuntimeError(f"{server.name} did not answer /healthz within {timeout:g}s:\n{server.tail()}")


# --- PostgreSQL -------------------------------------------------------------------------------------


def add_postgres_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)


async def _pg_admin(admin_url: str, statement: str) -> None:
    import asyncpg  # only benchmarks that reach a PostgreSQL need it

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def postgres_skipped(no_postgres: bool, admin_url: str) -> str | None:
    """Why the PostgreSQL measurement is skipped, for the report; ``None`` when it can run."""
    if no_postgres:
        return "skipped (--no-postgres)"
    try:
        await _pg_admin(admin_url, "SELECT 1")
    except Exception:
        return "not reachable on this machine, skipped"
    return None


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh database for this benchmark, dropped on the way out; yields its SQLAlchemy URL."""
    name = f"threadline_bench_{uuid.uuid4().hex[:12]}"
    await _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        await _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
