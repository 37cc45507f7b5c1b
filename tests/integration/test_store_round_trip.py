"""Each entity comes back from the store as it went in, every field of it (metadata included: its
column is named ``metadata`` but keyed ``meta``), on both databases; written through SQLAlchemy
and read straight from the driver (``store.direct``), and the other way round."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from tests.conftest import database_url
from threadline.domain.content import text_content
from threadline.domain.entities import Assistant, Message, MessageCreation, Run, RunStep, Thread
from threadline.store import Database
from threadline.store.database import migrate
from threadline.store.direct import execute
from threadline.store.rows import _GET, _INSERT, _entity, _row


def _samples() -> list[Any]:
    assistant = Assistant(
        id="asst_rt",
        created_at=1,
        model="gpt-4o",
        name="名前",
        tools=[{"type": "code_interpreter"}],
        metadata={"team": "北京"},
        temperature=0.5,
    )
    thread = Thread(id="thread_rt", created_at=2, metadata={"k": "v"}, last_active_at=3)
    run = Run(
        id="run_rt",
        thread_id=thread.id,
        assistant_id=assistant.id,
        created_at=4,
        model="gpt-4o",
        instructions="be brief",
        metadata={"r": "1"},
        last_error={"code": "server_error", "message": "x"},
    )
    message = Message(
        id="msg_rt",
        thread_id=thread.id,
        created_at=5,
        role="assistant",
        content=text_content("你好"),
        run_id=run.id,
        metadata={"m": "2"},
        incomplete_details={"reason": "max_tokens"},
    )
    step = RunStep(
        id="step_rt",
        run_id=run.id,
        thread_id=thread.id,
        assistant_id=assistant.id,
        created_at=6,
        type="message_creation",
        step_details=MessageCreation(message.id),
        metadata={"s": "3"},
    )
    return [assistant, thread, run, message, step]


_TABLES = {Assistant: "assistants", Thread: "threads", Run: "runs", Message: "messages", RunStep: "run_steps"}


Execute = Callable[[Connection, Any, Any], Any]


def _through_sqlalchemy(conn: Connection, stmt: Any, params: Any) -> Any:
    return conn.execute(stmt, params)


@pytest.mark.parametrize(
    ("write_with", "read_with"),
    [(_through_sqlalchemy, execute), (execute, _through_sqlalchemy)],
    ids=["sqlalchemy-then-direct", "direct-then-sqlalchemy"],
)
def test_every_entity_reads_back_as_written(tmp_path: Path, write_with: Execute, read_with: Execute) -> None:
    url = database_url(tmp_path)
    migrate(url)

    async def main() -> list[tuple[Any, Any]]:
        db = Database(url)
        samples = _samples()
        try:

            def write(conn: Connection) -> None:
                for entity in samples:
                    write_with(conn, _INSERT[_TABLES[type(entity)]], _row(entity))

            await db.write(write)

            def read(conn: Connection) -> list[tuple[Any, Any]]:
                pairs = []
                for entity in samples:
                    table = _TABLES[type(entity)]
                    if table == "messages":
                        continue  # no point read by id; read below with the thread's messages
                    row = read_with(conn, _GET[table], {"b_id": entity.id}).first()
                    pairs.append((entity, _entity(type(entity), row)))
                return pairs

            return await db.read(read)
        finally:
            await db.dispose()

    for written, read in asyncio.run(main()):
        assert read == written


def test_messages_read_back_as_written(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)

    async def main() -> tuple[Message, list[Message]]:
        from threadline.store import sql_stores

        db = Database(url)
        stores = sql_stores(db)
        _assistant, thread, _run, message, _step = _samples()
        try:
            await stores.threads.insert(thread, [message], None)
            return message, await stores.threads.newest_messages(thread.id, 10)
        finally:
            await db.dispose()

    written, read = asyncio.run(main())
    assert read == [written]
