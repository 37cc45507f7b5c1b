"""One vector store's chunks in memory, searchable by cosine similarity and by BM25.

Vectors are one float32 matrix (a query is one matrix-vector product); keyword postings are grouped
by term id, compressed-row style (a query term is one binary search and a slice). Built from the rows the
chunk table holds, so it is a cache: ``store/chunks.py`` rebuilds it when the store changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from threadline.domain.ports.retrieval import Vector
from threadline.retrieval.terms import CJK_MARK_ID

# BM25's usual constants (Robertson & Zaragoza).
K1 = 1.2
B = 0.75
MIN_IDF = 0.05
"""Terms in nearly every chunk (idf under this) are skipped: they cannot change the ranking much
and their posting lists are the longest."""
KEYWORD_FLOOR = 0.5
"""Keyword hits scoring under this fraction of the best one are not ranked. In a store where most
chunks share some common word with the question, such weak matches would otherwise outvote, in
the fusion, a chunk that only the embeddings found (the same content in another language)."""
CROSS_SCRIPT_BONUS = 0.063
"""Added to the cosine of a chunk whose script (CJK or not) differs from the query's. e5 scores any
text in the query's own language higher than text in another: on the tuning half of the quality
corpus the gap between unrelated chunks of the two languages averaged 0.063 (sd 0.02), enough that a
Chinese question's English answer ranked below unrelated Chinese chunks (docs/benchmarks.md)."""


@dataclass(frozen=True, slots=True)
class StoreIndex:
    keys: npt.NDArray[np.int64]
    vectors: Vector
    vocabulary: npt.NDArray[np.int32]
    """The store's distinct term ids, sorted; term ``vocabulary[i]``'s postings are
    ``post_docs[offsets[i]:offsets[i + 1]]`` (chunk positions) and ``post_weight[...]``."""
    offsets: npt.NDArray[np.int64]
    post_docs: npt.NDArray[np.int32]
    post_weight: npt.NDArray[np.float16]
    """BM25's term-frequency part, ``tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))``: it does not
    depend on the query, so it is computed once (half precision is plenty for ranking)."""
    cjk: npt.NDArray[np.bool_]
    """Whether each chunk is mostly CJK text (``terms.CJK_MARK`` among its terms)."""

    @classmethod
    def build(cls, keys: Sequence[int], vectors: Sequence[bytes], terms: Sequence[bytes]) -> StoreIndex:
        """From each chunk's key, vector (float32 bytes) and terms (``terms.term_counts`` bytes)."""
        n = len(keys)
        matrix = np.frombuffer(b"".join(vectors), dtype=np.float32)
        matrix = matrix.reshape(n, -1) if n else np.zeros((0, 0), np.float32)
        per_chunk = [np.frombuffer(t, dtype=np.int32).reshape(2, -1) for t in terms]
        lengths = np.array([p.shape[1] for p in per_chunk], dtype=np.int64)
        joined = np.concatenate(per_chunk, axis=1) if n and lengths.sum() else np.zeros((2, 0), np.int32)
        docs = np.repeat(np.arange(n, dtype=np.int32), lengths)
        doc_len = np.bincount(docs, weights=joined[1], minlength=n).astype(np.float32)
        avgdl = float(doc_len.mean()) if n and doc_len.any() else 1.0
        tf = joined[1].astype(np.float32)
        weight = tf * (K1 + 1) / (tf + K1 * (1 - B + B * doc_len[docs] / avgdl))
        order = np.argsort(joined[0], kind="stable")
        sorted_terms = joined[0][order]
        vocabulary, starts = np.unique(sorted_terms, return_index=True)
        cjk = np.zeros(n, np.bool_)
        cjk[docs[joined[0] == CJK_MARK_ID]] = True
        return cls(
            keys=np.asarray(keys, dtype=np.int64),
            vectors=matrix,
            vocabulary=vocabulary.astype(np.int32),
            offsets=np.append(starts, len(sorted_terms)).astype(np.int64),
            post_docs=docs[order],
            post_weight=weight[order].astype(np.float16),
            cjk=cjk,
        )

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (
                self.keys,
                self.vectors,
                self.vocabulary,
                self.offsets,
                self.post_docs,
                self.post_weight,
                self.cjk,
            )
        )

    def dense(self, query: Vector, depth: int, query_cjk: bool = False) -> list[tuple[float, int]]:
        """``(cosine, key)`` of the ``depth`` nearest chunks (vectors are normalised), the cosine of
        chunks in the other script than the query's raised by ``CROSS_SCRIPT_BONUS``."""
        if not self.size:
            return []
        if self.vectors.shape[1] != query.shape[0]:
            raise ValueError(
                f"the store's vectors have {self.vectors.shape[1]} dimensions and the query {query.shape[0]}: "
                "its files were embedded by another model; re-add them"
            )
        # BLAS's matrix-vector product (100k chunks on 2 cores: 6 ms idle, 17 ms with both cores
        # busy elsewhere; einsum's single-threaded loop: 18 and 30 ms). The query is embedded before
        # this runs, so BLAS's threads do not compete with the embedding's.
        scores = self.vectors @ query
        scores[self.cjk != query_cjk] += CROSS_SCRIPT_BONUS
        return _top(scores, self.keys, depth)

    def keyword(self, query_terms: Sequence[int], depth: int) -> list[tuple[float, int]]:
        """``(BM25, key)`` of the ``depth`` best chunks matching any of the query's terms (``merge``
        drops the weak ones, over all the stores searched)."""
        n = self.size
        if not n or not query_terms:
            return []
        scores = np.zeros(n, np.float32)
        for term in query_terms:
            i = int(np.searchsorted(self.vocabulary, term))
            if i == len(self.vocabulary) or self.vocabulary[i] != term:
                continue
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            df = hi - lo
            idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
            if idf < MIN_IDF:
                continue
            # Each chunk appears once per term, so fancy-index addition adds each posting once.
            scores[self.post_docs[lo:hi]] += idf * self.post_weight[lo:hi]
        hits = np.flatnonzero(scores > 0)
        return _top(scores[hits], self.keys[hits], depth)


def _top(scores: npt.NDArray[np.float32], keys: npt.NDArray[np.int64], depth: int) -> list[tuple[float, int]]:
    part = np.argpartition(-scores, depth - 1)[:depth] if len(scores) > depth else np.arange(len(scores))
    ordered = part[np.argsort(-scores[part], kind="stable")]
    return [(float(scores[i]), int(keys[i])) for i in ordered]


def rescore(hits: list[tuple[float, int]], cjk_keys: npt.NDArray[np.int64], query_cjk: bool) -> list[int]:
    """Keys of ``hits`` (cosine, key) ranked elsewhere (pgvector), re-ranked with the cross-script
    bonus; ``cjk_keys`` are the keys of the stores' CJK chunks."""
    keys = np.array([key for _, key in hits], dtype=np.int64)
    scores = np.array([score for score, _ in hits], dtype=np.float32)
    scores[np.isin(keys, cjk_keys) != query_cjk] += CROSS_SCRIPT_BONUS
    return [int(keys[i]) for i in np.argsort(-scores, kind="stable")]


def merge(per_store: Sequence[list[tuple[float, int]]], depth: int, floor: float = 0.0) -> list[int]:
    """Keys of several stores' rankings by one method, best first, none scoring under ``floor``
    times the best of them all."""
    merged = sorted((hit for ranking in per_store for hit in ranking), key=lambda hit: -hit[0])
    if floor and merged:
        least = merged[0][0] * floor
        merged = [hit for hit in merged if hit[0] >= least]
    return [key for _, key in merged[:depth]]
