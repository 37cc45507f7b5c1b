"""code_interpreter's sandbox: cold start, warm calls, memory per idle kernel, kernels per worker.

``python -m bench.sandbox`` drives a real :class:`SandboxPool` (bubblewrap, the kernel, the limits of
the default settings) in this process:

- cold start: a new session's first call (``1``), sandbox and interpreter started, N times;
- warm call: ``1`` again on a live kernel, N times; and the first ``import numpy, pandas,
  matplotlib.pyplot`` in a session, a first bar chart (PNG returned) and a second one;
- memory per idle kernel: the proportional set size (PSS, shared pages split between sharers, read
  from ``/proc/<pid>/smaps_rollup``) of every process of the sandbox (bubblewrap's two and the
  kernel), for K bare kernels and for K kernels that have imported pandas and matplotlib and drawn a
  chart; and the CPU those K idle kernels use over a few seconds;
- throughput: S sessions each running a small numpy job at once, calls per second on this machine.

It prints markdown and replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import log, machine, markdown_table, pct, publish, today
from threadline.tools.sandbox import SandboxLimits, SandboxPool

HEADING = "## Code interpreter: the sandbox"
CHART = (
    "import matplotlib.pyplot as plt\nplt.bar(['一月', '二月', '三月'], [3, 5, 2])\nplt.title('每月销售额')\n"
)
HEAVY = "import numpy, pandas, matplotlib.pyplot"
JOB = "import numpy as np\nfloat(np.linalg.svd(np.random.rand(200, 200))[1][0])"


def sandbox_pids(root: int) -> list[int]:
    """``root`` (bubblewrap outside) and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def pool_pss_mib(pool: SandboxPool) -> list[float]:
    """PSS of each live kernel's sandbox, in MiB."""
    return [
        sum(pss_kib(pid) for pid in sandbox_pids(kernel.process.pid)) / 1024
        for kernel in pool._kernels.values()
    ]


async def timed(pool: SandboxPool, session: str, code: str) -> float:
    started = time.perf_counter()
    result = await pool.execute(session, code)
    if result.error:
        raise RuntimeError(result.error)
    return (time.perf_counter() - started) * 1000


async def measure(reps: int, kernels: int, sessions: int) -> dict[str, object]:
    figures: dict[str, object] = {}
    pool = SandboxPool(SandboxLimits(max_kernels=max(kernels, sessions)))
    launcher = await pool.launcher()  # the one-off probe is not part of a cold start
    figures["cgroup"] = launcher.cgroups is not None
    try:
        log("cold starts")
        cold = []
        for n in range(reps):
            cold.append(await timed(pool, f"cold-{n}", "1"))
            await pool.close()
        figures["cold"] = cold
        log("warm calls")
        await timed(pool, "warm", "1")
        figures["warm"] = [await timed(pool, "warm", "1") for _ in range(reps * 10)]
        figures["import"] = [await timed(pool, "warm", HEAVY)]
        figures["chart1"] = [await timed(pool, "warm", CHART)]
        figures["chart2"] = [await timed(pool, "warm", CHART) for _ in range(reps)]
        await pool.close()

        log(f"{kernels} bare kernels")
        for n in range(kernels):
            await timed(pool, f"bare-{n}", "1")
        figures["bare"] = pool_pss_mib(pool)
        await pool.close()
        log(f"{kernels} kernels with pandas and matplotlib")
        for n in range(kernels):
            await timed(pool, f"heavy-{n}", HEAVY + "\n" + CHART)
        figures["heavy"] = pool_pss_mib(pool)
        pids = [pid for k in pool._kernels.values() for pid in sandbox_pids(k.process.pid)]
        before = sum(cpu_ticks(pid) for pid in pids)
        await asyncio.sleep(5)
        figures["idle_cpu_ticks"] = sum(cpu_ticks(pid) for pid in pids) - before
        await pool.close()

        log(f"{sessions} sessions at once")
        await asyncio.gather(*(timed(pool, f"job-{n}", JOB) for n in range(sessions)))
        started = time.perf_counter()
        rounds = max(5, reps)
        for _ in range(rounds):
            await asyncio.gather(*(timed(pool, f"job-{n}", JOB) for n in range(sessions)))
        figures["throughput"] = sessions * rounds / (time.perf_counter() - started)
    finally:
        await pool.close()
    return figures


def report(figures: dict[str, object], reps: int, kernels: int, sessions: int) -> str:
    def ms(name: str) -> list[str]:
        values = figures[name]
        assert isinstance(values, list)
        return [f"{pct(values, 0.5):.1f}", f"{pct(values, 0.95):.1f}", str(len(values))]

    bare, heavy = figures["bare"], figures["heavy"]
    assert isinstance(bare, list) and isinstance(heavy, list)
    bare_mib, heavy_mib = sum(bare) / len(bare), sum(heavy) / len(heavy)
    per_gib_heavy = int(1024 // heavy_mib)
    per_gib_bare = int(1024 // bare_mib)
    ticks = figures["idle_cpu_ticks"]
    return "\n".join(
        [
            f"Measured {today()} on {machine()}; default limits (1 GiB address space, 512 MiB `/mnt/data`);"
            f" a memory cgroup per kernel: {'yes' if figures['cgroup'] else 'no (not allowed here)'}.",
            "",
            markdown_table(
                ["what", "median ms", "p95 ms", "n"],
                [
                    ["cold start: a new session's first call (`1`)", *ms("cold")],
                    ["warm call (`1`)", *ms("warm")],
                    ["first `import numpy, pandas, matplotlib.pyplot` in a session", *ms("import")],
                    ["first bar chart with Chinese labels (PNG back)", *ms("chart1")],
                    ["later bar charts", *ms("chart2")],
                ],
            ),
            "",
            markdown_table(
                ["idle kernel", "PSS per kernel (MiB)", "kernels per GiB"],
                [
                    [f"bare ({len(bare)} at once)", f"{bare_mib:.1f}", str(per_gib_bare)],
                    [
                        f"after pandas, matplotlib and a chart ({len(heavy)} at once)",
                        f"{heavy_mib:.1f}",
                        str(per_gib_heavy),
                    ],
                ],
            ),
            "",
            f"{len(heavy)} idle kernels used {ticks} clock ticks of CPU in 5 s (an idle kernel waits on its",
            "pipe). Memory, not CPU, bounds the kernels a worker keeps: a 2-core worker with 4 GiB for",
            f"kernels holds about {4 * per_gib_heavy} that have loaded pandas and matplotlib"
            f" ({4 * per_gib_bare} bare), but each may grow to its limit, so `THREADLINE_SANDBOX_MAX_KERNELS`",
            "(default 16) times `THREADLINE_SANDBOX_MEMORY_MB` plus the tmpfs sizes is the worst case to plan",
            "for. CPU bounds running code: "
            f"{sessions} sessions each running a 200×200 SVD at once completed"
            f" **{figures['throughput']:.0f} calls/s** on this machine.",
            "",
            f"Reproduce: `python -m bench.sandbox` (reps {reps}, {kernels} kernels, {sessions} sessions;"
            " well under a minute).",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--kernels", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    figures = asyncio.run(measure(args.reps, args.kernels, args.sessions))
    body = report(figures, args.reps, args.kernels, args.sessions)
    publish([(HEADING, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
