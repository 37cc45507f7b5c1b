"""``GET /metrics``: Prometheus's format, runs and tokens counted after runs end, the queue depth read live."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import openai

from tests.support import ThreadlineServer
from tests.test_run_lifecycle import sdk, setup_thread
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


def test_runs_and_tokens_are_counted_when_runs_end(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server()
    client = sdk(server)
    before = scrape(server)
    assert before.get('threadline_runs_ended_total{status="completed"}', 0) == 0
    for text in ("one", "two"):
        assistant_id, thread_id = setup_thread(client)
        model.script(Reply(text=text, usage=(11, 3)))
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
    assert not any(re.match("threadline_embedded_model_up", name) for name in samples)
