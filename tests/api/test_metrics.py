"""``GET /metrics``: Prometheus's format, runs and tokens counted after runs end, model calls timed,
background jobs counted as they end, the queue depths of runs and jobs read live."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.api.test_context import thread_with
from tests.api.test_run_lifecycle import sdk, setup_thread, wait_status
from tests.conftest import server_settings
from tests.integration.test_jobs import Queue
from tests.support import ThreadlineServer, wait_for
from threadline.domain.entities import Job
from threadline.testing import Reply, ScriptedModel


def scrape(server: ThreadlineServer) -> dict[str, float]:
    answer = httpx.get(server.url.removesuffix("/v1") + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def scrape_until(
    server: ThreadlineServer, ready: Callable[[dict[str, float]], float | None], what: str
) -> dict[str, float]:
    """Scrape until ``ready`` says the samples show what the test waits for (written after the
    outcome a client sees, so a moment later)."""

    def check() -> dict[str, float] | None:
        samples = scrape(server)
        return samples if ready(samples) else None

    return wait_for(check, what=what)


def series(samples: dict[str, float], name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` whatever order the labels are written in; ``None`` if absent."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for sample, value in samples.items():
        base, _, rest = sample.partition("{")
        if base == name and set(filter(None, rest.removesuffix("}").split(","))) == wanted:
            return value
    return None


def test_runs_and_tokens_are_counted_when_runs_end(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server()
    client = sdk(server)
    before = scrape(server)
    assert before.get('threadline_runs_ended_total{status="completed"}', 0) == 0
    for text in ("one", "two"):
        assistant_id, thread_id = setup_thread(client)
        # The model answers after 0.3 s, its last word 0.2 s after its first.
        model.script(Reply(text=f"{text} more", usage=(11, 3), first_delay=0.3, delay=0.2))
        run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
        assert run.status == "completed"
    assistant_id, thread_id = setup_thread(client)
    model.script(*[Reply(status=500, error_message="down")] * 3)
    assert (
        client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id).status
        == "failed"
    )

    after = scrape(server)
    assert after['threadline_runs_ended_total{status="completed"}'] == 2
    assert after['threadline_runs_ended_total{status="failed"}'] == 1
    assert after['threadline_tokens_total{kind="prompt"}'] == 22
    assert after['threadline_tokens_total{kind="completion"}'] == 6
    assert after["threadline_run_duration_seconds_count"] == 3
    assert after['threadline_runs{status="queued"}'] == 0

    # Each model call is timed under the name the upstream was asked for; the failed run's three
    # attempts (two retries) are errors, and, having sent nothing, have no time to a first event.
    calls = "threadline_model_call_duration_seconds"
    first = "threadline_model_call_first_event_seconds"
    answer = {"model": "gpt-4o", "purpose": "answer"}
    assert series(after, f"{calls}_count", **answer, outcome="ok") == 2
    assert series(after, f"{calls}_count", **answer, outcome="error") == 3
    assert series(after, f"{first}_count", **answer, outcome="ok") == 2
    assert series(after, f"{first}_count", **answer, outcome="error") is None
    first_seconds = series(after, f"{first}_sum", **answer, outcome="ok")
    ok_seconds = series(after, f"{calls}_sum", **answer, outcome="ok")
    assert first_seconds is not None and ok_seconds is not None
    assert 2 * 0.3 <= first_seconds < 10
    assert ok_seconds >= first_seconds + 2 * 0.1
    assert series(after, f"{calls}_bucket", **answer, outcome="ok", le="0.25") == 0
    assert series(after, f"{calls}_bucket", **answer, outcome="ok", le="+Inf") == 2


def test_summary_calls_are_timed_apart_from_answers(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server()
    client = sdk(server)
    assistant_id, thread_id = thread_with(client, 30)
    model.script(Reply(text="They talked about words."), Reply(text="ok"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
    )
    assert run.status == "completed" and len(model.requests) == 2
    samples = scrape(server)
    calls = "threadline_model_call_duration_seconds_count"
    assert series(samples, calls, model="gpt-4o", purpose="summary", outcome="ok") == 1
    assert series(samples, calls, model="gpt-4o", purpose="answer", outcome="ok") == 1


def test_the_queue_depth_is_read_from_the_database(make_server: Callable[..., ThreadlineServer]) -> None:
    api_only = make_server(run_worker=False)
    with openai.OpenAI(base_url=api_only.url, api_key="x", max_retries=0) as other:
        assistant_id, _ = setup_thread(other)
        for _ in range(3):
            thread = other.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
            other.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant_id)
    samples = scrape(api_only)
    assert samples['threadline_runs{status="queued"}'] == 3
    assert samples['threadline_runs{status="in_progress"}'] == 0
    assert samples["threadline_workers_holding_runs"] == 0
    assert samples['threadline_jobs{status="queued"}'] == 0
    assert not any(re.match("threadline_embedded_model_up", name) for name in samples)


def test_a_model_call_given_up_for_a_cancel_is_stopped_not_an_error(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server()
    client = sdk(server)
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text="never ends", hang=True))
    run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
    model.wait_for_requests(1)
    wait_status(client, thread_id, run.id, "in_progress")
    client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
    wait_status(client, thread_id, run.id, "cancelled")
    calls = "threadline_model_call_duration_seconds_count"
    samples = scrape_until(server, lambda found: series(found, calls, **STOPPED), "the call counted")
    assert series(samples, calls, **STOPPED) == 1
    assert series(samples, calls, model="gpt-4o", purpose="answer", outcome="error") is None


STOPPED = {"model": "gpt-4o", "purpose": "answer", "outcome": "stopped"}


@pytest.fixture
def job_server(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    async def broken(job: Job) -> None:
        raise ValueError("unreadable")

    settings = server_settings(model, tmp_path_factory).replace(job_retry_seconds=0.05)
    server = ThreadlineServer(settings, job_handlers={"broken": broken})
    yield server
    server.stop()


def test_jobs_are_counted_as_they_end_and_read_by_status(job_server: ThreadlineServer) -> None:
    client = sdk(job_server)
    store = client.vector_stores.create(name="Docs")
    uploaded = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("tides.txt", b"Ocean tides are caused by the pull of the Moon."),
        poll_interval_ms=100,
    )
    assert uploaded.status == "completed"
    queue = Queue(job_server.settings.effective_database_url)
    try:
        failing = queue.enqueue("broken", max_attempts=2)
        queue.wait(failing.id, "failed")
    finally:
        queue.close()

    ended = "threadline_jobs_ended_total"
    ingest = "vector_store_file.ingest"
    # The runner counts a job once its outcome is written, a moment after the file shows completed.
    samples = scrape_until(
        job_server,
        lambda found: (
            series(found, ended, kind=ingest, status="succeeded")
            and series(found, ended, kind="broken", status="failed")
        ),
        "both jobs counted",
    )
    assert series(samples, ended, kind=ingest, status="succeeded") == 1
    assert series(samples, ended, kind="broken", status="failed") == 1
    assert series(samples, ended, kind="broken", status="succeeded") is None
    attempts = "threadline_job_duration_seconds_count"
    assert series(samples, attempts, kind=ingest, outcome="succeeded") == 1
    assert series(samples, attempts, kind="broken", outcome="retrying") == 1
    assert series(samples, attempts, kind="broken", outcome="failed") == 1
    # Read from the database: both jobs are there, finished, and nothing waits.
    assert samples['threadline_jobs{status="succeeded"}'] == 1
    assert samples['threadline_jobs{status="failed"}'] == 1
    assert samples['threadline_jobs{status="queued"}'] == 0
    assert samples['threadline_jobs{status="running"}'] == 0
