"""The seccomp filter bubblewrap installs before the kernel starts: system calls code never needs.

An unprivileged process may still create a user namespace and hold every capability inside it,
which opens much of the kernel (mounts, netfilter, ...) to it; it may also reach kernel interfaces
with a long record of exploits (io_uring, bpf, userfaultfd, perf events, keyrings). The filter
refuses those with ``EPERM``: namespaces in ``unshare``/``setns``/``clone`` flags, mounts old and
new, keyrings, bpf, perf events, userfaultfd, io_uring, ptrace and cross-process memory access,
modules, kexec, swap, reboot, accounting, quotas. ``clone3`` answers ``ENOSYS`` (its flags cannot
be inspected), and C libraries then fall back to ``clone``. A system call of another ABI (x32, or a
foreign architecture) kills the process.

The program is classic BPF, built here for x86-64 and arm64 (the numbers come from the kernel's
``unistd`` tables); on other machines :func:`program` returns None and the sandbox is refused.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF instruction classes and fields (linux/bpf_common.h), seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x00 | 0x00 | 0x20
_JEQ_K = 0x05 | 0x10 | 0x00
_JGE_K = 0x05 | 0x30 | 0x00
_JSET_K = 0x05 | 0x40 | 0x00
_RET_K = 0x06 | 0x00
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""
_X32_BIT = 0x40000000

_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
            "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
            "perf_event_open": 298, "userfaultfd": 323, "ptrace": 101, "process_vm_readv": 310,
            "process_vm_writev": 311, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "open_by_handle_at": 304,
            "name_to_handle_at": 303, "open_tree": 428, "move_mount": 429, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "swapon": 167,
            "swapoff": 168, "reboot": 169, "acct": 163, "quotactl": 179, "clone": 56, "clone3": 435,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
            "chroot": 51, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
            "perf_event_open": 241, "userfaultfd": 282, "ptrace": 117, "process_vm_readv": 270,
            "process_vm_writev": 271, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105,
            "finit_module": 273, "delete_module": 106, "open_by_handle_at": 265,
            "name_to_handle_at": 264, "open_tree": 428, "move_mount": 429, "fsopen": 430,
            "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "swapon": 224,
            "swapoff": 225, "reboot": 142, "acct": 89, "quotactl": 60, "clone": 220, "clone3": 435,
        },
    ),
}  # fmt: skip


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine (or ``machine``), as bubblewrap's ``--seccomp`` reads it."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, numbers = arch
    deny = _RET_ERRNO | errno.EPERM
    body = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, audit_arch),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _NR),
    ]
    if audit_arch == 0xC000003E:
        body += [_insn(_JGE_K, 0, 1, _X32_BIT), _insn(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    for name, number in numbers.items():
        if name not in ("clone", "clone3"):  # every other call in the table is refused outright
            body += [_insn(_JEQ_K, 0, 1, number), _insn(_RET_K, 0, 0, deny)]
    body += [
        _insn(_JEQ_K, 0, 1, numbers["clone3"]),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        _insn(_JEQ_K, 0, 3, numbers["clone"]),
        _insn(_LD_W_ABS, 0, 0, _ARG0_LOW),
        _insn(_JSET_K, 0, 1, _NAMESPACE_FLAGS),
        _insn(_RET_K, 0, 0, deny),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(body)
