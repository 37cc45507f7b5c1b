"""Scale-out with real processes on PostgreSQL: API processes, worker processes and model processes.

Every piece runs as its own process on a fresh database, as in a deployment: runs created on one API
process are executed by worker processes and followed (held polls, event streams) through another, so
the LISTEN/NOTIFY bus, claiming, leases, takeover after SIGKILL, hand-back on SIGTERM and the thread
lock are all exercised across process boundaries. What only the database knows (which worker holds a
run, half-written turns) is read from it directly. Needs PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import Run, Text, TextDelta

from tests.integration.test_thread_lock import check_one_winner, race, racer_text
from tests.support import (
    TEXT_RUN,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    wait_for,
)
from threadline.config import Settings
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call
from threadline.tools.code_interpreter import RESTARTED

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")

LEASE = 2.0
"""Worker lease in seconds: short, so a killed worker's runs are taken over quickly."""
SLOW_ANSWER = 2.0
"""How long the slow model takes to answer: five chunks, 0.4 s apart (see the ``cluster`` fixture)."""

HOLD = 20.0
"""How long api-2 holds the SDK's polls when nothing happens."""
SETTINGS = {f.name for f in fields(Settings)}


# --- the processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    """Models and API processes: their ``/v1`` base URL once ready."""
    worker_id: str = ""
    """Workers: the id they claim runs under, once ready."""
    health: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """Starts, watches and stops the processes of one deployment, all on one database."""

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self.database_url = database_url
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.children: list[Child] = []
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None

    # starting

    def env(self, **settings: object) -> dict[str, str]:
        unknown = set(settings) - SETTINGS
        assert not unknown, f"not settings: {unknown}"
        # Nothing from the caller's environment may point a child at another database or model.
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
        env.update(
            PYTHONUNBUFFERED="1",
            THREADLINE_DATABASE_URL=self.database_url,
            THREADLINE_DATA_DIR=str(self.directory / "data"),
            THREADLINE_LOG_LEVEL="info",
        )
        env.update({f"THREADLINE_{name.upper()}": str(value) for name, value in settings.items()})
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, env=env or self.env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def migrate(self) -> None:
        child = self.spawn("migrate", [sys.executable, "-m", "threadline.cli", "migrate"])
        assert child.process.wait(timeout=60) == 0, f"threadline migrate failed:\n{child.text()}"

    def model(self, name: str, *flags: str) -> Child:
        port = _free_port()
        child = self.spawn(name, [sys.executable, "-m", "threadline.testing", "--port", str(port), *flags])
        # Known before it is ready, so the processes that talk to it can start alongside.
        child.url = f"http://127.0.0.1:{port}/v1"
        return child

    def api(self, name: str, **settings: object) -> Child:
        port = _free_port()
        args = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
        child = self.spawn(name, [sys.executable, "-m", "threadline.cli", *args], self.env(**settings))
        child.url = f"http://127.0.0.1:{port}/v1"
        child.health = f"http://127.0.0.1:{port}/healthz"
        return child

    def worker(self, name: str, **settings: object) -> Child:
        defaults: dict[str, object] = {
            "worker_lease_seconds": LEASE,
            "sweep_interval_seconds": 0.5,
            "worker_poll_seconds": 0.25,
        }
        env = self.env(**{**defaults, **settings})
        return self.spawn(name, [sys.executable, "-m", "threadline.cli", "worker"], env)

    def ready(self, *children: Child, timeout: float = 45) -> None:
        """Wait until each child can do its job: model listening, API healthy, worker claiming."""
        for child in children:

            def check(child: Child = child) -> bool:
                if not child.alive():
                    raise AssertionError(f"{child.name} exited with {child.process.returncode}")
                if child.health:
                    with contextlib.suppress(httpx.HTTPError):
                        return httpx.get(child.health, timeout=2).status_code == 200
                    return False
                if re.search(r"^ready http", child.text(), re.M):
                    return True
                if found := re.search(r"worker (\S+) started", child.text()):
                    child.worker_id = found[1]
                    return True
                return False

            wait_for(check, timeout, interval=0.05, what=f"{child.name} to be ready")

    def workers(self, count: int, **settings: object) -> list[Child]:
        started = [self.worker(f"worker-{len(self.children)}-{n}", **settings) for n in range(count)]
        self.ready(*started)
        return started

    # stopping

    @staticmethod
    def stop(child: Child) -> None:
        if child.alive():
            child.process.terminate()
        try:
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

    def stop_workers(self) -> None:
        workers = [c for c in self.children if c.worker_id or c.name.startswith("worker")]
        for child in workers:
            if child.alive():
                child.process.terminate()
        for child in workers:
            self.stop(child)
            self.children.remove(child)

    def shutdown(self) -> None:
        for child in self.children:
            if child.alive():
                child.process.terminate()
        for child in self.children:
            self.stop(child)
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    # reporting

    def logs(self) -> str:
        parts = []
        for child in self.children:
            state = "running" if child.alive() else f"exit {child.process.returncode}"
            tail = "\n".join(child.text().splitlines()[-120:])
            parts.append(f"----- {child.name} (pid {child.process.pid}, {state}) -----\n{tail}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """On failure, print every process's log, so the failure report shows what they did."""
        try:
            yield
        except BaseException:
            print(self.logs())
            raise

    def sdk(self, name: str) -> openai.OpenAI:
        child = next(c for c in self.children if c.name == name)
        return openai.OpenAI(base_url=child.url, api_key="test-key", max_retries=0, timeout=60)

    def find(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    # the database

    def rows(self, sql: str, *args: Any) -> list[Any]:
        # One connection for the whole module: polling must not add connection churn to the server.
        async def fetch() -> list[Any]:
            import asyncpg

            if self._conn is None:
                self._conn = await asyncpg.connect(self.dsn, timeout=10)
            return list(await self._conn.fetch(sql, *args))

        return self._loop.run_until_complete(fetch())

    def holders(self, run_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Each run's status and the worker holding it."""
        found = self.rows("SELECT id, status, worker_id FROM runs WHERE id = ANY($1::text[])", run_ids)
        return {r["id"]: (r["status"], r["worker_id"]) for r in found}

    def half_written(self, run_ids: list[str]) -> dict[str, str]:
        """Runs whose turn is mid-answer (a message being written): run id -> message id."""
        found = self.rows(
            "SELECT run_id, step_details->'message_creation'->>'message_id' AS message_id FROM run_steps"
            " WHERE run_id = ANY($1::text[]) AND type = 'message_creation' AND status = 'in_progress'",
            run_ids,
        )
        return {r["run_id"]: r["message_id"] for r in found}

    def settle(self) -> None:
        """End whatever a failed test left active, so it cannot leak into the next test."""
        self.rows(
            "UPDATE runs SET status = 'cancelled', worker_id = NULL, lease_expires_at = NULL"
            " WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"
        )
        self.rows("UPDATE threads SET active_run_id = NULL WHERE active_run_id IS NOT NULL")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not postgres_available():
        reason = "PostgreSQL is not reachable on 127.0.0.1:5432; the scale-out tests run real processes on it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    url = create_postgres_database()
    cluster = Cluster(tmp_path_factory.mktemp("scale-out"), url)
    try:
        with cluster.reporting():
            fast = cluster.model("model-fast", "--first-delay", "0.4")
            slow = cluster.model("model-slow", "--delay", str(SLOW_ANSWER / 5), "--chunks", "5")
            cluster.migrate()
            # api-2 holds polls far longer than any run takes: only a notification can end them early.
            api1 = cluster.api("api-1", upstream_base_url=fast.url)
            api2 = cluster.api("api-2", upstream_base_url=fast.url, poll_hold_seconds=HOLD)
            cluster.ready(fast, slow, api1, api2)
        yield cluster
    finally:
        cluster.shutdown()
        drop_postgres_database(url)


@pytest.fixture
def scale(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with the workers a test starts stopped (and its leftovers ended) afterwards."""
    yield cluster
    cluster.stop_workers()
    cluster.settle()


# --- helpers -----------------------------------------------------------------------------------------


class Recorder(AssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.deltas: list[str] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)

    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.deltas.append(delta.value or "")


def in_background(call: Callable[[], T]) -> Future[T]:
    """``call()`` in a daemon thread: one that never returns (a stream that never ends) cannot keep
    the test run from finishing; the cluster's shutdown ends it."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def collapse(names: list[str]) -> list[str]:
    """``names`` with each run of identical delta events kept once."""
    return [n for i, n in enumerate(names) if not (n.endswith(".delta") and i and names[i - 1] == n)]


def start_runs(sdk: openai.OpenAI, assistant_id: str, count: int, label: str) -> dict[str, tuple[str, str]]:
    """``count`` runs, each on its own thread with its own question: run id -> (thread id, question)."""
    runs: dict[str, tuple[str, str]] = {}
    for n in range(count):
        question = f"{label} question {n}"
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": question}])
        run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
        runs[run.id] = (thread.id, question)
    return runs


def answered_once(cluster: Cluster, runs: dict[str, tuple[str, str]]) -> None:
    """Every run completed with exactly one turn: one step, one assistant message with the whole answer
    to its own question, nothing half-written left behind and its thread unlocked."""
    ids = list(runs)
    assert {r: s for r, (s, _w) in cluster.holders(ids).items()} == dict.fromkeys(ids, "completed")
    steps = cluster.rows("SELECT run_id, type, status FROM run_steps WHERE run_id = ANY($1::text[])", ids)
    assert Counter(s["run_id"] for s in steps) == Counter(ids), "a run has more or fewer steps than one"
    assert {(s["type"], s["status"]) for s in steps} == {("message_creation", "completed")}
    threads = [thread for thread, _q in runs.values()]
    messages = cluster.rows(
        "SELECT thread_id, run_id, role, status, content::text AS content FROM messages"
        " WHERE thread_id = ANY($1::text[]) ORDER BY seq",
        threads,
    )
    by_thread: dict[str, list[Any]] = {}
    for message in messages:
        by_thread.setdefault(message["thread_id"], []).append(message)
    for run_id, (thread_id, question) in runs.items():
        found = by_thread.get(thread_id, [])
        assert [(m["role"], m["status"]) for m in found] == [
            ("user", "completed"),
            ("assistant", "completed"),
        ]
        assert found[1]["run_id"] == run_id
        assert json.loads(found[1]["content"])[0]["text"]["value"] == f"echo: {question}"
    locked = cluster.rows(
        "SELECT id FROM threads WHERE id = ANY($1::text[]) AND active_run_id IS NOT NULL", threads
    )
    assert locked == []


def logged(child: Child, text: str) -> bool:
    return text in child.text()


def all_ended(cluster: Cluster, run_ids: list[str]) -> bool:
    return all(status not in ("queued", "in_progress") for status, _ in cluster.holders(run_ids).values())


# --- the tests ---------------------------------------------------------------------------------------


def test_runs_created_on_one_api_are_executed_by_workers_and_followed_on_another(scale: Cluster) -> None:
    with scale.reporting(), scale.sdk("api-1") as api1, scale.sdk("api-2") as api2:
        scale.workers(3, upstream_base_url=scale.find("model-fast").url)
        assistant = api1.beta.assistants.create(model="scripted")

        def follow(run: Run) -> tuple[Run, float]:
            started = time.monotonic()
            return api2.beta.threads.runs.poll(run.id, thread_id=run.thread_id), time.monotonic() - started

        def stream() -> Recorder:
            thread = api2.beta.threads.create(messages=[{"role": "user", "content": "stream this one"}])
            with api2.beta.threads.runs.stream(
                thread_id=thread.id, assistant_id=assistant.id, event_handler=Recorder()
            ) as recorder:
                recorder.until_done()
            return recorder

        runs: dict[str, tuple[str, str]] = {}
        streamed = in_background(stream)
        with ThreadPoolExecutor(max_workers=20) as pool:
            follows = []
            # Each run is followed from the moment it exists, so the polls are held while it executes.
            for n in range(20):
                question = f"fan-out question {n}"
                thread = api1.beta.threads.create(messages=[{"role": "user", "content": question}])
                run = api1.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
                runs[run.id] = (thread.id, question)
                follows.append(pool.submit(follow, run))
            followed = [f.result(timeout=2 * HOLD) for f in follows]
        try:
            recorder = streamed.result(timeout=HOLD)
        except TimeoutError:
            raise AssertionError("the stream on api-2 never saw the run end on a worker") from None

        for run, took in followed:
            assert run.status == "completed", run
            # Well below api-2's hold: the worker's notifications ended the held polls.
            assert took < HOLD / 2, f"following {run.id} on api-2 took {took:.1f}s"
        answered_once(scale, runs)

        assert collapse(recorder.names) == TEXT_RUN, recorder.names
        final = recorder.get_final_messages()
        assert [m.content[0].text.value for m in final if m.content[0].type == "text"] == [
            "echo: stream this one"
        ]
        # Every delta the worker published reached the stream on the other process.
        assert "".join(recorder.deltas) == "echo: stream this one"
        assert recorder.names.count("thread.message.delta") == 4


def test_runs_of_a_killed_worker_are_taken_over_and_answered_once(scale: Cluster) -> None:
    with scale.reporting(), scale.sdk("api-1") as api:
        # Eight runs at most per worker: fifteen runs spread over three, and two survivors can hold all.
        workers = scale.workers(3, upstream_base_url=scale.find("model-slow").url, worker_concurrency=8)
        assistant = api.beta.assistants.create(model="scripted")
        runs = start_runs(api, assistant.id, 15, "kill")
        ids = list(runs)

        def victim_mid_answer() -> tuple[str, dict[str, str]] | None:
            held = scale.holders(ids)
            if any(status == "queued" for status, _ in held.values()):
                return None
            writing = scale.half_written(ids)
            busiest = Counter(held[run_id][1] for run_id in writing).most_common(1)
            if not busiest:
                return None
            victim = busiest[0][0]
            assert victim is not None
            return victim, {r: m for r, m in writing.items() if held[r][1] == victim}

        victim_id, interrupted = wait_for(victim_mid_answer, timeout=15, what="runs claimed and mid-answer")
        victim = next(w for w in workers if w.worker_id == victim_id)
        victim.process.kill()
        assert victim.process.wait(timeout=10) == -signal.SIGKILL

        # The victim's runs wait out its lease, then a survivor redoes their turn from the start.
        wait_for(lambda: all_ended(scale, ids), timeout=LEASE + 2 * SLOW_ANSWER + 10, what="all runs to end")
        answered_once(scale, runs)
        # The victim's turns were redone, each answer written once: the redone turn's message takes
        # the half-written one's id (so a stream that showed part of it carries on with the same item).
        redone = scale.rows(
            "SELECT id FROM runs WHERE id = ANY($1::text[]) AND claims >= 2", list(interrupted)
        )
        assert len(redone) == len(interrupted), f"interrupted turns not redone: {interrupted}"
        done = scale.rows(
            "SELECT id FROM messages WHERE id = ANY($1::text[]) AND status = 'completed'",
            list(interrupted.values()),
        )
        assert len(done) == len(interrupted)


def test_sigterm_stops_claiming_and_hands_unfinished_runs_back(scale: Cluster) -> None:
    with scale.reporting(), scale.sdk("api-1") as api1, scale.sdk("api-2") as api2:
        slow = scale.find("model-slow").url
        # Four runs at most each, so seven runs split four and three: both workers hold some, and one
        # of them still has room to claim more. One may finish its runs; the other's grace is too short.
        patient = scale.worker(
            "worker-patient", upstream_base_url=slow, worker_concurrency=4, shutdown_grace_seconds=20
        )
        hasty = scale.worker(
            "worker-hasty", upstream_base_url=slow, worker_concurrency=4, shutdown_grace_seconds=0.5
        )
        scale.ready(patient, hasty)
        assistant = api1.beta.assistants.create(model="scripted")
        first = start_runs(api1, assistant.id, 7, "term")
        first_ids = list(first)
        wait_for(lambda: len(scale.half_written(first_ids)) == 7, timeout=15, what="all runs mid-answer")
        held = scale.holders(first_ids)
        mine = {
            w.worker_id: {r for r, (_s, by) in held.items() if by == w.worker_id} for w in (patient, hasty)
        }
        assert sorted(len(runs) for runs in mine.values()) == [3, 4], held

        signalled = time.monotonic()
        for worker in (patient, hasty):
            worker.process.send_signal(signal.SIGTERM)
        for worker in (patient, hasty):
            wait_for(partial(logged, worker, "worker shutting down"), timeout=10, what="SIGTERM handled")
        later = start_runs(api2, assistant.id, 3, "later")
        later_ids = list(later)

        exited: dict[str, float] = {}

        def both_exited() -> bool:
            state = scale.holders(first_ids + later_ids)
            # A worker that is shutting down claims nothing: not new runs, not runs handed back.
            for run_id in later_ids:
                assert state[run_id] == ("queued", None), (run_id, state[run_id])
            for run_id in mine[hasty.worker_id]:
                assert state[run_id][1] in (hasty.worker_id, None), (run_id, state[run_id])
            for worker in (patient, hasty):
                if not worker.alive():
                    exited.setdefault(worker.name, time.monotonic() - signalled)
            return len(exited) == 2

        wait_for(both_exited, timeout=30, interval=0.05, what="both workers to exit")
        assert patient.process.returncode == 0 and hasty.process.returncode == 0
        assert exited["worker-hasty"] < 0.5 + 5, exited
        assert exited["worker-patient"] < 20, exited
        state = scale.holders(first_ids)
        # The patient worker finished its runs in its grace period; the hasty one handed its runs back
        # at once (queued, no lease to wait out) instead of finishing them or leaving them stranded.
        assert {state[r] for r in mine[patient.worker_id]} == {("completed", None)}, state
        assert {state[r] for r in mine[hasty.worker_id]} == {("queued", None)}, state

        scale.ready(scale.worker("worker-survivor", upstream_base_url=slow))
        everything = {**first, **later}
        wait_for(lambda: all_ended(scale, list(everything)), timeout=3 * SLOW_ANSWER + 10, what="all runs")
        answered_once(scale, everything)


def test_racing_clients_on_two_apis_start_one_run_per_thread(scale: Cluster) -> None:
    # No worker runs in this test: the winner stays queued, holding its thread for the whole race.
    with scale.reporting(), scale.sdk("api-1") as api1, scale.sdk("api-2") as api2:
        assistant = api1.beta.assistants.create(model="scripted")
        apis = (api1, api2)
        for round_ in range(3):
            thread = api1.beta.threads.create(messages=[{"role": "user", "content": f"round {round_}"}])

            def create(n: int, thread_id: str = thread.id) -> Run:
                return apis[n % 2].beta.threads.runs.create(
                    thread_id=thread_id,
                    assistant_id=assistant.id,
                    additional_messages=[{"role": "user", "content": racer_text(n)}],
                )

            outcomes = race(create)
            winner = check_one_winner(outcomes, thread.id)
            assert [r.id for r in api2.beta.threads.runs.list(thread_id=thread.id).data] == [winner.id]
            texts = [
                m.content[0].text.value
                for m in api2.beta.threads.messages.list(thread_id=thread.id, order="asc").data
                if m.content[0].type == "text"
            ]
            assert len(texts) == 2 and texts[1].startswith("racer "), texts
            # Queued, held by no worker: the cancel ends the run at once and frees the thread.
            api2.beta.threads.runs.cancel(thread_id=thread.id, run_id=winner.id)
            assert api1.beta.threads.runs.retrieve(winner.id, thread_id=thread.id).status == "cancelled"


@pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (`make test` installs it)",
)
def test_a_thread_s_code_runs_go_to_the_worker_holding_its_kernel(
    scale: Cluster, model: ScriptedModel
) -> None:
    with scale.reporting(), scale.sdk("api-1") as api:
        # Both workers ask the scripted model of this process; their kernels run as uids of their own.
        workers = [
            scale.worker(
                f"worker-kernels-{n}", upstream_base_url=model.base_url, sandbox_uid_base=300000 + 1000 * n
            )
            for n in range(2)
        ]
        scale.ready(*workers)
        assistant = api.beta.assistants.create(model="scripted", tools=[{"type": "code_interpreter"}])

        def code_run(thread_id: str, code: str) -> tuple[str, str]:
            """Run ``code`` on the thread: what the model was told, and which worker claimed the run."""
            model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text="done"))
            run = api.beta.threads.runs.create_and_poll(
                thread_id=thread_id, assistant_id=assistant.id, poll_interval_ms=50
            )
            assert run.status == "completed", run.last_error
            told = model.requests[-1]["messages"][-1]["content"]
            (claim,) = scale.rows(
                "SELECT worker_id FROM run_transitions WHERE run_id = $1 AND to_status = 'in_progress'",
                run.id,
            )
            return str(told), str(claim["worker_id"])

        # Both workers are idle and woken for every run: without the preference, a thread's second
        # run would go to the other worker half the time, and find no x there.
        threads = [api.beta.threads.create().id for _ in range(4)]
        holders = {}
        for n, thread_id in enumerate(threads):
            told, holders[thread_id] = code_run(thread_id, f"x = {n + 1}000\nprint(x)")
            assert told.strip() == f"{n + 1}000"
        for n, thread_id in enumerate(threads):
            told, worker_id = code_run(thread_id, "print(x + 1)")
            assert (told.strip(), worker_id) == (f"{n + 1}001", holders[thread_id])
        recorded = scale.rows("SELECT id, kernel_worker_id FROM threads WHERE id = ANY($1::text[])", threads)
        assert {r["id"]: r["kernel_worker_id"] for r in recorded} == holders

        # The holder stops, and its kernels with it: after the affinity moment the other worker takes
        # the thread's next run, in a fresh kernel, and the model is told its variables are gone.
        holder = next(w for w in workers if w.worker_id == holders[threads[0]])
        scale.stop(holder)
        told, worker_id = code_run(threads[0], "print('x' in globals())")
        assert worker_id != holder.worker_id
        assert told.startswith(RESTARTED) and "False" in told
