"""``threadline serve`` with a CPU-time profile of its event loop's thread, for ``bench.profile --loop``.

cProfile with ``time.thread_time`` as its clock on the main thread (the one uvicorn's loop runs on):
what that thread spends the CPU on, not the wall-clock samples py-spy takes, which collect at the
points where a busy machine deschedules a thread that has just woken another. The profile is switched
on by SIGUSR1 and written to ``BENCH_LOOP_PROFILE`` by SIGUSR2 (then ``<file>.done`` appears), so
the start-up and the warm-up stay out of it. Deterministic profiling makes each Python call several
times dearer: read the shares and the call counts, not the milliseconds.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

PROFILE = cProfile.Profile(time.thread_time)
OUTPUT = Path(os.environ["BENCH_LOOP_PROFILE"])  # set by bench.profile


def _start(_signum: int, _frame: FrameType | None) -> None:
    PROFILE.enable()


def _stop(_signum: int, _frame: FrameType | None) -> None:
    PROFILE.disable()
    PROFILE.dump_stats(OUTPUT)
    OUTPUT.with_suffix(".done").touch()


def main() -> None:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    from threadline.cli import main as cli

    sys.argv = ["threadline", "serve", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
