"""The ``threadline`` command: ``serve``, ``worker``, ``migrate``, ``assistants apply`` and ``doctor``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from threadline.config import Settings

if TYPE_CHECKING:
    from threadline.providers.llamacpp import LlamaCppProvider

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


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_open_mode(settings: Settings) -> None:
    """Refuse to serve without keys anywhere but loopback: anyone who can reach it could read everything."""
    if settings.host in LOOPBACK or settings.api_key:
        return

    async def any_keys() -> bool:
        from threadline.store import Database, sql_stores

        db = Database(settings.effective_database_url, pool_size=1)
        try:
            return await sql_stores(db).projects.any_api_keys()
        finally:
            await db.dispose()

    if not asyncio.run(any_keys()):
        sys.exit(
            f"threadline: refusing to serve on {settings.host} without API keys: anyone who can reach it"
            " could read every thread. Create a key (`threadline keys create --project proj_default`),"
            " set THREADLINE_API_KEY, or listen on 127.0.0.1."
        )


def cmd_serve(settings: Settings, with_worker: bool) -> None:
    import uvicorn

    from threadline.app import create_app

    _check_declarations(settings)
    cmd_migrate(settings)
    _check_open_mode(settings)
    app = create_app(settings, run_worker=with_worker)
    log.info("Threadline listening on http://%s:%d/v1", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=15,
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=connection_limit(settings),
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers: h11's default, stated
    )


def connection_limit(settings: Settings) -> int:
    """``max_connections``, or three quarters of the open-files limit: past it uvicorn answers 503
    rather than let idle connections take the descriptors uploads and the database need."""
    if settings.max_connections > 0:
        return settings.max_connections
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft * 3 // 4) if soft != resource.RLIM_INFINITY else 100_000


def cmd_worker(settings: Settings) -> None:
    _check_declarations(settings)
    cmd_migrate(settings)
    asyncio.run(_worker(settings))


async def _worker(settings: Settings) -> None:
    from threadline import declarations
    from threadline.runtime import Runtime

    runtime = await Runtime.open(settings, start_models=True)
    try:
        if settings.assistants_file:
            await declarations.apply(runtime.services.assistants, settings.assistants_file)
        worker = runtime.worker()
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
            applied = await declarations.apply_declared(runtime.services.assistants, declared)
        finally:
            await runtime.aclose()
        for assistant in applied:
            print(f"{assistant.id}\t{assistant.model}\t{assistant.name or ''}")

    cmd_migrate(settings)
    asyncio.run(run())


def cmd_projects(settings: Settings, args: argparse.Namespace) -> None:
    """``projects create|list`` and ``keys create|list|revoke``: project and key management."""
    from threadline.domain.projects import Projects
    from threadline.store import Database, sql_stores

    async def run() -> None:
        db = Database(settings.effective_database_url, pool_size=1)
        projects = Projects(sql_stores(db).projects, legacy_key=settings.api_key)
        try:
            if args.command == "projects" and args.verb == "create":
                project = await projects.create_project(args.name, args.thread_ttl_days)
                print(f"{project.id}\t{project.name}")
            elif args.command == "projects":
                for project in await projects.list_projects():
                    ttl = (
                        ""
                        if project.thread_ttl_days is None
                        else f"\tthread TTL {project.thread_ttl_days:g} days"
                    )
                    print(f"{project.id}\t{project.name}{ttl}")
            elif args.verb == "create":
                key, secret = await projects.create_key(args.project, args.name)
                print(f"{key.id}\t{secret}")
                print("Keep the key now: it is not shown again.", file=sys.stderr)
            elif args.verb == "list":
                for key in await projects.list_keys(args.project):
                    state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.prefix}…\t{key.name}\t{state}")
            else:
                await projects.revoke_key(args.key_id)
                print(f"{args.key_id}\trevoked")
        finally:
            await db.dispose()

    cmd_migrate(settings)
    asyncio.run(run())


DOCTOR_TOKENS = 64


def cmd_doctor(settings: Settings) -> int:
    """What this machine and build can serve: the CPU, the llama.cpp build, each model's speed."""
    import os
    import platform

    from threadline.providers.host_process import cpu_flags
    from threadline.providers.llamacpp import LlamaCppProvider
    from threadline.providers.routing import build_router

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; CPU features: {cpu_flags() or 'unknown'}")
    router = build_router(settings)
    failed = 0

    async def examine() -> None:
        nonlocal failed
        try:
            for model in router.local_models():
                assert isinstance(model, LlamaCppProvider)
                print(f"model {model.model_path} ({model.n_threads} threads)")
                try:
                    await model.start()
                    rate = await _tokens_per_second(model)
                except Exception as exc:
                    failed += 1
                    print(f"  cannot serve: {exc}")
                    continue
                info = model.host.info
                print(f"  llama-cpp-python {info.get('llama_cpp_python')}; {info.get('system_info')}")
                print(f"  context {model.host.n_ctx} tokens; {rate:.1f} tokens/s ({DOCTOR_TOKENS} tokens)")
        finally:
            await router.aclose()

    asyncio.run(examine())
    local = {id(model) for model in router.local_models()}
    for provider in router.providers():
        if id(provider) in local:
            continue
        print(f"upstream {getattr(provider, 'base_url', provider)}")
    print(f"code_interpreter sandbox: {_sandbox_status(settings)}")
    return 1 if failed else 0


def _sandbox_status(settings: Settings) -> str:
    from threadline.errors import SandboxUnavailableError
    from threadline.tools.sandbox.launcher import SandboxLimits, prepare

    try:
        launcher = prepare(SandboxLimits.from_settings(settings))
    except SandboxUnavailableError as exc:
        return f"refused: {exc.message}"
    if launcher.cgroups is not None:
        launcher.cgroups.remove()
    return launcher.describe()


async def _tokens_per_second(provider: LlamaCppProvider) -> float:
    import time

    from threadline.domain.ports.models import ModelRequest, TextDelta, Usage

    request = ModelRequest(
        model="doctor",
        messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],
        temperature=0.0,
        max_tokens=DOCTOR_TOKENS,
    )
    first = last = 0.0
    tokens = 0
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            last = time.perf_counter()
            first = first or last
        elif isinstance(event, Usage):
            tokens = event.completion_tokens  # fast tokens come several to a piece
    # The first piece is one token (the host sends it alone); the rest came between it and the last.
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


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
    sub.add_parser("doctor", help="check the CPU, the llama.cpp build and every embedded model")
    projects = sub.add_parser("projects", help="manage projects")
    project_verbs = projects.add_subparsers(dest="verb", required=True)
    create_project = project_verbs.add_parser("create", help="create a project")
    create_project.add_argument("name")
    create_project.add_argument(
        "--thread-ttl-days", type=float, help="delete threads idle this long (0: never)"
    )
    project_verbs.add_parser("list", help="list projects")
    keys = sub.add_parser("keys", help="manage a project's API keys")
    key_verbs = keys.add_subparsers(dest="verb", required=True)
    create_key = key_verbs.add_parser("create", help="create a key (shown once)")
    create_key.add_argument("--project", required=True)
    create_key.add_argument("--name", default="")
    list_keys = key_verbs.add_parser("list", help="list a project's keys")
    list_keys.add_argument("--project", required=True)
    revoke_key = key_verbs.add_parser("revoke", help="revoke a key at once")
    revoke_key.add_argument("key_id")
    for command in (projects, keys):
        command.add_argument("--database-url")
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
        elif args.command == "doctor":
            sys.exit(cmd_doctor(settings))
        elif args.command in ("projects", "keys"):
            cmd_projects(settings, args)
    except Exception as exc:  # a clear one-line message instead of a traceback for config errors
        from threadline.declarations import DeclarationError
        from threadline.errors import ThreadlineError

        if isinstance(exc, DeclarationError | ThreadlineError):
            sys.exit(f"threadline: {exc}")
        raise


if __name__ == "__main__":
    main()
