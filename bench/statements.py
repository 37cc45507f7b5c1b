"""How many transactions and SQL statements one run costs the server, from creating its thread to
seeing it completed, counted inside the server rather than timed.

``python -m bench.statements`` serves ``create_app`` under uvicorn in this process (SQLite on a fresh
file, the scripted model answering at once), has the official SDK do what the runs benchmark's SDK
clients do — ``threads.create`` with one user message, then ``runs.create_and_poll`` — a few times to
warm up, then ``--runs`` times (one after another, or ``--clients`` at once), and prints per run: the transactions
(``Database.read`` and ``Database.write`` calls), the statements sent to the driver (``BEGIN``
included) and both by store operation, and the CPU time the server's threads took per run (read from
``/proc``, so neither the client's nor the model's). Background loops (lease renewal, sweeps) count
too; they are a small share at this pace.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import event

from bench.common import markdown_table
from threadline.app import create_app
from threadline.config import Settings
from threadline.store.database import Database, migrate
from threadline.testing import ScriptedModel

START_TIMEOUT = 20.0


def server_cpu(exclude: set[int]) -> float:
    """Seconds of CPU this process's threads have used, but for ``exclude`` (native thread ids)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) in exclude:
            continue
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total / 1e9


class Counter:
    """Counts a ``Database``'s transactions and statements, by the store operation that ran them."""

    def __init__(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.lock = threading.Lock()
        self.transactions: collections.Counter[str] = collections.Counter()
        self.statements: collections.Counter[str] = collections.Counter()
        self.current = threading.local()
        if db.sync_engine is not None:
            # SQLite: the run path's statements go straight to the driver (store/direct.py), past
            # SQLAlchemy's events; the driver's own trace sees every statement, on the one connection.
            def trace(conn: Any) -> None:
                conn.connection.driver_connection.set_trace_callback(self._traced)

            asyncio.run_coroutine_threadsafe(db.read(trace), loop).result(timeout=30)
        else:
            event.listen(db.engine.sync_engine, "before_cursor_execute", self._statement)  # type: ignore[union-attr]
        for kind in ("read", "write"):
            setattr(db, kind, self._wrap(kind, getattr(db, kind)))

    @staticmethod
    def _operation(fn: Callable[..., Any]) -> str:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return name.split(".<locals>")[0]

    def _wrap(self, kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(fn: Callable[..., Any]) -> Any:
            operation = f"{self._operation(fn)} ({kind})"

            def tagged(conn: Any) -> Any:
                self.current.operation = operation
                try:
                    return fn(conn)
                finally:
                    self.current.operation = None

            with self.lock:
                self.transactions[operation] += 1
            return await method(tagged)

        return counted

    def _traced(self, statement: str) -> None:
        if not statement.startswith(("COMMIT", "ROLLBACK")):  # counted as SQLAlchemy's events did
            self._statement(None, None, statement)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        operation = getattr(self.current, "operation", None) or "(outside a store operation)"
        if statement.startswith("BEGIN"):
            operation = "BEGIN (a write transaction's first statement)"
        with self.lock:
            self.statements[operation] += 1

    def reset(self) -> None:
        with self.lock:
            self.transactions.clear()
            self.statements.clear()


class Server:
    """``create_app`` under uvicorn on a free port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        migrate(settings.effective_database_url)
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._serve, args=(sock,))
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("threadline did not start")
            time.sleep(0.05)

    def _serve(self, sock: socket.socket) -> None:
        with asyncio.Runner() as runner:
            self.loop = runner.get_loop()
            runner.run(self.server.serve(sockets=[sock]))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def count(runs: int, warmup: int, clients: int, database_url: str | None, workdir: Path) -> str:
    from openai import OpenAI

    with ScriptedModel() as model:
        settings = Settings(
            data_dir=workdir,
            database_url=database_url or f"sqlite+aiosqlite:///{workdir / 'threadline.db'}",
            upstream_base_url=model.base_url,
        )
        server = Server(settings)
        try:
            assert server.loop is not None
            counter = Counter(server.app.state.runtime.db, server.loop)
            client = OpenAI(
                base_url=server.url,
                api_key="bench",
                max_retries=0,
                http_client=httpx.Client(limits=httpx.Limits(max_connections=clients)),
            )
            assistant = client.beta.assistants.create(model="scripted", name="bench")
            exclude = {threading.get_native_id(), *(t.native_id or 0 for t in model_threads(model))}
            cpu = 0.0

            def run_once() -> None:
                exclude.add(threading.get_native_id())
                thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello?"}])
                run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
                if run.status != "completed":
                    raise RuntimeError(f"a run ended {run.status}")

            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(lambda _: run_once(), range(warmup * clients)))
                counter.reset()
                cpu = server_cpu(exclude)
                list(pool.map(lambda _: run_once(), range(runs)))
            cpu = server_cpu(exclude) - cpu
            with counter.lock:
                transactions, statements = dict(counter.transactions), dict(counter.statements)
        finally:
            server.stop()
    return report(transactions, statements, runs, cpu)


def model_threads(model: ScriptedModel) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t is getattr(model, "_thread", None)]


def report(transactions: dict[str, int], statements: dict[str, int], runs: int, cpu: float) -> str:
    def per_run(n: int) -> str:
        return f"{n / runs:.2f}".rstrip("0").rstrip(".")

    reads = sum(n for op, n in transactions.items() if op.endswith("(read)"))
    writes = sum(n for op, n in transactions.items() if op.endswith("(write)"))
    rows = [
        [op, per_run(transactions.get(op, 0)), per_run(statements.get(op, 0))]
        for op in sorted(set(transactions) | set(statements), key=lambda o: -statements.get(o, 0))
    ]
    head = ["store operation", "transactions per run", "statements per run"]
    return "\n".join(
        [
            f"per run, over {runs} runs: {per_run(reads + writes)} transactions ({per_run(reads)} reads, "
            f"{per_run(writes)} writes), {per_run(sum(statements.values()))} statements; "
            f"server threads' CPU {cpu / runs * 1000:.2f} ms",
            "",
            markdown_table(head, rows),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="runs per client before counting")
    parser.add_argument("--clients", type=int, default=1, help="SDK clients at once (threads)")
    parser.add_argument("--database-url", help="another database (default: a fresh SQLite file)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants API
    with tempfile.TemporaryDirectory(prefix="threadline-statements-") as tmp:
        print(count(args.runs, args.warmup, max(1, args.clients), args.database_url, Path(tmp)))


if __name__ == "__main__":
    main()
