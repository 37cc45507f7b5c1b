"""The thread lock: one active run per thread, however many clients race to start one.

Twenty clients ask for a run on the same thread at the same moment; exactly one may win. The losers get
the API's 400 naming the winner, and none of their ``additional_messages`` reach the thread. Runs on the
in-thread ``server`` (whichever database the suite pass uses); ``test_scale_out`` repeats the race across
API processes on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import openai
from openai.types.beta.threads import Run

from threadline.testing import Reply, ScriptedModel

T = TypeVar("T")

CLIENTS = 20


def race(call: Callable[[int], T], clients: int = CLIENTS) -> list[T | openai.APIStatusError]:
    """``call(n)`` for ``n`` in ``range(clients)``, from that many threads released together."""
    barrier = threading.Barrier(clients)

    def attempt(n: int) -> T | openai.APIStatusError:
        barrier.wait(timeout=30)
        try:
            return call(n)
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(attempt, range(clients)))


def check_one_winner(outcomes: list[Run | openai.APIStatusError], thread_id: str) -> Run:
    """Exactly one run was created; every other attempt got the thread-lock 400 naming it."""
    created = [o for o in outcomes if isinstance(o, Run)]
    refused = [o for o in outcomes if isinstance(o, openai.APIStatusError)]
    assert len(created) == 1, f"{len(created)} runs were created on one thread: {outcomes}"
    assert len(refused) == len(outcomes) - 1
    winner = created[0]
    for exc in refused:
        assert exc.status_code == 400, exc
        assert f"Thread {thread_id} already has an active run {winner.id}." in exc.message, exc.message
    return winner


def racer_text(n: int) -> str:
    return f"racer {n} was here"


def test_concurrent_runs_on_one_thread_one_wins(client: openai.OpenAI, model: ScriptedModel) -> None:
    # The winner's model call hangs, so its run holds the thread for the whole race.
    model.script(Reply(hang=True))
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "only one of you"}])

    outcomes = race(
        lambda n: client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id=assistant.id,
            additional_messages=[{"role": "user", "content": racer_text(n)}],
        )
    )
    winner = check_one_winner(outcomes, thread.id)

    runs = client.beta.threads.runs.list(thread_id=thread.id).data
    assert [r.id for r in runs] == [winner.id]
    # Only the winner's additional message was written: a loser's must not slip in before its refusal.
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    texts = [m.content[0].text.value for m in messages if m.content[0].type == "text"]
    assert texts[0] == "only one of you"
    assert len(texts) == 2 and texts[1].startswith("racer "), texts

    # Free the thread again (and the scripted model's hanging request) for the tests that follow.
    client.beta.threads.runs.cancel(thread_id=thread.id, run_id=winner.id)
    ended = client.beta.threads.runs.poll(winner.id, thread_id=thread.id, poll_interval_ms=50)
    assert ended.status == "cancelled"
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="free again")
