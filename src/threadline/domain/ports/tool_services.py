"""What the shipped built-in tools need from the rest of the server, as small ports.

Tools know nothing of the domain's services (the run loop calls them, not the other way round), so
the files and vector stores they work with reach them through these; the runtime wires the real ones.
Every call names the project of the thread it serves, and stays within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class ToolFiles(Protocol):
    async def read(self, project_id: str, file_id: str, limit: int) -> tuple[str, bytes]:
        """A file's name and bytes; raises :class:`~threadline.domain.ports.tools.ToolError` when it is
        missing or larger than ``limit``."""

    async def save(self, project_id: str, filename: str, data: bytes, content_type: str) -> str:
        """Keep bytes a tool made as a file (purpose ``assistants_output``); its id."""


@dataclass(frozen=True, slots=True)
class Passage:
    file_id: str
    filename: str
    score: float
    text: str


class ToolSearch(Protocol):
    async def search(
        self, project_id: str, store_ids: Sequence[str], query: str, limit: int, score_threshold: float
    ) -> list[Passage]:
        """The best passages over the stores (expired or deleted stores are skipped), best first."""

    async def indexing(self, project_id: str, store_ids: Sequence[str]) -> int:
        """How many files of the stores are still being indexed (expired or deleted stores: none)."""
