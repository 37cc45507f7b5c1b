"""``/v1/vector_stores``: stores, their files, file batches and search.

No ``OpenAI-Beta`` header here: the SDK's ``client.vector_stores`` does not send one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field, model_validator

from threadline.api.deps import Paging
from threadline.api.objects import (
    deleted_object,
    file_batch_object,
    list_object,
    search_results_object,
    vector_store_file_object,
    vector_store_object,
)
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import ChunkingStrategy, Strict, WithMetadata
from threadline.domain.clock import now
from threadline.domain.entities import NewFile, VectorStore
from threadline.domain.updates import KEEP
from threadline.domain.vector_store_files import VectorStoreFiles
from threadline.domain.vector_stores import VectorStoreService, VectorStoreUpdate

router = APIRouter(route_class=CheckedRoute)

_NO_NUL = r"^[^\x00]*$"
"""No NUL characters: PostgreSQL cannot store text holding one."""
Attributes = dict[
    Annotated[str, Field(max_length=64, pattern=_NO_NUL)],
    Annotated[str, Field(max_length=512, pattern=_NO_NUL)] | float | bool,
]
"""A file's attributes as the spec has them: keys of at most 64 characters, values strings of at
most 512 characters, numbers or booleans (and at most 16 pairs, checked where they are given)."""
Name = Annotated[str, Field(max_length=256, pattern=_NO_NUL)]
StatusFilter = Literal["in_progress", "completed", "failed", "cancelled"]


async def _vector_stores(request: Request) -> VectorStoreService:
    service: VectorStoreService = request.app.state.vector_stores
    return service.for_project(request.state.project_id)


async def _vector_store_files(request: Request) -> VectorStoreFiles:
    service: VectorStoreFiles = request.app.state.vector_store_files
    return service.for_project(request.state.project_id)


Stores = Annotated[VectorStoreService, Depends(_vector_stores)]
Files = Annotated[VectorStoreFiles, Depends(_vector_store_files)]


class ExpiresAfter(Strict):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class CreateVectorStoreRequest(WithMetadata):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=512)
    """Accepted as OpenAI does; not part of the store object, so not kept."""
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateVectorStoreRequest(WithMetadata):
    name: Name | None = None
    expires_after: ExpiresAfter | None = None

    def command(self) -> VectorStoreUpdate:
        return VectorStoreUpdate(
            name=self.sent("name", KEEP),
            metadata=self.sent("metadata", KEEP),
            expires_after=self.sent("expires_after", KEEP),
        )


class CreateVectorStoreFileRequest(Strict):
    file_id: str = Field(max_length=128)
    chunking_strategy: ChunkingStrategy | None = None
    attributes: Attributes | None = Field(default=None, max_length=16)


class UpdateVectorStoreFileAttributesRequest(Strict):
    attributes: Attributes | None = Field(max_length=16)
    """Required, and may be null: null removes them."""


class BatchFile(CreateVectorStoreFileRequest):
    pass


class CreateVectorStoreFileBatchRequest(Strict):
    file_ids: list[Annotated[str, Field(max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=2000
    )
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=2000)
    chunking_strategy: ChunkingStrategy | None = None
    attributes: Attributes | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _one_of(self) -> CreateVectorStoreFileBatchRequest:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give either file_ids or files")
        return self


class ComparisonFilter(Strict):
    type: Literal["eq", "ne", "gt", "gte", "lt", "lte"]
    key: str
    value: str | float | bool


class CompoundFilter(Strict):
    type: Literal["and", "or"]
    filters: list[ComparisonFilter | CompoundFilter] = Field(min_length=1)


class SearchRankingOptions(Strict):
    ranker: Literal["none", "auto", "default-2024-11-15"] | None = None
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class VectorStoreSearchRequest(Strict):
    query: str | list[str] = Field(min_length=1)
    rewrite_query: bool = False
    """Accepted; queries are searched as given (``search_query`` echoes them)."""
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: ComparisonFilter | CompoundFilter | None = None
    ranking_options: SearchRankingOptions | None = None


def _new_file(body: CreateVectorStoreFileRequest) -> NewFile:
    strategy = body.chunking_strategy.model_dump(mode="json") if body.chunking_strategy else None
    return NewFile(body.file_id, strategy, body.attributes)


def _store(store: VectorStore) -> dict[str, Any]:
    return vector_store_object(store, now())


def _strategy(strategy: ChunkingStrategy | None) -> dict[str, Any] | None:
    return strategy.model_dump(mode="json") if strategy else None


# --- stores ------------------------------------------------------------------------------------


@router.post("/vector_stores")
async def create_vector_store(body: CreateVectorStoreRequest, stores: Stores) -> dict[str, Any]:
    store = await stores.create_store(
        name=body.name,
        metadata=body.metadata,
        expires_after=body.expires_after.model_dump() if body.expires_after else None,
        files=[NewFile(file_id) for file_id in body.file_ids],
        chunking_strategy=_strategy(body.chunking_strategy),
    )
    return _store(store)


@router.get("/vector_stores")
async def list_vector_stores(stores: Stores, query: Paging) -> dict[str, Any]:
    return list_object(await stores.list_stores(query), _store)


@router.get("/vector_stores/{vector_store_id}")
async def get_vector_store(vector_store_id: str, stores: Stores) -> dict[str, Any]:
    return _store(await stores.get_store(vector_store_id))


@router.post("/vector_stores/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: str, body: UpdateVectorStoreRequest, stores: Stores
) -> dict[str, Any]:
    return _store(await stores.modify_store(vector_store_id, body.command()))


@router.delete("/vector_stores/{vector_store_id}")
async def delete_vector_store(vector_store_id: str, stores: Stores) -> dict[str, Any]:
    await stores.delete_store(vector_store_id)
    return deleted_object(vector_store_id, "vector_store")


@router.post("/vector_stores/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: str, body: VectorStoreSearchRequest, stores: Stores
) -> dict[str, Any]:
    queries = [body.query] if isinstance(body.query, str) else body.query
    ranking = body.ranking_options or SearchRankingOptions()
    filters = body.filters.model_dump(mode="json") if body.filters else None
    hits = await stores.search(
        vector_store_id, queries, body.max_num_results, ranking.score_threshold, filters
    )
    return search_results_object(queries, hits)


# --- files -------------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/files")
async def create_vector_store_file(
    vector_store_id: str, body: CreateVectorStoreFileRequest, files: Files
) -> dict[str, Any]:
    return vector_store_file_object(await files.create_file(vector_store_id, _new_file(body)))


@router.get("/vector_stores/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: str, files: Files, query: Paging, filter: StatusFilter | None = None
) -> dict[str, Any]:
    page = await files.list_files(vector_store_id, query, filter)
    return list_object(page, vector_store_file_object)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}")
async def get_vector_store_file(vector_store_id: str, file_id: str, files: Files) -> dict[str, Any]:
    return vector_store_file_object(await files.get_file(vector_store_id, file_id))


@router.post("/vector_stores/{vector_store_id}/files/{file_id}")
async def update_vector_store_file_attributes(
    vector_store_id: str, file_id: str, body: UpdateVectorStoreFileAttributesRequest, files: Files
) -> dict[str, Any]:
    row = await files.update_file_attributes(vector_store_id, file_id, body.attributes)
    return vector_store_file_object(row)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}/content")
async def retrieve_vector_store_file_content(
    vector_store_id: str, file_id: str, files: Files
) -> dict[str, Any]:
    pieces = await files.file_content(vector_store_id, file_id)
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": piece} for piece in pieces],
        "has_more": False,
        "next_page": None,
    }


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(vector_store_id: str, file_id: str, files: Files) -> dict[str, Any]:
    await files.delete_file(vector_store_id, file_id)
    return deleted_object(file_id, "vector_store.file")


# --- file batches ------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/file_batches")
async def create_vector_store_file_batch(
    vector_store_id: str, body: CreateVectorStoreFileBatchRequest, files: Files
) -> dict[str, Any]:
    new_files = (
        [_new_file(f) for f in body.files] if body.files else [NewFile(fid) for fid in body.file_ids or []]
    )
    batch = await files.create_batch(
        vector_store_id, new_files, _strategy(body.chunking_strategy), body.attributes
    )
    return file_batch_object(batch)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}")
async def get_vector_store_file_batch(vector_store_id: str, batch_id: str, files: Files) -> dict[str, Any]:
    return file_batch_object(await files.get_batch(vector_store_id, batch_id))


@router.post("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_vector_store_file_batch(vector_store_id: str, batch_id: str, files: Files) -> dict[str, Any]:
    return file_batch_object(await files.cancel_batch(vector_store_id, batch_id))


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")
async def list_files_in_vector_store_batch(
    vector_store_id: str,
    batch_id: str,
    files: Files,
    query: Paging,
    filter: Annotated[StatusFilter | None, Query()] = None,
) -> dict[str, Any]:
    page = await files.list_files(vector_store_id, query, filter, batch_id)
    return list_object(page, vector_store_file_object)
