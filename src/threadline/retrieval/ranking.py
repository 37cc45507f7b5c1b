"""Fusing rankings (reciprocal rank fusion) and the ``ranking_options`` of ``file_search``.

RRF scores a chunk ``sum(1 / (k + rank))`` over the rankings it appears in (k = 60, as in Cormack
et al. 2009): it needs no calibration between cosine similarities and BM25 scores. The score
reported, and compared with ``score_threshold``, is that sum divided by its largest possible value
(first in every ranking that found anything), so it lies in 0..1 and the best possible match is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from threadline.errors import InvalidRequestError

RRF_K = 60
MAX_NUM_RESULTS = 50
DEFAULT_NUM_RESULTS = 20


@dataclass(frozen=True, slots=True)
class RankingOptions:
    max_num_results: int = DEFAULT_NUM_RESULTS
    score_threshold: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_num_results, bool) or not 1 <= self.max_num_results <= MAX_NUM_RESULTS:
            raise InvalidRequestError(
                f"max_num_results must be between 1 and {MAX_NUM_RESULTS}, got {self.max_num_results}.",
                param="file_search.max_num_results",
            )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise InvalidRequestError(
                f"score_threshold must be between 0 and 1, got {self.score_threshold}.",
                param="file_search.ranking_options.score_threshold",
            )


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
