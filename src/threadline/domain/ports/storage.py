"""What the domain needs from the outside world, as protocols: a repository per aggregate
(assistants, threads, runs, responses, projects, files, vector stores), the blob store, the job
queue and the event bus.

``threadline.store`` (``SqlAssistantStore`` … ``SqlProjectStore`` gathered in ``Stores``,
``SqlFileStore``, ``SqlJobQueue``, the blob stores) and the buses in ``threadline.events`` implement
these; the domain only sees the protocols, so it never imports SQLAlchemy, a cloud SDK or a transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from threadline.domain.entities import (
    ApiKey,
    Assistant,
    File,
    FileBatch,
    Job,
    ListQuery,
    Message,
    Page,
    Project,
    Run,
    RunStep,
    RunTransition,
    Summary,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
    VectorStore,
    VectorStoreFile,
)
from threadline.domain.events import Event
from threadline.domain.run_states import RunStatus


@dataclass(slots=True)
class Change:
    """One atomic write around a run: a guarded status move and everything written beside it.

    The store applies it in one transaction, or not at all when the run is no longer in one of the
    ``expect`` statuses (or, with ``owner``, no longer held by that worker).
    """

    run: Run
    expect: frozenset[RunStatus]
    owner: str | None = None
    new_steps: list[RunStep] = field(default_factory=list)
    steps: list[RunStep] = field(default_factory=list)
    new_messages: list[Message] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    discard_steps: list[str] = field(default_factory=list)
    """Step ids to delete: a turn a previous holder of the run left half-written."""
    discard_messages: list[str] = field(default_factory=list)
    release_thread: bool = False


class ThreadLockedError(Exception):
    """The thread already has an active run (``run_id``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class AssistantRepository(Protocol):
    async def insert(self, assistant: Assistant) -> None: ...
    async def upsert(self, assistant: Assistant) -> None: ...
    async def get(self, assistant_id: str, project_id: str | None = None) -> Assistant | None:
        """The assistant, if it is in ``project_id`` (``None``: in any project, for the run engine)."""

    async def list_assistants(self, query: ListQuery, project_id: str) -> Page[Assistant]: ...
    async def update(self, assistant: Assistant) -> None: ...
    async def delete(self, assistant_id: str, project_id: str) -> bool: ...


class ThreadRepository(Protocol):
    """Threads (a Responses conversation is one), their messages and items, and their summaries."""

    async def insert(
        self,
        thread: Thread,
        messages: Sequence[Message],
        run: Run | None = None,
        *,
        search: ThreadStorePlan | None = None,
    ) -> ThreadStoreFiles | None:
        """Save a new thread with its messages and, for create-and-run, its first run (which holds its lock).

        With ``search``, the files the messages attach for ``file_search`` go into the thread's store
        in the same transaction (see :class:`~threadline.domain.entities.ThreadStorePlan`); what
        was done is returned (``None`` when no file was attached for it)."""

    async def get(self, thread_id: str, project_id: str | None = None) -> Thread | None:
        """The thread, if it is in ``project_id`` (``None``: in any project, for the run engine)."""

    async def list_threads(
        self, query: ListQuery, metadata: dict[str, str], project_id: str
    ) -> Page[Thread]: ...
    async def update(self, thread: Thread) -> None: ...
    async def delete(self, thread_id: str, project_id: str) -> bool: ...
    async def retire_conversation(self, thread_id: str) -> None:
        """Delete a conversation; one that responses ran on becomes their own (unlisted) thread
        instead, so those responses and their items stay readable."""

    async def copy(self, source_id: str, thread: Thread, through_message_id: str) -> None:
        """Insert ``thread`` with copies (new ids) of ``source_id``'s entries up to ``through_message_id``."""

    async def delete_stale(self, project_id: str, inactive_since: int, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` of the project's threads untouched since ``inactive_since`` and with
        no active run, with everything under them; how many threads, messages and runs went."""

    async def insert_message(
        self, message: Message, *, search: ThreadStorePlan | None = None
    ) -> ThreadStoreFiles | None:
        """Add a message unless the thread is locked (raises :class:`ThreadLockedError`); ``search``
        as for :meth:`insert`."""

    async def get_message(self, thread_id: str, message_id: str, *, items: bool = False) -> Message | None:
        """A message of the thread; with ``items``, a Responses item (function call, output) too."""

    async def list_messages(
        self, thread_id: str, query: ListQuery, run_id: str | None, *, items: bool = False
    ) -> Page[Message]:
        """The thread's messages; with ``items``, its Responses items (function calls, outputs) too."""

    async def newest_messages(
        self, thread_id: str, limit: int, *, before: str | None = None, after: str | None = None
    ) -> list[Message]:
        """Up to ``limit`` messages, newest first, older than ``before`` and newer than ``after``."""

    async def messages_by_id(self, message_ids: Sequence[str]) -> list[Message]: ...
    async def update_message_metadata(self, message: Message) -> None: ...
    async def delete_message(self, thread_id: str, message_id: str, *, items: bool = False) -> bool:
        """Delete a message of the thread (with ``items``, a Responses item too); whether one went."""

    async def get_summary(self, thread_id: str) -> Summary | None: ...
    async def save_summary(self, summary: Summary) -> None: ...


class RunRepository(Protocol):
    """Runs and their steps: every status change a guarded :meth:`transition`, claims and leases."""

    async def insert(
        self, run: Run, messages: Sequence[Message], *, search: ThreadStorePlan | None = None
    ) -> ThreadStoreFiles | None:
        """Lock the thread for ``run`` and save it with the messages it adds, or raise ThreadLockedError;
        ``search`` as for :meth:`ThreadRepository.insert`."""

    async def get(self, thread_id: str, run_id: str, project_id: str) -> Run | None:
        """The run, if it is on that thread and the thread is in ``project_id``."""

    async def get_by_id(self, run_id: str) -> Run | None: ...
    async def parents(
        self, assistant_id: str, thread_id: str, project_id: str
    ) -> tuple[Assistant | None, Thread | None]:
        """The assistant and the thread a new run names, if each is in ``project_id``: one read (a
        hand-off to the database) for the two lookups every run create makes."""

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]: ...
    async def update_metadata(self, run: Run) -> None: ...
    async def transition(self, change: Change) -> bool:
        """Apply ``change`` in one transaction, with the run's history row when its status moves;
        ``False`` (nothing written) when the run is no longer as the change expects."""

    async def claim_next(
        self, worker_id: str, now: float, lease_seconds: float, limit: int, affinity_seconds: float = 0.0
    ) -> list[Run]:
        """Atomically take up to ``limit`` queued runs (or runs whose holder's lease lapsed). A run
        whose thread's kernel another worker holds is left to it for ``affinity_seconds`` after it
        was queued."""

    async def hold_kernel(self, thread_id: str, worker_id: str, until: float) -> None:
        """Record that ``worker_id`` keeps the thread's code_interpreter kernel until ``until``."""

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> list[str]:
        """Extend this worker's leases; returns the ids it still holds in ``in_progress``."""

    async def find_expired(self, now: int, limit: int) -> list[Run]:
        """Active runs past their ``expires_at``."""

    async def find_stalled(self, now: float, limit: int) -> list[Run]:
        """Runs left in ``cancelling`` by a process that died before finishing the cancel."""

    async def census(self, now: float) -> tuple[dict[str, int], int]:
        """How many runs are in each active status, and how many workers hold runs under live leases."""

    async def history(self, run_id: str) -> list[RunTransition]:
        """A run's status changes, oldest first."""

    async def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep | None: ...
    async def get_step_by_id(self, step_id: str) -> RunStep | None: ...
    async def list_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]: ...
    async def steps(self, run_id: str) -> list[RunStep]:
        """All steps of a run, oldest first."""


class ResponseRepository(Protocol):
    """What the Responses API keeps beyond the run a response is."""

    async def get(self, response_id: str, project_id: str) -> Run | None:
        """A run the Responses API made, if its thread is in the project."""

    async def delete(self, response_id: str) -> None:
        """Delete a response's run; its own (unlisted) thread too, once no response is left on it."""

    async def record_events(self, response_id: str, events: Sequence[dict[str, Any]]) -> None:
        """Keep a background response's stream events (each with its ``sequence_number``)."""

    async def events(self, response_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """A background response's kept stream events numbered above ``after``, in order."""


class ProjectRepository(Protocol):
    async def insert(self, project: Project) -> None: ...
    async def list_projects(self) -> list[Project]: ...
    async def get(self, project_id: str) -> Project | None: ...
    async def insert_api_key(self, key: ApiKey, secret_hash: str) -> None: ...
    async def list_api_keys(self, project_id: str) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str, project_id: str | None, at: int) -> bool: ...
    async def project_of_key(self, secret_hash: str) -> str | None:
        """The project of the live (unrevoked) key with this hash."""

    async def any_api_keys(self) -> bool: ...


class Locks(Protocol):
    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold a cluster-wide lock named ``name`` if no one else does; yields whether we got it."""


@dataclass(frozen=True, slots=True)
class Stores:
    """The repositories of the run engine's aggregates, built together (``threadline.store.sql_stores``)
    and handed to whoever needs several of them; one that needs a single aggregate takes just that."""

    assistants: AssistantRepository
    threads: ThreadRepository
    runs: RunRepository
    responses: ResponseRepository
    projects: ProjectRepository
    locks: Locks


class Subscription(Protocol):
    async def get(self, timeout: float | None = None) -> Event | None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Subscription: ...
    def __exit__(self, *exc: object) -> None: ...


class Bus(Protocol):
    """Carries run events from whoever executes a run to whoever follows it, and wakes workers."""

    async def publish(self, topic: str, event: Event) -> None: ...
    def subscribe(self, topic: str, wants: Callable[[Event], bool] | None = None) -> Subscription: ...
    async def notify_work(self) -> None: ...
    async def wait_for_work(self, timeout: float) -> None: ...


class BlobNotFoundError(Exception):
    """The blob store has nothing under this key."""


class BlobStore(Protocol):
    """Where files' bytes live: a local directory, or an S3-compatible bucket shared by many hosts.

    Bytes are streamed in and out in chunks; no file is ever held whole in memory.
    """

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under ``key``; returns how many bytes. If reading the chunks raises,
        nothing is left under ``key`` and the error propagates."""

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under ``key`` as chunks; raises :class:`BlobNotFoundError` before the first."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is already gone."""

    async def exists(self, key: str) -> bool: ...

    async def remove_abandoned(self) -> int:
        """Remove what uploads cut short by a process that died left behind; returns how many."""

    async def aclose(self) -> None: ...


class FileRepository(Protocol):
    async def insert_file(self, file: File) -> None: ...
    async def get_file(self, file_id: str, project_id: str) -> File | None: ...
    async def list_files(self, query: ListQuery, purpose: str | None, project_id: str) -> Page[File]: ...
    async def existing_file_ids(self, file_ids: Collection[str], project_id: str) -> set[str]: ...
    async def delete_file(self, file_id: str, project_id: str) -> bool:
        """Delete the file's row and every reference to it in tool resources, in one transaction."""


class JobQueue(Protocol):
    """The durable background job queue, on the same database as everything else."""

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        max_attempts: int | None = None,
        run_after: float | None = None,
    ) -> Job:
        """Queue a job, due at ``run_after`` (now by default), tried up to ``max_attempts`` times
        (``THREADLINE_JOB_MAX_ATTEMPTS`` by default)."""

    def new_job(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        max_attempts: int | None = None,
        run_after: float | None = None,
    ) -> Job:
        """A job as ``enqueue`` would queue it, not saved: for a store method that writes it in the
        same transaction as the work it stands for (then call ``wake``)."""

    def wake(self) -> None:
        """Tell this process's worker that jobs were just queued."""

    async def get_job(self, job_id: str) -> Job | None: ...
    async def claim_jobs(
        self, worker_id: str, kinds: Collection[str], now: float, lease_seconds: float, limit: int
    ) -> list[Job]:
        """Atomically take up to ``limit`` due queued jobs of these kinds, oldest first."""

    async def renew_job_leases(self, worker_id: str, job_ids: Sequence[str], until: float) -> list[str]:
        """Extend this worker's leases; returns the ids it still holds."""

    async def finish_job(self, job_id: str, worker_id: str, now: float) -> bool:
        """Mark a job this worker holds succeeded; ``False`` if it is no longer ours."""

    async def fail_job(self, job_id: str, worker_id: str, error: str, retry_at: float | None) -> bool:
        """Record a failed attempt: queued again from ``retry_at``, or failed for good when ``None``."""

    async def release_job(self, job_id: str, worker_id: str, now: float) -> bool:
        """Hand a job back to the queue at shutdown, its attempt not counted."""

    async def reap_jobs(self, now: float) -> list[Job]:
        """Take back jobs whose worker's lease lapsed: queued again, or failed when out of attempts;
        the jobs taken back, as they are now."""

    async def purge_jobs(self, finished_before: float) -> int:
        """Forget succeeded and failed jobs that finished before this time."""


class VectorStoreRepository(Protocol):
    async def insert_store(self, store: VectorStore) -> None: ...
    async def get_store(self, store_id: str, project_id: str) -> VectorStore | None:
        """The store with its ``file_counts`` and ``usage_bytes``."""

    async def list_stores(self, query: ListQuery, project_id: str) -> Page[VectorStore]: ...
    async def update_store(self, store: VectorStore) -> None:
        """Save ``name``, ``metadata``, ``expires_after``, ``expires_at`` and ``last_active_at``."""

    async def delete_store(self, store_id: str, project_id: str) -> bool:
        """Delete the store, its file rows and its batches."""

    async def existing_store_ids(self, store_ids: Collection[str], project_id: str) -> set[str]: ...
    async def add_files(
        self, files: Sequence[VectorStoreFile], batch: FileBatch | None, jobs: Sequence[Job]
    ) -> None:
        """Insert the rows (and the batch), replacing rows of the same files in the same store, and
        their ingestion ``jobs``, in one transaction."""

    async def get_file(self, store_id: str, file_id: str, project_id: str) -> VectorStoreFile | None: ...
    async def list_files(
        self, store_id: str, query: ListQuery, status: str | None, batch_id: str | None
    ) -> Page[VectorStoreFile]: ...
    async def files_by_id(self, store_id: str, file_ids: Collection[str]) -> list[VectorStoreFile]: ...
    async def delete_file(self, store_id: str, file_id: str, project_id: str) -> bool: ...
    async def update_attributes(
        self, store_id: str, file_id: str, project_id: str, attributes: dict[str, Any] | None
    ) -> bool:
        """Replace the file's attributes; False when the file is not there."""

    async def chunk_texts(self, store_id: str, file_id: str) -> list[str]:
        """The texts of the file's chunks in the store, in order."""

    async def finish_file(
        self, store_id: str, file_id: str, status: str, usage_bytes: int, last_error: dict[str, str] | None
    ) -> bool:
        """Move the file from ``in_progress`` to ``status``; False when it was no longer in progress."""

    async def file_progress(
        self, store_id: str, file_id: str, chunking_strategy: dict[str, Any], done: int, total: int
    ) -> None:
        """Record, while the file is ``in_progress``, how many of its chunks are embedded."""

    async def get_batch(self, store_id: str, batch_id: str, project_id: str) -> FileBatch | None: ...
    async def cancel_batch(self, store_id: str, batch_id: str) -> None:
        """Mark the batch cancelled and its files still in progress ``cancelled``, in one transaction."""
