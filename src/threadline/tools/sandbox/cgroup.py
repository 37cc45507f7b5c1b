"""Memory cgroups for kernels, where the host lets the server make them.

``setrlimit`` bounds each process's address space, not a kernel's processes together, nor the tmpfs
pages of its ``/mnt/data``; a cgroup bounds all of it at once. When the server may create a child
of its own memory cgroup (cgroup v1's memory hierarchy, or v2 with the memory controller delegated),
each kernel slot gets one; when it may not, kernels run with the rlimits alone (the README says so).
The limit covers the kernel's memory setting plus its tmpfs mounts, so a full ``/mnt/data`` does not
starve the kernel.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class MemoryCgroups:
    """A directory of per-slot memory cgroups made by this pool, under the server's own cgroup."""

    base: Path
    limit_bytes: int
    v2: bool

    @classmethod
    def create(cls, limit_bytes: int) -> MemoryCgroups | None:
        """A fresh directory under the server's memory cgroup, or None where that is not allowed."""
        found = _own_memory_cgroup()
        if found is None:
            return None
        parent, v2 = found
        base = parent / f"threadline-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if v2:
                # Children of ``parent`` get the memory controller only if it is enabled here.
                (parent / "cgroup.subtree_control").write_text("+memory")
            groups = cls(base=base, limit_bytes=limit_bytes, v2=v2)
            groups.slot(0)  # proves the directory can be made and the limit written
        except OSError:
            with contextlib.suppress(OSError):
                (base / "0").rmdir()
                base.rmdir()
            return None
        return groups

    def slot(self, slot: int) -> Path:
        """The slot's cgroup (made if needed, its limit set); returns its ``cgroup.procs``."""
        if not self.base.is_dir():
            self.base.mkdir()
            if self.v2:
                (self.base / "cgroup.subtree_control").write_text("+memory")
        path = self.base / str(slot)
        path.mkdir(exist_ok=True)
        if self.v2:
            (path / "memory.max").write_text(str(self.limit_bytes))
            with contextlib.suppress(OSError):  # no swap for kernels, where swap accounting exists
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(self.limit_bytes))
        return path / "cgroup.procs"

    def peak_bytes(self, slot: int) -> int:
        """The most memory the slot's cgroup has held (tests and benchmarks read it)."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.base / str(slot) / name).read_text())

    def remove(self) -> None:
        """Remove the slots' cgroups and the directory, once the killed kernels' processes are gone."""
        for _ in range(40):
            for path in self.base.glob("[0-9]*"):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                self.base.rmdir()
            if not self.base.exists():
                return
            time.sleep(0.05)  # processes of a killed sandbox take a moment to leave


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    """The directory of this process's memory cgroup, and whether it is cgroup v2."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = CGROUP_ROOT / "memory" / path.lstrip("/")
            return (directory, False) if directory.is_dir() else None
    for line in lines:
        if line.startswith("0::"):
            directory = CGROUP_ROOT / line[3:].lstrip("/")
            try:
                available = (directory / "cgroup.controllers").read_text().split()
            except OSError:
                return None
            return (directory, True) if "memory" in available else None
    return None
