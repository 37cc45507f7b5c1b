"""Threadline's server with uvicorn options that ``threadline serve`` does not expose, for benchmarks.

``python -m bench.serve --port P --loop uvloop --http httptools`` serves exactly what ``threadline serve``
serves (same settings from ``THREADLINE_*``, same migrations, same app, API and worker in one process), so
a benchmark can compare event loops and HTTP parsers side by side with the stock command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from threadline.app import create_app
from threadline.config import Settings
from threadline.store.database import migrate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto", help="uvicorn event loop: auto, asyncio or uvloop")
    parser.add_argument("--http", default="auto", help="uvicorn HTTP/1.1 parser: auto, h11 or httptools")
    args = parser.parse_args(argv)

    settings = Settings.from_env(port=args.port)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    migrate(settings.effective_database_url)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        loop=args.loop,
        http=args.http,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
