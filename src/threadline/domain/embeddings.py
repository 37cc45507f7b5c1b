"""Embeddings for clients (``/v1/embeddings``) from the model file search embeds with.

Inputs are embedded the way search queries are, on the same path (so a request waits behind another
query, not behind a file being ingested); token arrays are decoded before, in ``api/embeddings.py``.
``dimensions`` shortens a vector only where the model was trained for it (Matryoshka: OpenAI's
third-generation models; the engine does the arithmetic); other models refuse any size but their
own. ``input_type: passage`` (which servers of asymmetric models take, and Threadline sends to its
own ``THREADLINE_EMBEDDINGS_BASE_URL``) embeds texts as file search embeds what it stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from threadline.domain.ports.retrieval import Vector
from threadline.domain.vector_stores import EngineSource
from threadline.errors import InvalidRequestError

MAX_INPUTS = 2048
"""As OpenAI: inputs in one request."""


@dataclass(frozen=True, slots=True)
class Embedded:
    model: str
    vectors: Vector
    prompt_tokens: int


class EmbeddingService:
    def __init__(self, engine: EngineSource) -> None:
        self.engine = engine

    async def embed(
        self, texts: list[str], dimensions: int | None = None, *, passages: bool = False
    ) -> Embedded:
        if not texts or len(texts) > MAX_INPUTS:
            raise InvalidRequestError(f"input must hold 1 to {MAX_INPUTS} items.", param="input")
        for position, text in enumerate(texts):
            if not text:
                raise InvalidRequestError(f"input[{position}] is empty.", param="input")
        engine = await self.engine()
        embedder = engine.embedder
        vectors, tokens = await engine.embed_texts(texts, passages=passages)
        size = int(vectors.shape[1])
        if dimensions is not None and dimensions != size:
            if not getattr(embedder, "matryoshka", False) or dimensions > size:
                raise InvalidRequestError(
                    f"The embedding model {embedder.name} makes vectors of {size} dimensions and cannot "
                    f"make {dimensions}"
                    + (" (it is not trained to be shortened)." if dimensions < size else "."),
                    param="dimensions",
                )
            vectors = engine.shorten(vectors, dimensions)
        return Embedded(embedder.name, vectors, tokens)
