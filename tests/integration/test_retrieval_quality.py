"""Retrieval quality on a small bilingual corpus: dense, keyword and fused recall@5, per half.

Forty documents (twenty topics, English and Chinese) are ingested through the real engine into the
test database, the tuning half and the held-out half (``retrieval_corpus``) each in a store of its
own; forty questions (twenty per language) each have two relevant documents, one per language, so a
method that cannot cross languages finds at most half of them. The thresholds are asserted on the
held-out half, which the ranking's weights were not chosen on; the whole corpus is searched as the
two stores at once, one ranking over both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import database_url
from tests.retrieval_corpus import (
    HELD_OUT,
    PARAPHRASES,
    TUNING,
    documents,
    half_documents,
    half_queries,
    queries,
)
from threadline.domain.ports.retrieval import RankingOptions
from threadline.providers.embeddings import E5Embedder
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.engine import RetrievalEngine
from threadline.retrieval.index import StoreIndex
from threadline.retrieval.terms import is_cjk, query_term_ids, term_counts, term_id
from threadline.store.chunks import SqlChunkIndex
from threadline.store.database import Database, migrate

HALVES = {"tuning": TUNING, "held_out": HELD_OUT}
STORES = {"tuning": "vs_tuning", "held_out": "vs_held_out"}
METHODS = ("dense", "keyword", "fused")
Ranked = dict[str, list[list[str]]]  # method -> per question, document ids best first


async def _rank(
    engine: RetrievalEngine, index: SqlChunkIndex, stores: list[str], questions: list[str]
) -> Ranked:
    ranked: Ranked = {method: [] for method in METHODS}
    for question in questions:
        vector = asyncio.to_thread(engine.embedder.embed_query, question)
        rankings = await index.search(stores, vector, query_term_ids(question), 100, is_cjk(question))
        ranked["dense"].append([rankings.chunks[k].file_id for k in rankings.dense])
        ranked["keyword"].append([rankings.chunks[k].file_id for k in rankings.keyword])
        results = await engine.search(stores, question, RankingOptions(max_num_results=5))
        ranked["fused"].append([r.file_id for r in results])
    return ranked


async def _rank_everything(url: str, embedder: E5Embedder) -> dict[str, Ranked]:
    """Rankings keyed ``<half>/<language>``, ``all/<language>`` and ``paraphrases``."""
    db = Database(url)
    index = SqlChunkIndex(db)
    engine = RetrievalEngine(index, embedder, tiktoken_encoding("cl100k_base"))
    try:
        for half, topics in HALVES.items():
            for doc_id, text in half_documents(topics):
                await engine.ingest(STORES[half], doc_id, f"{doc_id}.txt", text.encode())
        out: dict[str, Ranked] = {}
        both = list(STORES.values())
        for language in ("en", "zh"):
            for half, topics in HALVES.items():
                questions = [q for q, _ in half_queries(language, topics)]
                out[f"{half}/{language}"] = await _rank(engine, index, [STORES[half]], questions)
            out[f"all/{language}"] = await _rank(engine, index, both, [q for q, _ in queries(language)])
        out["paraphrases"] = await _rank(engine, index, both, [q for _, q in PARAPHRASES])
        return out
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def embedder() -> E5Embedder:
    return E5Embedder(threads=1)


@pytest.fixture(scope="module")
def rankings(embedder: E5Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ranked]]:
    url = database_url(tmp_path_factory.mktemp("quality"))
    migrate(url)
    yield asyncio.run(_rank_everything(url, embedder))


def recall_at(k: int, ranked: list[list[str]], wanted: list[set[str]]) -> float:
    hits = [len(set(r[:k]) & w) / len(w) for r, w in zip(ranked, wanted, strict=True)]
    return sum(hits) / len(hits)


def _table(rankings: dict[str, Ranked]) -> dict[tuple[str, str, str], float]:
    table = {}
    for part in ("tuning", "held_out", "all"):
        for language in ("en", "zh"):
            wanted = [
                r for _, r in (half_queries(language, HALVES[part]) if part != "all" else queries(language))
            ]
            for method in METHODS:
                table[part, language, method] = recall_at(5, rankings[f"{part}/{language}"][method], wanted)
    print("\nrecall@5              dense  keyword  fused")
    for part in ("tuning", "held_out", "all"):
        for language in ("en", "zh"):
            row = "  ".join(f"{table[part, language, m]:.3f}" for m in METHODS)
            print(f"  {part:8} {language} queries  {row}")
    return table


def test_fused_recall_is_at_least_the_best_single_method(rankings: dict[str, Ranked]) -> None:
    table = _table(rankings)
    for part in ("tuning", "held_out", "all"):
        for language in ("en", "zh"):
            best_single = max(table[part, language, "dense"], table[part, language, "keyword"])
            assert table[part, language, "fused"] >= best_single, (part, language, table)
            # Keywords cannot cross languages: they find at most one of the two relevant documents.
            assert table[part, language, "keyword"] <= 0.5, table
    # The goals, on the half the weights were not chosen on (measured: 1.0 and 1.0).
    assert table["held_out", "en", "fused"] >= 0.90, table
    assert table["held_out", "zh", "fused"] >= 0.85, table


def test_paraphrased_questions_find_their_topic_first(rankings: dict[str, Ranked]) -> None:
    """Eight held-out questions that say the same thing in other words, searched over the whole
    corpus: the fusion must not lose to the embeddings alone (equal-weight RRF with stop words in
    the keywords put 6 of 8 first where the embeddings alone put 8)."""
    first = {
        method: sum(
            bool(ranked) and ranked[0].split(".")[0] == topic
            for ranked, (topic, _) in zip(rankings["paraphrases"][method], PARAPHRASES, strict=True)
        )
        for method in METHODS
    }
    print(f"\nparaphrases, topic first: {first}")
    assert first["fused"] >= max(first["dense"], first["keyword"]), first
    assert first["fused"] >= 7, first


def test_questions_find_documents_in_the_other_language(rankings: dict[str, Ranked]) -> None:
    found = {}
    for language, other in (("en", "zh"), ("zh", "en")):
        found[language] = sum(
            any(doc.endswith(f".{other}") and doc in relevant for doc in ranked[:5])
            for ranked, (_, relevant) in zip(
                rankings[f"all/{language}"]["fused"], queries(language), strict=True
            )
        )
    print(f"\ncross-language in the top 5: en→zh {found['en']}/20, zh→en {found['zh']}/20")
    # Measured 20 and 19 with multilingual-e5-small (13 and 8 without the cross-script correction);
    # keywords alone find 0.
    assert found["en"] >= 18, found
    assert found["zh"] >= 17, found


def test_chinese_questions_find_chinese_documents_by_keywords(rankings: dict[str, Ranked]) -> None:
    zh_found = [
        f"{topic_docs_zh}" in ranked[:5]
        for ranked, (_, relevant) in zip(rankings["all/zh"]["keyword"], queries("zh"), strict=True)
        for topic_docs_zh in relevant
        if topic_docs_zh.endswith(".zh")
    ]
    assert sum(zh_found) >= 17, f"keywords found the Chinese document for {sum(zh_found)}/20 questions"


def test_whitespace_tokenisation_would_find_no_chinese_document() -> None:
    """The same BM25 over whitespace-split text: a Chinese sentence is one "word", so no question
    matches; this is the failure the bigrams exist to avoid."""
    docs = documents()
    whitespace = StoreIndex.build(
        list(range(len(docs))),
        [b"" for _ in docs],
        [_whitespace_counts(text).tobytes() for _, text in docs],
    )
    bigrams = StoreIndex.build(
        list(range(len(docs))), [b"" for _ in docs], [term_counts(text).tobytes() for _, text in docs]
    )

    def found(index: StoreIndex, question: str, relevant: set[str], ids: list[int]) -> bool:
        top = [docs[key][0] for _, key in index.keyword(ids, 5)]
        return any(doc in relevant and doc.endswith(".zh") for doc in top)

    zh = queries("zh")
    by_whitespace = sum(found(whitespace, q, r, sorted({term_id(w) for w in q.split()})) for q, r in zh)
    by_bigrams = sum(found(bigrams, q, r, query_term_ids(q)) for q, r in zh)
    assert by_whitespace <= 2
    assert by_bigrams >= 17


def _whitespace_counts(text: str) -> object:
    import numpy as np

    words = [term_id(w.lower()) for w in text.split()]
    ids, counts = np.unique(np.array(words, dtype=np.int32), return_counts=True)
    return np.array([ids, counts], dtype=np.int32)
