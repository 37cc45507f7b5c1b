"""Embeddings for clients (``/v1/embeddings``) from the model file search embeds with.

Inputs are embedded the way search queries are, on the same path (so a request waits behind another
query, not behind a file being ingested). Token arrays are read as OpenAI's ``cl100k_base`` tokens,
which is what clients that pre-tokenise (LangChain's ``OpenAIEmbeddings``) send. ``dimensions``
shortens a vector only where the model was trained for it (Matryoshka: OpenAI's third-generation
models); other models refuse any size but their own. ``input_type: passage`` (which servers of
asymmetric models take, and Threadline sends to its own ``THREADLINE_EMBEDDINGS_BASE_URL``) embeds
texts as file search embeds what it stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from threadline.domain.vector_stores import EngineSource
from threadline.errors import InvalidRequestError
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.ports import Vector

MAX_INPUTS = 2048
"""As OpenAI: inputs in one request."""


@dataclass(frozen=True, slots=True)
class Embedded:
    model: str
    vectors: Vector
    prompt_tokens: int


def decode_tokens(tokens: Sequence[int], position: int) -> str:
    codec = tiktoken_encoding("cl100k_base")
    try:
        return codec.decode_bytes(list(tokens)).decode("utf-8", "replace")
    except (KeyError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(
            f"input[{position}] holds token ids that are not cl100k_base tokens: {exc}", param="input"
        ) from None


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
            cut = vectors[:, :dimensions]
            norms = np.linalg.norm(cut, axis=1, keepdims=True)
            vectors = (cut / np.where(norms == 0, 1, norms)).astype(np.float32)
        return Embedded(embedder.name, vectors, tokens)
