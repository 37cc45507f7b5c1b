"""The memory of a kernel's processes together, read from ``/proc``, for hosts without a memory cgroup.

``RLIMIT_AS`` bounds each process of a sandbox, not their sum: without a cgroup (the server is not
root, or may not create one) a kernel's code could start many children of almost the limit each.
The pool (``pool.py``) then watches every kernel: every :data:`BUSY_SECONDS` while it runs code
(when its memory can grow) and every :data:`IDLE_SECONDS` otherwise (threads the code left behind),
it adds up the memory of the processes inside the sandbox and kills the kernel past its limit.

The processes are found from bubblewrap's pid by the kernel's ``children`` lists of each task (the
sandbox's pid 1 adopts orphans, so none escapes the tree), and measured by their resident set and
swap (``status``, readable for any process). A forked child shares its parent's pages, so resident sets
add up to more than is used: only past the limit are the processes measured again by their
proportional set size (``smaps_rollup``: shared pages divided between sharers), and a kernel is
killed only if that sum is over as well. A process the server may not read that way (one that made
itself non-dumpable) counts with its resident set.

The sum is sampled, not enforced on every allocation as a cgroup is: between two looks a burst may
go past the limit, by what the code can touch in :data:`BUSY_SECONDS`.
"""

from __future__ import annotations

import contextlib
import os

BUSY_SECONDS = 0.05
IDLE_SECONDS = 0.5


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (those of each of its threads); empty once it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(n) for n in _read(f"/proc/{pid}/task/{task}/children").split()]
    return found


def sandbox_processes(bwrap: int) -> list[int]:
    """The processes of the kernel under bubblewrap's ``bwrap``: the sandbox's pid 1 (a few MiB of
    Threadline's own, outside the limit) is left out, everything under it counts."""
    found: list[int] = []
    todo = [child for init in children(bwrap) for child in children(init)]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children(pid)
    return found


def _fields(path: str, names: tuple[str, ...]) -> int:
    """The sum of the ``names`` (kB) in a ``/proc`` file of ``Name: N kB`` lines."""
    total = 0
    for line in _read(path).splitlines():
        name, _, value = line.partition(":")
        if name in names:
            total += int(value.split()[0]) * 1024
    return total


def resident_bytes(pid: int) -> int:
    """The resident set and what is swapped out (swapping does not make memory free)."""
    try:
        return _fields(f"/proc/{pid}/status", ("VmRSS", "VmSwap"))
    except (OSError, IndexError, ValueError):
        return 0  # gone


def proportional_bytes(pid: int) -> int:
    """PSS (and its share of swap) where the server may read it, else the resident set."""
    try:
        return _fields(f"/proc/{pid}/smaps_rollup", ("Pss", "SwapPss"))
    except (OSError, IndexError, ValueError):
        return resident_bytes(pid)


def over_limit(bwrap: int, limit_bytes: int) -> int | None:
    """The memory the kernel's processes use together, if it is over ``limit_bytes``; else None."""
    pids = sandbox_processes(bwrap)
    if sum(resident_bytes(pid) for pid in pids) <= limit_bytes:
        return None
    used = sum(proportional_bytes(pid) for pid in pids)
    return used if used > limit_bytes else None
