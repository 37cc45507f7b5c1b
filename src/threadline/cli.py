"""The ``threadline`` command: ``serve``, ``worker``, ``migrate`` and ``assistants apply``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from threadline.config import Settings

log = logging.getLogger("threadline")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        database_url=getattr(args, "database_url", None),
    )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Alembic narrates every start-up and httpx every model call at INFO; only their warnings
        # matter to an operator.
        for noisy in ("alembic", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_migrate(settings: Settings) -> None:
    from threadline.store.database import migrate

    migrate(settings.effective_database_url)
    log.info("database is up to date: %s", _redacted(settings.effective_database_url))


def _check_declarations(settings: Settings) -> None:
    """Fail before touching the database or a port when the assistants file is broken."""
    if settings.assistants_file:
        from threadline import declarations

        declarations.load(settings.assistants_file)


def cmd_serve(settings: Settings, with_worker: bool) -> None:
    import uvicorn

    from threadline.app import create_app

    _check_declarations(settings)
    cmd_migrate(settings)
    app = create_app(settings, run_worker=with_worker)
    log.info("Threadline listening on http://%s:%d/v1", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=15,
    )


def cmd_worker(settings: Settings) -> None:
    _check_declarations(settings)
    cmd_migrate(settings)
    asyncio.run(_worker(settings))


async def _worker(settings: Settings) -> None:
    from threadline import declarations
    from threadline.runtime import Runtime
    from threadline.workers.worker import Worker

    runtime = await Runtime.open(settings)
    try:
        if settings.assistants_file:
            await declarations.apply(runtime.services, settings.assistants_file)
        worker = Worker(settings, runtime.store, runtime.bus, runtime.router, runtime.tools)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker.start()
        await stop.wait()
        log.info("worker shutting down")
        await worker.stop(grace=settings.shutdown_grace_seconds)
    finally:
        await runtime.aclose()


def cmd_apply(settings: Settings, path: str) -> None:
    from threadline import declarations

    # Read and check the whole file first: a broken one changes nothing, not even the schema.
    declared = declarations.load(path)

    async def run() -> None:
        from threadline.runtime import Runtime

        runtime = await Runtime.open(settings)
        try:
            applied = await declarations.apply_declared(runtime.services, declared)
        finally:
            await runtime.aclose()
        for assistant in applied:
            print(f"{assistant.id}\t{assistant.model}\t{assistant.name or ''}")

    cmd_migrate(settings)
    asyncio.run(run())


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="threadline", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API (and, unless --no-worker, a worker)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-worker", action="store_true", help="serve the API only")
    for command in (
        serve,
        sub.add_parser("worker", help="run a worker only"),
        sub.add_parser("migrate", help="create or upgrade the database schema"),
    ):
        command.add_argument("--database-url", help="any SQLAlchemy async URL (THREADLINE_DATABASE_URL)")
    assistants = sub.add_parser("assistants", help="manage assistant declarations")
    verbs = assistants.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="create or update the assistants a YAML file declares")
    apply.add_argument("file")
    apply.add_argument("--database-url")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        sys.exit(f"threadline: {exc}")
    _logging(settings.log_level)
    try:
        if args.command == "serve":
            cmd_serve(settings, with_worker=not args.no_worker)
        elif args.command == "worker":
            cmd_worker(settings)
        elif args.command == "migrate":
            cmd_migrate(settings)
        elif args.command == "assistants":
            cmd_apply(settings, args.file)
    except Exception as exc:  # a clear one-line message instead of a traceback for config errors
        from threadline.declarations import DeclarationError

        if isinstance(exc, DeclarationError):
            sys.exit(f"threadline: {exc}")
        raise


if __name__ == "__main__":
    main()
