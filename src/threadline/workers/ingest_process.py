"""The ingestion process: one child per file, parsing, chunking and embedding it away from the server.

Started by :class:`threadline.workers.ingestion.IngestionProcesses` as ``python -m
threadline.workers.ingest_process``. Before it reads anything it bounds itself: address space
(``RLIMIT_AS``), CPU time (``RLIMIT_CPU``: ``SIGXCPU`` at the limit), a lower priority than the
server (``nice``), and death with its parent. Then it reads one request from stdin: a JSON line
``{"filename", "size", "strategy": [max, overlap], "limits": {...}, "embedder": {...}, "embedders",
"passages"}`` followed by ``size`` bytes of the file, and answers on a private copy of stdout (fd 1 itself points at
stderr, so what native code prints cannot corrupt the stream), in JSON lines:

- ``{"progress": {"done": N, "total": N}}`` as chunks are embedded (by ``embedders`` copies of the
  model, a thread each),
- ``{"chunk": {"ordinal", "text", "token_count", "vector", "terms"}}`` per chunk (arrays in base64),
- then ``{"done": {"tokens": N, "characters": N}}``, or ``{"error": "...", "code": "..."}`` where the
  code is ``invalid_file`` / ``unsupported_file`` (the file's fault, not retried) or ``transient``
  (the embeddings server failed: retried).

With ``"mode": "text"`` (an ``input_file`` part of a response's input) it only parses, under the
same limits, and answers ``{"text": "..."}`` or the error.

It exits when it has answered; the parent kills it when the file is deleted, the job cancelled, the
wall time runs out, or the server stops.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from typing import IO, Any

MB = 1024 * 1024


def _bound(memory_mb: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * MB, memory_mb * MB))
    # SIGXCPU at the soft limit (the parent names the limit), SIGKILL a little later if ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    with contextlib.suppress(OSError):
        os.nice(5)  # the server's searches and runs come first, without starving ingestion
    with contextlib.suppress(OSError, AttributeError):
        # Die with the server, even if it is killed outright (PR_SET_PDEATHSIG, Linux).
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:
            os._exit(1)


def _encode(array: Any) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def serve(request: dict[str, Any], data: bytes, say: Any) -> None:
    # Imported here, after the limits are set: they count against them, and a file cannot hurt them.
    from threadline.config import Settings
    from threadline.domain.ports.retrieval import ChunkingStrategy
    from threadline.errors import FileContentError, ServiceUnavailableError
    from threadline.providers.embeddings import embedder_for
    from threadline.providers.tokenizers import tiktoken_encoding
    from threadline.retrieval.engine import prepare_file
    from threadline.retrieval.parsing import ParseLimits, parse

    try:
        if request.get("mode") == "text":
            say({"text": parse(request["filename"], data, ParseLimits(**request["limits"]))})
            return
        settings = Settings(**request["embedder"])
        embedders = [embedder_for(settings) for _ in range(max(1, int(request.get("embedders", 1))))]
        prepared = prepare_file(
            request["filename"],
            data,
            ChunkingStrategy(*request["strategy"]),
            tiktoken_encoding("cl100k_base"),
            embedders,
            ParseLimits(**request["limits"]),
            progress=lambda done, total: say({"progress": {"done": done, "total": total}}),
            passages=str(request.get("passages", "pieces")),
        )
    except FileContentError as exc:
        say({"error": exc.message, "code": exc.code})
        return
    except ServiceUnavailableError as exc:
        say({"error": exc.message, "code": "transient"})
        return
    except MemoryError:
        memory_mb = request["memory_mb"]
        use = "read" if request.get("mode") == "text" else "searched"
        say(
            {
                "error": f"The file {request['filename']} cannot be {use}: reading it needs more than"
                f" {memory_mb} MB of memory (THREADLINE_INGEST_MEMORY_MB).",
                "code": "invalid_file",
            }
        )
        return
    for chunk in prepared.chunks:
        say(
            {
                "chunk": {
                    "ordinal": chunk.ordinal,
                    "text": chunk.text,
                    "token_count": chunk.token_count,
                    "vector": _encode(chunk.vector),
                    "terms": _encode(chunk.terms),
                }
            }
        )
    say({"done": {"tokens": prepared.tokens, "characters": prepared.characters}})


def main() -> None:
    out: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    request = json.loads(stdin.readline())
    _bound(int(request["memory_mb"]), int(request["cpu_seconds"]))
    data = stdin.read(int(request["size"]))

    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")  # ASCII: nothing the file holds can break the stream
        if "progress" in message:
            out.flush()

    serve(request, data, say)
    out.flush()
    os._exit(0)  # nothing to tidy: the parent has what it needs


if __name__ == "__main__":
    main()
