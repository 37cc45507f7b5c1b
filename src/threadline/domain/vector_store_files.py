"""The files and file batches inside a vector store: ``/v1/vector_stores/{id}/files`` and
``/file_batches``.

Split from ``VectorStoreService`` (``vector_stores.py``) by job: that one keeps the stores themselves,
search over them and the ingestion job the worker runs; this one adds, reads, re-labels and removes
the files a request names inside one store, and the batches that add several at once. Every call
first finds the store through ``VectorStoreService.get_store`` (its 404), and files are added
through ``VectorStoreService.add_files``, which creating a store with files uses too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from threadline.domain.entities import FileBatch, ListQuery, NewFile, Page, VectorStoreFile
from threadline.domain.vector_stores import VectorStoreService, without_overlap
from threadline.errors import InvalidRequestError, NotFoundError
from threadline.ids import new_id

# What the ids made here look like: others are not looked up (PostgreSQL refuses text with NUL).
_BATCH_ID = re.compile(r"vsfb_[A-Za-z0-9]{1,64}")
_FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")


class VectorStoreFiles:
    """A store's files and file batches, within the project of ``vector_stores``."""

    def __init__(self, vector_stores: VectorStoreService) -> None:
        self.vector_stores = vector_stores
        self.stores = vector_stores.stores
        self.engine = vector_stores.engine
        self.clock = vector_stores.clock
        self.project_id = vector_stores.project_id

    def for_project(self, project_id: str) -> VectorStoreFiles:
        return VectorStoreFiles(self.vector_stores.for_project(project_id))

    # --- files -----------------------------------------------------------------------------

    async def create_file(self, store_id: str, new: NewFile) -> VectorStoreFile:
        await self.vector_stores.get_store(store_id)
        await self.vector_stores.check_files([new.file_id], "file_id")
        [row] = await self.vector_stores.add_files(store_id, [new], None, None)
        return row

    async def get_file(self, store_id: str, file_id: str) -> VectorStoreFile:
        await self.vector_stores.get_store(store_id)
        row = None
        if _FILE_ID.fullmatch(file_id):
            row = await self.stores.get_file(store_id, file_id, self.project_id)
        if row is None:
            raise NotFoundError(
                f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id"
            )
        return row

    async def list_files(
        self, store_id: str, query: ListQuery, status: str | None, batch_id: str | None = None
    ) -> Page[VectorStoreFile]:
        if batch_id is not None:
            await self.get_batch(store_id, batch_id)
        else:
            await self.vector_stores.get_store(store_id)
        return await self.stores.list_files(store_id, query, status, batch_id)

    async def update_file_attributes(
        self, store_id: str, file_id: str, attributes: dict[str, Any] | None
    ) -> VectorStoreFile:
        """Replace a file's attributes, which search ``filters`` compare from then on."""
        await self.get_file(store_id, file_id)
        if not await self.stores.update_attributes(store_id, file_id, self.project_id, attributes):
            await self.get_file(store_id, file_id)  # removed meanwhile: its 404
        return await self.get_file(store_id, file_id)

    async def file_content(self, store_id: str, file_id: str) -> list[str]:
        """The file's parsed text as stored for search, one piece per chunk without the text a chunk
        repeats of the one before (joined, the pieces are the text), so empty until it is indexed."""
        await self.get_file(store_id, file_id)
        return without_overlap(await self.stores.chunk_texts(store_id, file_id))

    async def delete_file(self, store_id: str, file_id: str) -> None:
        await self.get_file(store_id, file_id)
        await self.stores.delete_file(store_id, file_id, self.project_id)
        await (await self.engine()).remove(store_id, file_id)

    # --- batches ---------------------------------------------------------------------------

    async def create_batch(
        self,
        store_id: str,
        files: Sequence[NewFile],
        chunking_strategy: dict[str, Any] | None,
        attributes: dict[str, Any] | None,
    ) -> FileBatch:
        await self.vector_stores.get_store(store_id)
        await self.vector_stores.check_files([f.file_id for f in files], "file_ids")
        batch = FileBatch(new_id("vector_store_file_batch"), store_id, self.project_id, self.clock())
        await self.vector_stores.add_files(store_id, files, chunking_strategy, batch, attributes)
        return await self.get_batch(store_id, batch.id)

    async def get_batch(self, store_id: str, batch_id: str) -> FileBatch:
        await self.vector_stores.get_store(store_id)
        batch = None
        if _BATCH_ID.fullmatch(batch_id):
            batch = await self.stores.get_batch(store_id, batch_id, self.project_id)
        if batch is None:
            raise NotFoundError(
                f"No file batch found with id '{batch_id}' in vector store '{store_id}'.", param="batch_id"
            )
        return batch

    async def cancel_batch(self, store_id: str, batch_id: str) -> FileBatch:
        batch = await self.get_batch(store_id, batch_id)
        if batch.status != "in_progress":
            raise InvalidRequestError(
                f"Cannot cancel a file batch with status '{batch.status}'.", param="batch_id"
            )
        await self.stores.cancel_batch(store_id, batch_id)
        return await self.get_batch(store_id, batch_id)
