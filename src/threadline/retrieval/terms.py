"""Text to keyword terms, for BM25, per script: words for alphabetic scripts, character bigrams for CJK.

Chinese and Japanese are written without spaces, so a whitespace or ``\\w+`` tokeniser makes a
whole sentence one "word" and a query finds nothing. Overlapping character bigrams need no
dictionary and match any word of two or more characters; a lone CJK character stays a unigram.
Alphabetic runs are lowercase words, without the English function words (and the few Chinese
question words) that a question is made of and that say nothing of its topic: left in, a
paraphrased question's "how", "do", "I" and "the" match every chunk and outvote, in the fusion,
what the embeddings found (docs/benchmarks.md, file search quality). Terms are stored as 32-bit
hashes, so the index needs no vocabulary table.

A chunk's terms also carry :data:`CJK_MARK` when most of its text is CJK: what script a chunk is
in, for the dense ranking's cross-language correction (``index.py``), without a column of its own.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

import numpy as np
import numpy.typing as npt

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just let
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves get got s t d ll m re ve 的 了 吗 呢 吧
    什么 怎么 怎样 为什 么会 哪个 如何 是不 不是 应该 可以 需要 多少 有什 么不""".split()  # noqa: SIM905
)
"""English function words, and Chinese particles and question-word bigrams."""

CJK_MARK = "\x00cjk"
"""A term no text produces: present in the terms of a chunk whose text is mostly CJK."""


def terms(text: str) -> list[str]:
    out: list[str] = []
    for cjk, word in _TOKEN.findall(text):
        if word:
            word = word.lower()
            if word not in STOP_WORDS:
                out.append(word)
        elif len(cjk) == 1:
            if cjk not in STOP_WORDS:
                out.append(cjk)
        else:
            out.extend(b for b in (cjk[i : i + 2] for i in range(len(cjk) - 1)) if b not in STOP_WORDS)
    return out


def is_cjk(text: str) -> bool:
    """Whether most of ``text``'s letters are CJK characters."""
    cjk = letters = 0
    for run_cjk, word in _TOKEN.findall(text):
        cjk += len(run_cjk)
        letters += len(run_cjk) + len(word)
    return cjk * 2 > letters


def term_id(term: str) -> int:
    """A term's stable 32-bit id (signed, to fit an int32 array)."""
    value = zlib.crc32(term.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value


CJK_MARK_ID = term_id(CJK_MARK)


def term_counts(text: str) -> npt.NDArray[np.int32]:
    """A chunk's terms as a ``(2, n)`` int32 array: term ids, then how often each occurs (with
    :data:`CJK_MARK` once when the chunk is mostly CJK)."""
    counts = Counter(term_id(t) for t in terms(text))
    if is_cjk(text):
        counts[CJK_MARK_ID] = 1
    return np.array([list(counts.keys()), list(counts.values())], dtype=np.int32).reshape(2, -1)


def query_term_ids(text: str) -> list[int]:
    return sorted({term_id(t) for t in terms(text)})
