"""Fusing rankings (reciprocal rank fusion); ``file_search``'s ``ranking_options`` are
``threadline.domain.ports.retrieval.RankingOptions``.

RRF scores a chunk ``sum(1 / (k + rank))`` over the rankings it appears in (k = 60, as in Cormack
et al. 2009): it needs no calibration between cosine similarities and BM25 scores. The score
reported, and compared with ``score_threshold``, is that sum divided by its largest possible value
(first in every ranking that found anything), so it lies in 0..1 and the best possible match is 1.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """``(key, normalised score)`` of every key in ``rankings``, best first (ties: earlier rankings win)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    best = sum(1.0 / (k + 1) for ranking in rankings if ranking)
    if not best:
        return []
    return sorted(((key, score / best) for key, score in scores.items()), key=lambda item: -item[1])
