"""Vector stores and their files as rows, and a thread's own store, joined in another transaction.

``SqlVectorStoreRepository`` writes stores and files with these; ``store/rows.py`` calls
:func:`join_thread_store` in the transaction that writes messages attaching files for
``file_search`` (this module imports neither, so both can import it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from threadline.domain.entities import ThreadStoreFiles, ThreadStorePlan, VectorStore, VectorStoreFile
from threadline.domain.files import thread_store_id, with_search_store
from threadline.domain.vector_stores import chunking_of, expiry_at
from threadline.store import tables as t
from threadline.store.jobs import insert_jobs

_S, _F = t.vector_stores, t.vector_store_files


def store_values(store: VectorStore) -> dict[str, Any]:
    return {
        "id": store.id,
        "project_id": store.project_id,
        "created_at": store.created_at,
        "name": store.name,
        "meta": store.metadata,
        "expires_after": store.expires_after,
        "expires_at": store.expires_at,
        "last_active_at": store.last_active_at,
    }


def file_values(file: VectorStoreFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "vector_store_id": file.vector_store_id,
        "project_id": file.project_id,
        "batch_id": file.batch_id,
        "created_at": file.created_at,
        "status": file.status,
        "usage_bytes": file.usage_bytes,
        "last_error": file.last_error,
        "chunking_strategy": file.chunking_strategy,
        "attributes": file.attributes,
    }


def join_thread_store(
    conn: Connection, resources: Mapping[str, Any] | None, file_ids: Sequence[str], plan: ThreadStorePlan
) -> ThreadStoreFiles:
    """Add ``file_ids`` to the thread's store, made first if the thread names none that is live.

    Called once the thread's row was written or locked in this transaction, so two requests cannot
    both find the thread without a store and make one each.
    """
    project_id, at = plan.new_store.project_id, plan.at
    store_id = thread_store_id(resources)
    live = None
    if store_id is not None:
        live = conn.execute(
            select(_S.c.expires_after).where(
                _S.c.id == store_id,
                _S.c.project_id == project_id,
                or_(_S.c.expires_at.is_(None), _S.c.expires_at > at),
            )
        ).first()
    if store_id is not None and live is not None:
        # Adding files is activity: the store's expiry moves with it.
        conn.execute(
            update(_S)
            .where(_S.c.id == store_id)
            .values(last_active_at=at, expires_at=expiry_at(live.expires_after, at))
        )
        joined = dict(resources or {})
    else:
        # None yet, or the one named was deleted or has expired (it cannot be searched): a new one.
        store_id = plan.new_store.id
        conn.execute(insert(_S).values(**store_values(plan.new_store)))
        joined = with_search_store(resources, store_id)
    held = set(
        conn.execute(select(_F.c.id).where(_F.c.vector_store_id == store_id, _F.c.id.in_(list(file_ids))))
        .scalars()
        .all()
    )
    added = [file_id for file_id in file_ids if file_id not in held]
    if added:
        rows = [
            VectorStoreFile(file_id, store_id, project_id, at, "in_progress", chunking_of(None))
            for file_id in added
        ]
        conn.execute(insert(_F), [file_values(row) for row in rows])
        insert_jobs(conn, [plan.ingest_job(store_id, file_id) for file_id in added])
    return ThreadStoreFiles(store_id, added, joined)
