"""Fusing rankings (weighted reciprocal rank fusion); ``file_search``'s ``ranking_options`` are
``threadline.domain.ports.retrieval.RankingOptions``.

RRF scores a chunk ``sum(weight / (k + rank))`` over the rankings it appears in: it needs no
calibration between cosine similarities and BM25 scores. The weights and k were measured on the
tuning half of the quality corpus (``tests/retrieval_corpus.py``; docs/benchmarks.md): with equal
weights and k = 60 (Cormack et al. 2009) a paraphrased question's incidental keyword matches
outvoted the embeddings' right answer; the embeddings' ranking now leads (weight 1, k = 10) and
keywords (0.4) reorder what it ranks close together, the largest keyword weight that lost no
tuning question. The score reported, and compared with ``score_threshold``, is that sum divided by
its largest possible value (first in every ranking that found anything), so it lies in 0..1. All the
stores of one search are ranked together, so scores are comparable across them.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 10
DENSE_WEIGHT = 1.0
KEYWORD_WEIGHT = 0.4


def fuse(
    rankings: Sequence[Sequence[int]],
    weights: Sequence[float] = (DENSE_WEIGHT, KEYWORD_WEIGHT),
    k: int = RRF_K,
) -> list[tuple[int, float]]:
    """``(key, normalised score)`` of every key in ``rankings`` (each with its weight), best first
    (ties: earlier rankings win)."""
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    best = sum(weight / (k + 1) for ranking, weight in zip(rankings, weights, strict=True) if ranking)
    if not best:
        return []
    return sorted(((key, score / best) for key, score in scores.items()), key=lambda item: -item[1])
