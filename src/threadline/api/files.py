"""``/v1/files``: upload (streamed multipart), list, retrieve, download and delete files.

No ``OpenAI-Beta`` header here: the SDK does not send one to ``/files``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from threadline.api.deps import Cursor
from threadline.api.limits import UploadSlots
from threadline.api.multipart import FormReader
from threadline.api.objects import file_object, list_object
from threadline.api.routing import CheckedRoute
from threadline.domain.entities import ListQuery
from threadline.domain.files import FileService

router = APIRouter(route_class=CheckedRoute)


async def _files(request: Request) -> FileService:
    files: FileService = request.app.state.files
    return files.for_project(request.state.project_id)


Files = Annotated[FileService, Depends(_files)]


async def _file_paging(
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Cursor = None,
) -> ListQuery:
    """OpenAI's file list: up to 10,000 a page by default, and only an ``after`` cursor."""
    return ListQuery(limit=limit, order=order, after=after)


@router.post("/files")
async def create_file(request: Request, files: Files) -> dict[str, Any]:
    slots: UploadSlots = request.app.state.upload_slots
    with slots.hold(request.state.project_id):
        return file_object(await files.create_file(FormReader(request).parts()))


@router.get("/files")
async def list_files(
    files: Files,
    query: Annotated[ListQuery, Depends(_file_paging)],
    purpose: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")] = None,
) -> dict[str, Any]:
    return list_object(await files.list_files(query, purpose), file_object)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, files: Files) -> dict[str, Any]:
    return file_object(await files.get_file(file_id))


@router.get("/files/{file_id}/content")
async def download_file(file_id: str, files: Files) -> StreamingResponse:
    file, chunks = await files.file_content(file_id)
    headers = {
        "Content-Length": str(file.bytes),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file.filename, safe='')}",
        # The type may be one the client declared: browsers must not second-guess it.
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(chunks, media_type=file.content_type, headers=headers)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, files: Files) -> dict[str, Any]:
    await files.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
