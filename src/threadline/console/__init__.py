"""The web console at ``/console``: a few static files (plain ES modules and one stylesheet) and the
route that serves them.

The page itself talks to ``/v1`` like any other client, with the key the user signs in with, so this
module has no access to the database or the services: it only hands out files. They ship inside the
package and are read once at start-up; each answer carries its content type, an ETag, ``Cache-Control:
no-cache`` (revalidate every time, so an upgrade is never hidden behind a stale cached script) and a
strict Content-Security-Policy that allows only our own scripts, styles and API calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request, Response

from threadline.api.routing import CheckedRoute
from threadline.errors import NotFoundError

router = APIRouter(route_class=CheckedRoute)

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[entry.name] = StaticFile(body, _CONTENT_TYPES[suffix], etag)
    return files


FILES = _load()
"""Every file the console serves, by name; nothing outside this mapping can be asked for."""


def _serve(request: Request, name: str) -> Response:
    file = FILES.get(name)
    if file is None:
        raise NotFoundError(f"Invalid URL ({request.method} {request.url.path})")
    headers = {
        "ETag": file.etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


@router.get("/console", include_in_schema=False)
async def console_page(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get("/console/{name}", include_in_schema=False)
async def console_file(request: Request, name: str) -> Response:
    return _serve(request, name)
