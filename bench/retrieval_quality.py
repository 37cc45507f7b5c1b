"""File search quality and ingestion rate, each side by side in one process run.

``python -m bench.retrieval_quality`` (about 20 minutes on two busy cores) measures, with the embedded
multilingual-e5-small, each chunk embedded whole (``THREADLINE_INGEST_PASSAGES=chunks``) beside
pieces (the default: the file cut at every chunk edge, each piece embedded once, a chunk the
token-weighted mean of its pieces' vectors) and, for comparison, the retired first window:

1. **Quality** on the shipped bilingual corpus (``tests/retrieval_corpus.py``): recall@5 of dense,
   keywords and fused, per language, on the tuning half (what the fusion's weights were chosen on),
   the held-out half and the whole corpus; and which topic comes first for the eight held-out
   paraphrased questions. Two configurations, ranked over the same embeddings: *before* (keywords
   with stop words, equal-weight RRF at k = 60, raw cosine) and *after* (this release's ranking).
   Its documents are one chunk each at 800/400 (whole chunks and pieces alike), so the same corpus
   is also cut into ``--chunk-tokens`` chunks overlapping by half: fused recall@5 and paraphrases,
   whole chunks beside pieces.
2. **Pieces per chunk**: known-item recall (a sentence of the file as the question; found when a
   chunk holding it is among the first five by cosine) on this repository's README, chunked 800/400,
   each chunk embedded whole (two e5 windows), as its first window, or as pieces.
3. **Ingestion rate** of mixed English and Chinese text (800/400), parse to vectors, CPU seconds per
   chunk and chunks per second, the ways alternating round by round: whole chunks on one thread,
   whole chunks on a copy of the model per core (before), first windows and pieces on a copy per
   core; and the chunks per second idle cores would give (cores used ÷ CPU seconds per chunk),
   since the wall time follows the machine's load.

It prints markdown and replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
from tests.retrieval_corpus import HELD_OUT, PARAPHRASES, TUNING, documents, queries

from bench.common import ROOT, log, machine, markdown_table, publish, today
from threadline.domain.ports.retrieval import ChunkingStrategy, Vector
from threadline.providers.embeddings import E5Embedder
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.chunking import AUTO, Chunk, TokenCodec, split_text
from threadline.retrieval.engine import EmbeddingPlan, combine, embed_plan, embedding_plan, prepare_file
from threadline.retrieval.index import CROSS_SCRIPT_BONUS, KEYWORD_FLOOR, StoreIndex, merge
from threadline.retrieval.parsing import ParseLimits, parse
from threadline.retrieval.ranking import fuse
from threadline.retrieval.terms import is_cjk, query_term_ids, term_counts, term_id

SECTION = "## File search: quality by corpus half, pieces per chunk, ingestion rate"
_TOKEN = re.compile(
    r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+)|([^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+)"
)
METHODS = ("dense", "keyword", "fused")


def old_terms(text: str) -> list[str]:
    """The release before's keyword terms: every word (stop words too), CJK bigrams."""
    out: list[str] = []
    for cjk, word in _TOKEN.findall(text):
        if word:
            out.append(word.lower())
        elif len(cjk) == 1:
            out.append(cjk)
        else:
            out.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return out


def old_counts(text: str) -> npt.NDArray[np.int32]:
    counts = Counter(term_id(t) for t in old_terms(text))
    return np.array([list(counts), list(counts.values())], dtype=np.int32).reshape(2, -1)


class Config:
    def __init__(
        self,
        name: str,
        counts: Callable[[str], npt.NDArray[np.int32]],
        query_ids: Callable[[str], list[int]],
        bonus: float,
        weights: tuple[float, float],
        k: int,
    ) -> None:
        self.name, self.counts, self.query_ids, self.bonus, self.weights, self.k = (
            name,
            counts,
            query_ids,
            bonus,
            weights,
            k,
        )


BEFORE = Config(
    "before", old_counts, lambda q: sorted({term_id(t) for t in old_terms(q)}), 0.0, (1.0, 1.0), 60
)
AFTER = Config("after", term_counts, query_term_ids, CROSS_SCRIPT_BONUS, (1.0, 0.4), 10)


def rank(
    config: Config,
    ids: list[str],
    vectors: Vector,
    index: StoreIndex,
    cjk: npt.NDArray[np.bool_],
    question: str,
    vector: Vector,
) -> dict[str, list[str]]:
    scores = vectors @ vector + config.bonus * (cjk != is_cjk(question))
    dense = [int(i) for i in np.argsort(-scores, kind="stable")]
    keyword = merge([index.keyword(config.query_ids(question), 100)], 100, KEYWORD_FLOOR)
    fused = [key for key, _ in fuse([dense, keyword], config.weights, config.k)]
    return {
        "dense": [ids[i] for i in dense],
        "keyword": [ids[i] for i in keyword],
        "fused": [ids[i] for i in fused],
    }


def quality(embedder: E5Embedder) -> str:
    docs = documents()
    log("quality: embedding the corpus and the questions...")
    doc_vectors = embedder.embed_passages([text for _, text in docs])
    questions = {lang: queries(lang) for lang in ("en", "zh")}
    q_vectors = {lang: [embedder.embed_query(q) for q, _ in qs] for lang, qs in questions.items()}
    p_vectors = [embedder.embed_query(q) for _, q in PARAPHRASES]
    parts = {"tuning": TUNING, "held-out": HELD_OUT, "whole": TUNING | HELD_OUT}
    recall: dict[tuple[str, str, str, str], float] = {}
    first: dict[tuple[str, str], int] = {}
    for config in (BEFORE, AFTER):
        for part, topics in parts.items():
            rows = [i for i, (d, _) in enumerate(docs) if d.split(".")[0] in topics]
            ids = [docs[i][0] for i in rows]
            index = StoreIndex.build(
                list(range(len(rows))),
                [doc_vectors[i].tobytes() for i in rows],
                [config.counts(docs[i][1]).tobytes() for i in rows],
            )
            vectors = doc_vectors[rows]
            cjk = np.array([is_cjk(docs[i][1]) for i in rows])
            for lang, qs in questions.items():
                found: dict[str, list[float]] = {m: [] for m in METHODS}
                for (question, relevant), vector in zip(qs, q_vectors[lang], strict=True):
                    if next(iter(relevant)).split(".")[0] not in topics:
                        continue
                    ranked = rank(config, ids, vectors, index, cjk, question, vector)
                    for m in METHODS:
                        found[m].append(len(set(ranked[m][:5]) & relevant) / len(relevant))
                for m in METHODS:
                    recall[config.name, part, lang, m] = sum(found[m]) / len(found[m])
            if part == "whole":
                for m in METHODS:
                    first[config.name, m] = sum(
                        rank(config, ids, vectors, index, cjk, q, v)[m][0].split(".")[0] == topic
                        for (topic, q), v in zip(PARAPHRASES, p_vectors, strict=True)
                    )
    rows_out = []
    for part in parts:
        for lang in ("en", "zh"):
            cells = [f"{recall[c, part, lang, m]:.3f}" for c in ("before", "after") for m in METHODS]
            after_best = max(recall["after", part, lang, "dense"], recall["after", part, lang, "keyword"])
            ok = "yes" if recall["after", part, lang, "fused"] >= after_best else "**no**"
            rows_out.append((part, "English" if lang == "en" else "Chinese", *cells, ok))
    head = (
        "half",
        "questions",
        *(f"{c}: {m}" for c in ("before", "after") for m in METHODS),
        "after: fused ≥ best single",
    )
    table = markdown_table(head, rows_out)
    para = markdown_table(
        ("held-out paraphrases, topic first (of 8), whole corpus", *METHODS),
        [(c, *(str(first[c, m]) for m in METHODS)) for c in ("before", "after")],
    )
    return f"{table}\n\n{para}"


PASSAGE_MODES = (("whole chunks", "chunks"), ("pieces", "pieces"))


def embed_chunked(
    embedder: E5Embedder, texts: Sequence[str], strategy: ChunkingStrategy, passages: str
) -> tuple[list[int], Vector]:
    """Each text chunked with ``strategy`` and embedded as ``passages`` says: the text each chunk
    came from, and the chunks' vectors."""
    codec = tiktoken_encoding("cl100k_base")
    owners: list[int] = []
    rows: list[Vector] = []
    for t, text in enumerate(texts):
        chunks, pieces = split_text(text, strategy, codec)
        plan = embedding_plan(chunks, pieces, passages, embedder)
        vectors = embed_plan(plan, [embedder])
        owners.extend(t for _ in chunks)
        rows.extend(combine(vectors, parts) for parts in plan.parts)
    return owners, np.stack(rows)


def quality_chunked(embedder: E5Embedder, size: int) -> str:
    """The corpus's documents (29 to 80 tokens) cut into chunks of ``size`` tokens overlapping by
    half, embedded whole or as pieces; a document ranks at its best chunk."""
    strategy = cast(
        ChunkingStrategy, argparse.Namespace(max_chunk_size_tokens=size, chunk_overlap_tokens=size // 2)
    )
    docs = documents()
    questions = {lang: queries(lang) for lang in ("en", "zh")}
    q_vectors = {lang: [embedder.embed_query(q) for q, _ in qs] for lang, qs in questions.items()}
    p_vectors = [embedder.embed_query(q) for _, q in PARAPHRASES]
    out = []
    for name, passages in PASSAGE_MODES:
        log(f"quality, {size}/{size // 2} chunks: {name}...")
        owners, vectors = embed_chunked(embedder, [text for _, text in docs], strategy, passages)
        codec = tiktoken_encoding("cl100k_base")
        texts = [c.text for _, text in docs for c in split_text(text, strategy, codec)[0]]
        cells = []
        for part, topics in (("held-out", HELD_OUT), ("whole", TUNING | HELD_OUT)):
            rows = [i for i, o in enumerate(owners) if docs[o][0].split(".")[0] in topics]
            ids = [docs[owners[i]][0] for i in rows]
            index = StoreIndex.build(
                list(range(len(rows))),
                [vectors[i].tobytes() for i in rows],
                [AFTER.counts(texts[i]).tobytes() for i in rows],
            )
            cjk = np.array([is_cjk(texts[i]) for i in rows])
            for lang, qs in questions.items():
                found = []
                for (question, relevant), vector in zip(qs, q_vectors[lang], strict=True):
                    if next(iter(relevant)).split(".")[0] not in topics:
                        continue
                    ranked = _distinct(rank(AFTER, ids, vectors[rows], index, cjk, question, vector)["fused"])
                    found.append(len(set(ranked[:5]) & relevant) / len(relevant))
                cells.append(f"{sum(found) / len(found):.3f}")
            if part == "whole":
                first = sum(
                    rank(AFTER, ids, vectors[rows], index, cjk, q, v)["fused"][0].split(".")[0] == topic
                    for (topic, q), v in zip(PARAPHRASES, p_vectors, strict=True)
                )
        out.append((name, str(len(owners)), *cells, str(first)))
    return markdown_table(
        (
            f"chunks ({size}/{size // 2}) embedded as",
            "chunks",
            "held-out: English",
            "held-out: Chinese",
            "whole: English",
            "whole: Chinese",
            "paraphrases first (of 8)",
        ),
        out,
    )


def _distinct(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def first_window(embedder: E5Embedder, text: str) -> str:
    """The longest beginning of ``text`` (cut between words where it can) that e5 reads as a
    passage in one window of 512 tokens."""
    if embedder._model.token_count(text, False) <= 512:
        return text
    lo, hi = 0, len(text)  # text[:lo] fits, text[:hi + 1] does not
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if embedder._model.token_count(text[:mid], False) <= 512:
            lo = mid
        else:
            hi = mid
    space = text.rfind(" ", 0, lo)
    return text[: space if space > lo - 64 else lo]


def first_windows(chunks: Sequence[Chunk], codec: TokenCodec, embedder: E5Embedder) -> list[str]:
    """The opt-in this release retires (``THREADLINE_INGEST_FIRST_WINDOW``), for comparison: each
    chunk but the last cut to e5's first window where the rest is the next chunk's beginning."""
    step = AUTO.max_chunk_size_tokens - AUTO.chunk_overlap_tokens
    texts = [c.text for c in chunks]
    for i, chunk in enumerate(chunks[:-1]):
        head = first_window(embedder, chunk.text)
        if head != chunk.text and len(codec.encode(head, disallowed_special=())) >= step:
            texts[i] = head
    return texts


def readme_sentences(text: str, count: int) -> list[str]:
    sentences = [
        s.strip()
        for s in re.split(r"(?<=[.!?])\s+", text)
        if 60 <= len(s.strip()) <= 220 and "|" not in s and "`" not in s
    ]
    step = max(1, len(sentences) // count)
    return sentences[::step][:count]


def one_window(embedder: E5Embedder, max_tokens: int, questions: int) -> str:
    codec = tiktoken_encoding("cl100k_base")
    text = (ROOT / "README.md").read_text()
    tokens = codec.encode(text, disallowed_special=())[:max_tokens]
    text = codec.decode(tokens)
    chunks, pieces = split_text(text, AUTO, codec)
    asked = [s for s in readme_sentences(text, questions * 2) if any(s in c.text for c in chunks)][:questions]
    log(f"one window: {len(chunks)} chunks, {len(pieces.texts)} pieces, {len(asked)} questions...")
    q_vectors = np.stack([embedder.embed_query(q) for q in asked])
    rows = []
    for name, passages in (
        ("whole chunk (two e5 windows)", "chunks"),
        ("first window (`first_window`)", "first_window"),
        ("pieces between chunk edges (`pieces`)", "pieces"),
    ):
        if passages == "first_window":
            plan = EmbeddingPlan(
                first_windows(chunks, codec, embedder), [[(i, 1.0)] for i in range(len(chunks))]
            )
        else:
            plan = embedding_plan(chunks, pieces, passages, embedder)
        started, cpu = time.perf_counter(), time.process_time()
        embedded = embed_plan(plan, [embedder])
        vectors = np.stack([combine(embedded, parts) for parts in plan.parts])
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        found = []
        for question, vector in zip(asked, q_vectors, strict=True):
            top = np.argsort(-(vectors @ vector), kind="stable")[:5]
            found.append(any(question in chunks[i].text for i in top))
        windows = sum(-(-embedder._model.token_count(p, False) // 512) for p in plan.texts)
        rows.append(
            (
                name,
                str(len(plan.texts)),
                str(windows),
                f"{sum(found) / len(found):.3f}",
                f"{cpu_seconds / len(chunks):.2f}",
                f"{len(chunks) / seconds:.2f}",
            )
        )
    return markdown_table(
        (
            "chunks embedded as",
            "texts embedded",
            "e5 windows",
            f"known-item recall@5 ({len(asked)} sentences)",
            "CPU s per chunk",
            "chunks/s (wall)",
        ),
        rows,
    )


def mixed_text(rng: random.Random, sentences: int) -> bytes:
    pool = [text for _, text in documents()]
    return "\n".join(rng.choice(pool) for _ in range(sentences)).encode()


def prepare(
    filename: str, data: bytes, codec: TokenCodec, embedders: list[E5Embedder], passages: str
) -> list[Vector]:
    """A file's chunks' vectors, parse to vectors, as ingestion makes them (first windows as the
    retired opt-in made them)."""
    if passages != "first_window":
        prepared = prepare_file(filename, data, AUTO, codec, embedders, ParseLimits(), passages=passages)
        return [c.vector for c in prepared.chunks]
    chunks, _ = split_text(parse(filename, data, ParseLimits()), AUTO, codec)
    plan = EmbeddingPlan(first_windows(chunks, codec, embedders[0]), [[(i, 1.0)] for i in range(len(chunks))])
    vectors = embed_plan(plan, embedders)
    for chunk in chunks:
        term_counts(chunk.text)
    return [combine(vectors, parts) for parts in plan.parts]


def rates(files: int, copies: int, rounds: int, sentences: int = 150) -> str:
    codec = tiktoken_encoding("cl100k_base")
    rng = random.Random(1)
    data = [mixed_text(rng, sentences) for _ in range(files)]

    sample = [text for _, text in documents()[:4]]
    models = [E5Embedder(1)]
    models[0].embed_passages(sample)
    before_rss = _rss_mb()
    for _ in range(copies - 1):
        models.append(E5Embedder(1))
        models[-1].embed_passages(sample)  # its weights and buffers in use
    per_copy = (_rss_mb() - before_rss) / max(1, copies - 1)
    runs = (
        ("whole chunks, 1 thread", [models[0]], "chunks"),
        (f"whole chunks, {copies} copies of the model (before)", models, "chunks"),
        (f"first window, {copies} copies (`first_window`)", models, "first_window"),
        (f"pieces, {copies} copies (`pieces`, after)", models, "pieces"),
    )
    measured: dict[str, list[tuple[int, float, float, float]]] = {name: [] for name, _, _ in runs}
    for round_ in range(rounds):  # the ways alternate, so that each sees the same load
        for name, embedders, passages in runs:
            log(f"rate, round {round_ + 1}: {name}...")
            started, cpu = time.perf_counter(), _cpu()
            chunks = sum(
                len(prepare(f"doc{i}.txt", d, codec, embedders, passages)) for i, d in enumerate(data)
            )
            measured[name].append((chunks, time.perf_counter() - started, _cpu() - cpu, os.getloadavg()[0]))
    rows = []
    for name, embedders, _ in runs:
        chunks = measured[name][0][0]
        wall = statistics.median(chunks / m[1] for m in measured[name])
        per_chunk = statistics.median(m[2] / chunks for m in measured[name])
        rows.append(
            (
                name,
                str(chunks),
                f"{wall:.2f}",
                f"{per_chunk:.2f}",
                " / ".join(f"{m[2] / chunks:.2f}" for m in measured[name]),
                f"**{min(len(embedders), 2) / per_chunk:.2f}**",
                " / ".join(f"{m[3]:.1f}" for m in measured[name]),
            )
        )
    table = markdown_table(
        (
            "embedding",
            "chunks",
            "chunks/s (wall), median",
            "CPU s per chunk, median",
            "CPU s per chunk, each round",
            "chunks/s on idle cores (cores used ÷ CPU s per chunk)",
            "load average after each round",
        ),
        rows,
    )
    return f"{table}\n\nResident memory per extra copy of the model: {per_copy:.0f} MB (peak of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)."


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retrieval_quality", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--files", type=int, default=2, help="files of mixed text in the rate part")
    parser.add_argument(
        "--copies", type=int, default=len(os.sched_getaffinity(0)), help="copies of the model for 'after'"
    )
    parser.add_argument("--readme-tokens", type=int, default=12_000)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument(
        "--sentences", type=int, default=150, help="corpus documents per file in the rate part"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the rate part")
    parser.add_argument("--chunk-tokens", type=int, default=32, help="chunk size for the chunked corpus")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: quality, chunked, window, rate"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    measured = machine()
    embedder = E5Embedder(1)
    skip = set(args.skip.split(","))
    quality_tables = quality(embedder) if "quality" not in skip else "(skipped)"
    chunked_table = quality_chunked(embedder, args.chunk_tokens) if "chunked" not in skip else "(skipped)"
    window_table = (
        one_window(embedder, args.readme_tokens, args.questions) if "window" not in skip else "(skipped)"
    )
    rate_table = (
        rates(args.files, args.copies, args.rounds, args.sentences) if "rate" not in skip else "(skipped)"
    )
    body = f"""Measured {today()} on {measured}; `python -m bench.retrieval_quality`.

**Quality**, recall@5 on the shipped corpus (`tests/retrieval_corpus.py`: twenty topics, a document
and a question in each language, every question with one relevant document per language), per half:
the ranking's weights were chosen on the tuning half only; the held-out half is where the goals are
asserted (`tests/integration/test_retrieval_quality.py`). Before: keywords with stop words, RRF k = 60 with equal
weights, raw cosine. After: keywords without stop words, the cross-script correction of the cosine
(+{CROSS_SCRIPT_BONUS} for a chunk in the other script than the question), RRF k = 10 with keywords
weighted 0.4. Same embeddings on both sides.

{quality_tables}

Those documents are one chunk each at 800/400, so whole chunks and pieces embed them alike. **The
same corpus cut small** ({args.chunk_tokens}-token chunks overlapping by half, so that a document is
two to four chunks and its pieces are {args.chunk_tokens // 2} tokens: a harder case for pieces than
400-token pieces), fused recall@5 (a document ranks at its best chunk) and paraphrases:

{chunked_table}

**Pieces per chunk** (known-item questions on the first {args.readme_tokens:,} tokens of the README,
800/400 chunks):

{window_table}

**Ingestion rate** of {args.files} files of mixed English and Chinese text, 800/400, parse to vectors:

{rate_table}
"""
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
