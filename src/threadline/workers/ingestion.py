"""Ingestion in bounded, stoppable, fairly shared child processes: the server side.

A file for file search is parsed, chunked and embedded in a child process of its own
(:mod:`threadline.workers.ingest_process`), never in the server: a hostile file (a zip bomb, HTML
that makes a parser quadratic, JSON nested a million deep) can only exhaust the child's limits —
address space (``THREADLINE_INGEST_MEMORY_MB``), CPU time (``THREADLINE_INGEST_CPU_SECONDS``) and
wall time (``THREADLINE_INGEST_TIMEOUT_SECONDS``) — and ends ``failed`` with ``invalid_file`` naming
the limit. Its memory goes back to the system when it exits, and the server's embedding model
serves only queries, so searches never queue behind another project's files.

At most ``THREADLINE_INGEST_PROCESSES`` children run at once per worker; the others wait at a
:class:`FairGate`, which lets the project with the fewest files in progress go next, so one
project's hundred files do not starve another's one. Cancelling :meth:`IngestionProcesses.prepare`
(the file was deleted, its job lost, the server is stopping) kills the child at once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from threadline.config import Settings
from threadline.domain.ports.retrieval import (
    ChunkingStrategy,
    IndexedChunk,
    PreparationFailed,
    PreparedFile,
    Progress,
)
from threadline.errors import FileContentError, ServiceUnavailableError
from threadline.providers.model_host import describe_exit
from threadline.retrieval.engine import PASSAGES
from threadline.retrieval.parsing import ParseLimits

log = logging.getLogger(__name__)

STDERR_LINES = 20
TEXT_START_SECONDS = 10.0
"""Wall time a child reading an ``input_file`` has beyond the parse limit, to start."""
LINE_LIMIT = 64 * 1024 * 1024
"""The longest line the child may send (one chunk of at most 4096 tokens, with its vector)."""


class FairGate:
    """At most ``size`` holders at once; when one leaves, the waiting key with the fewest holders goes
    next, and among those the one served least recently (round-robin). Keys are projects."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.holding: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, collections.deque[tuple[int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()
        self.served: dict[str, int] = {}
        """When each key was last given a slot (a tick of ``_order``)."""

    @property
    def held(self) -> int:
        return sum(self.holding.values())

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        if self.held < self.size and not self.waiting:
            self._give(key)
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.setdefault(key, collections.deque()).append((next(self._order), turn))
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._leave(key)  # handed the slot as it was cancelled: pass it on
                else:
                    self._forget(key, turn)
                raise
        try:
            yield
        finally:
            self._leave(key)

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self.waiting.get(key)
        if queue is not None:
            for item in list(queue):
                if item[1] is turn:
                    queue.remove(item)
            if not queue:
                del self.waiting[key]

    def _leave(self, key: str) -> None:
        self.holding[key] -= 1
        if self.holding[key] <= 0:
            del self.holding[key]
        while self.held < self.size and self.waiting:
            key = min(self.waiting, key=lambda k: (self.holding[k], self.served.get(k, -1)))
            queue = self.waiting[key]
            _, turn = queue.popleft()
            if not queue:
                del self.waiting[key]
            self._give(key)
            turn.set_result(None)

    def _give(self, key: str) -> None:
        self.holding[key] += 1
        self.served[key] = next(self._order)


class IngestionProcesses:
    """The :class:`~threadline.domain.ports.retrieval.ChunkPreparer` of a worker: a child process per file."""

    def __init__(self, settings: Settings) -> None:
        if settings.ingest_passages not in PASSAGES:
            expected = ", ".join(repr(p) for p in PASSAGES)
            raise ValueError(
                f"THREADLINE_INGEST_PASSAGES: expected {expected}, got {settings.ingest_passages!r}"
            )
        self.settings = settings
        self.limits = ParseLimits.from_settings(settings)
        self.gate = FairGate(settings.ingest_processes)
        self.readers = FairGate(max(2, settings.ingest_processes))
        """Slots for ``input_file`` parts: a request's file never waits behind a vector store's."""
        self.pids: set[int] = set()
        """The children alive now (tests and metrics look)."""

    async def prepare(
        self,
        key: str,
        filename: str,
        data: bytes,
        strategy: ChunkingStrategy,
        progress: Progress | None = None,
    ) -> PreparedFile:
        async with self.gate.slot(key):
            prepared = await self._run(filename, data, self._request(filename, data, strategy), progress)
        assert isinstance(prepared, PreparedFile)
        return prepared

    async def extract_text(self, key: str, filename: str, data: bytes, max_characters: int) -> str:
        """The text of an ``input_file`` part (the domain's ``TextExtractor``): parsed in a child
        process under the same limits as a vector store's file, its characters held to
        ``max_characters``."""
        request = {
            "mode": "text",
            "filename": filename,
            "size": len(data),
            "limits": dataclasses.asdict(self.limits.for_input(max_characters)),
            "memory_mb": self.settings.ingest_memory_mb,
            "cpu_seconds": self.settings.ingest_cpu_seconds,
        }
        async with self.readers.slot(key):
            try:
                text = await self._run(filename, data, request)
            except PreparationFailed as exc:  # its process died: of the file, as far as the client can tell
                raise FileContentError(exc.message, code="invalid_file") from None
        assert isinstance(text, str)
        return text

    def _request(self, filename: str, data: bytes, strategy: ChunkingStrategy) -> dict[str, Any]:
        s = self.settings
        return {
            "filename": filename,
            "size": len(data),
            "strategy": [strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens],
            "limits": dataclasses.asdict(self.limits),
            "memory_mb": s.ingest_memory_mb,
            "cpu_seconds": s.ingest_cpu_seconds,
            "embedder": {
                "embeddings_base_url": s.embeddings_base_url,
                "embeddings_model": s.embeddings_model,
                "embeddings_api_key": s.embeddings_api_key,
            },
            "embedders": self.embedders,
            "passages": s.ingest_passages,
        }

    @property
    def embedders(self) -> int:
        """Copies of the embedding model one child embeds with, a thread each:
        ``THREADLINE_INGEST_THREADS``, or the cores shared between the children that may run at once."""
        if self.settings.ingest_threads > 0:
            return self.settings.ingest_threads
        return max(1, len(os.sched_getaffinity(0)) // max(1, self.settings.ingest_processes))

    async def _run(
        self, filename: str, data: bytes, request: dict[str, Any], progress: Progress | None = None
    ) -> PreparedFile | str:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MALLOC_ARENA_MAX": "2",  # glibc's per-thread arenas would spend the address space
            "OMP_NUM_THREADS": "1",  # a copy of the model per thread (``embedders``)
            "OPENBLAS_NUM_THREADS": "1",  # numpy's BLAS is not what embeds: its buffers cost memory
        }
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "threadline.workers.ingest_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
                env=env,
            )
        except OSError as exc:
            raise ServiceUnavailableError(f"Could not start a process to index {filename}: {exc}") from exc
        self.pids.add(process.pid)
        stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        reading = asyncio.ensure_future(self._drain(process, stderr))
        # A request's file is only parsed, while its client waits: the parse limit plus start-up.
        text_mode = request.get("mode") == "text"
        limit, setting = (
            (self.settings.file_parse_timeout_seconds, "FILE_PARSE_TIMEOUT_SECONDS")
            if text_mode
            else (self.settings.ingest_timeout_seconds, "INGEST_TIMEOUT_SECONDS")
        )
        wall = limit + TEXT_START_SECONDS if text_mode else limit
        try:
            return await asyncio.wait_for(
                self._talk(process, filename, data, request, stderr, progress), wall
            )
        except TimeoutError:
            raise FileContentError(
                f"The file {filename} cannot be {_use(request)}: {_doing(request)} it took longer than"
                f" {limit:g} s (THREADLINE_{setting}).",
                code="invalid_file",
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            # Reaped even if we are being cancelled: no zombie, and its pid is gone when we return.
            await asyncio.shield(process.wait())
            self.pids.discard(process.pid)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    @staticmethod
    async def _drain(process: asyncio.subprocess.Process, stderr: collections.deque[str]) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                stderr.append(text)

    async def _talk(
        self,
        process: asyncio.subprocess.Process,
        filename: str,
        data: bytes,
        request: dict[str, Any],
        stderr: collections.deque[str],
        progress: Progress | None,
    ) -> PreparedFile | str:
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.write(data)
            await process.stdin.drain()
            process.stdin.close()
        chunks: list[IndexedChunk] = []
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "chunk" in message:
                chunks.append(_chunk(message["chunk"]))
            elif "progress" in message:
                if progress is not None:
                    progress(int(message["progress"]["done"]), int(message["progress"]["total"]))
            elif "text" in message:
                return str(message["text"])
            elif "done" in message:
                done = message["done"]
                return PreparedFile(chunks, int(done["tokens"]), int(done["characters"]))
            elif "error" in message:
                code = str(message.get("code") or "invalid_file")
                if code == "transient":
                    raise ServiceUnavailableError(str(message["error"]))
                raise FileContentError(str(message["error"]), code=code)
        returncode = await process.wait()
        raise self._death(filename, returncode, stderr, request)

    def _death(
        self, filename: str, returncode: int, stderr: collections.deque[str], request: dict[str, Any]
    ) -> Exception:
        """Why the child ended without an answer, as the error its file ends ``failed`` with."""
        s = self.settings
        if returncode == -signal.SIGXCPU:
            return FileContentError(
                f"The file {filename} cannot be {_use(request)}: {_doing(request)} it used more than"
                f" {s.ingest_cpu_seconds} s of CPU time (THREADLINE_INGEST_CPU_SECONDS).",
                code="invalid_file",
            )
        last = next((line for line in reversed(stderr) if line.strip()), "")
        if any(sign in last for sign in _OUT_OF_MEMORY):
            return FileContentError(
                f"The file {filename} cannot be {_use(request)}: reading it needs more than"
                f" {s.ingest_memory_mb} MB of memory (THREADLINE_INGEST_MEMORY_MB).",
                code="invalid_file",
            )
        reason = describe_exit(returncode) + (f"; its last words: {last[:300]}" if last else "")
        log.error("the process %s %s %s", _doing(request), filename, reason)
        return PreparationFailed(
            f"{_doing(request).capitalize()} the file {filename} failed: the process reading it {reason}."
        )


def _use(request: dict[str, Any]) -> str:
    return "read" if request.get("mode") == "text" else "searched"


def _doing(request: dict[str, Any]) -> str:
    return "reading" if request.get("mode") == "text" else "indexing"


_OUT_OF_MEMORY = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "Memory allocation")
"""What a process says as it dies for want of memory (Python, C++, libc, OpenBLAS)."""


def _chunk(data: dict[str, Any]) -> IndexedChunk:
    vector = np.frombuffer(base64.b64decode(data["vector"]), dtype=np.float32)
    terms = np.frombuffer(base64.b64decode(data["terms"]), dtype=np.int32).reshape(2, -1)
    return IndexedChunk(int(data["ordinal"]), str(data["text"]), int(data["token_count"]), vector, terms)
