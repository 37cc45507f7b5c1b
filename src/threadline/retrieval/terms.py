"""Text to keyword terms, for BM25: lowercase words, and character bigrams for CJK runs.

Chinese and Japanese are written without spaces, so a whitespace or ``\\w+`` tokeniser makes a
whole sentence one "word" and a query finds nothing. Overlapping character bigrams need no
dictionary and match any word of two or more characters; a lone CJK character stays a unigram.
Terms are stored as 32-bit hashes, so the index needs no vocabulary table.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

import numpy as np
import numpy.typing as npt

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")


def terms(text: str) -> list[str]:
    out: list[str] = []
    for cjk, word in _TOKEN.findall(text):
        if word:
            out.append(word.lower())
        elif len(cjk) == 1:
            out.append(cjk)
        else:
            out.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return out


def term_id(term: str) -> int:
    """A term's stable 32-bit id (signed, to fit an int32 array)."""
    value = zlib.crc32(term.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value


def term_counts(text: str) -> npt.NDArray[np.int32]:
    """A chunk's terms as a ``(2, n)`` int32 array: term ids, then how often each occurs."""
    counts = Counter(term_id(t) for t in terms(text))
    return np.array([list(counts.keys()), list(counts.values())], dtype=np.int32).reshape(2, -1)


def query_term_ids(text: str) -> list[int]:
    return sorted({term_id(t) for t in terms(text)})
