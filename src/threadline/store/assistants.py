"""``SqlAssistantStore``: assistants, each scoped to its project (the run engine reads them in any)."""

from __future__ import annotations

from sqlalchemy import delete, update

from threadline.domain.entities import Assistant, ListQuery, Page
from threadline.store import tables as t
from threadline.store.rows import _INSERT, Rows, _in_project, _row


class SqlAssistantStore(Rows):
    """The domain's ``AssistantRepository``."""

    async def insert(self, assistant: Assistant) -> None:
        await self.db.write(lambda conn: conn.execute(_INSERT["assistants"], _row(assistant)))

    async def upsert(self, assistant: Assistant) -> None:
        if self.db.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        values = _row(assistant)
        changed = {k: v for k, v in values.items() if k not in ("id", "created_at")}
        stmt = dialect_insert(t.assistants).values(values)
        await self._execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))

    async def get(self, assistant_id: str, project_id: str | None = None) -> Assistant | None:
        return await self._get(Assistant, t.assistants, assistant_id, *_in_project(project_id))

    async def list_assistants(self, query: ListQuery, project_id: str) -> Page[Assistant]:
        return await self._page(Assistant, t.assistants, query, t.assistants.c.project_id == project_id)

    async def update(self, assistant: Assistant) -> None:
        await self._execute(
            update(t.assistants).where(t.assistants.c.id == assistant.id).values(_row(assistant))
        )

    async def delete(self, assistant_id: str, project_id: str) -> bool:
        a = t.assistants
        return await self._execute(delete(a).where(a.c.id == assistant_id, a.c.project_id == project_id)) > 0
