"""``/v1/embeddings``: vectors from the embedding model file search uses (``domain/embeddings.py``).

Any model name is served by that one model, as a catch-all chat route serves any name; the reply
names the model that made the vectors. ``encoding_format=base64`` is little-endian float32, as
OpenAI sends it (the Python SDK asks for it by default and decodes it). Token arrays are read as
OpenAI's ``cl100k_base`` tokens, which is what clients that pre-tokenise (LangChain's
``OpenAIEmbeddings``) send.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from threadline.api.chat import Observed
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import Strict
from threadline.domain.embeddings import EmbeddingService
from threadline.domain.ports.models import Usage
from threadline.errors import InvalidRequestError
from threadline.providers.tokenizers import tiktoken_encoding

router = APIRouter(route_class=CheckedRoute)


def decode_tokens(tokens: Sequence[int], position: int) -> str:
    codec = tiktoken_encoding("cl100k_base")
    try:
        return codec.decode_bytes(list(tokens)).decode("utf-8", "replace")
    except (KeyError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(
            f"input[{position}] holds token ids that are not cl100k_base tokens: {exc}", param="input"
        ) from None


class CreateEmbeddingRequest(Strict):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    input_type: Literal["query", "passage"] | None = None
    """Not OpenAI's: asymmetric models' servers take it (e5: ``query: `` or ``passage: ``)."""

    def texts(self) -> list[str]:
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(item, int) for item in value):
            return [decode_tokens(value, 0)]  # type: ignore[arg-type]
        return [item if isinstance(item, str) else decode_tokens(item, i) for i, item in enumerate(value)]  # type: ignore[arg-type]


@router.post("/embeddings")
async def create_embeddings(body: CreateEmbeddingRequest, request: Request) -> dict[str, Any]:
    observed = Observed(request, "/v1/embeddings")
    try:
        service = EmbeddingService(request.app.state.vector_stores.engine)
        embedded = await service.embed(body.texts(), body.dimensions, passages=body.input_type == "passage")
    except BaseException as exc:
        observed.failed(exc)
        raise
    observed.end(200, Usage(embedded.prompt_tokens, 0))
    data = []
    for index, vector in enumerate(embedded.vectors):
        embedding: list[float] | str = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": embedded.model,
        "usage": {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens},
    }
