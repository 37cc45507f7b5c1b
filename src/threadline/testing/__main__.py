"""``python -m threadline.testing``: serve a scripted model in its own process.

Benchmarks and the scale-out tests run the model apart from the server they measure; it prints
``ready <base_url>`` once it accepts connections and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from threadline.testing.script import Reply, echo_responder
from threadline.testing.server import ScriptedModel


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a scripted model until SIGINT/SIGTERM (for benchmarks that need it in its own process)."""
    parser = argparse.ArgumentParser(prog="python -m threadline.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each streamed chunk")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--text", default=None, help="always answer this text instead of echoing")
    parser.add_argument("--chunks", type=int, default=None, help="split replies into this many chunks")
    parser.add_argument("--model", action="append", dest="models", help="model id to list (repeatable)")
    args = parser.parse_args(argv)

    fixed: str | None = args.text
    delay: float = args.delay
    first_delay: float = args.first_delay
    chunks: int | None = args.chunks

    def responder(body: dict[str, Any]) -> Reply:
        reply = Reply(text=fixed) if fixed is not None else echo_responder(body)
        reply.delay, reply.first_delay, reply.chunks = delay, first_delay, chunks
        return reply

    logging.basicConfig(level=logging.WARNING)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ScriptedModel(port=args.port, responder=responder, model_ids=args.models or ("scripted",)) as model:
        print(f"ready {model.base_url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
