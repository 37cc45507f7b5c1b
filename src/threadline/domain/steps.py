"""What a run step shows of a built-in tool call: the code and its outputs, the search and its results.

Plain data with no wire or storage shape: tools produce them, the run loop records them, ``api/``
renders them and ``store/`` saves them. They live in the domain so that every layer can name them
without importing the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BuiltinType = Literal["code_interpreter", "file_search", "web_search"]


@dataclass(frozen=True, slots=True)
class LogsOutput:
    """Text a code interpreter call printed."""

    logs: str


@dataclass(frozen=True, slots=True)
class ImageOutput:
    """An image a code interpreter call made, saved as a file."""

    file_id: str


CodeOutput = LogsOutput | ImageOutput


@dataclass(frozen=True, slots=True)
class SavedFile:
    """A file a code interpreter call wrote, kept as a file."""

    path: str
    """Where the code wrote it: ``/mnt/data/…``."""
    file_id: str


@dataclass(frozen=True, slots=True)
class CodeInterpreterDetails:
    input: str
    outputs: tuple[CodeOutput, ...] = ()
    files: tuple[SavedFile, ...] = ()
    """Files the code wrote. Not among the step's outputs (OpenAI's showed none there): the answer
    links them where it names their path."""


@dataclass(frozen=True, slots=True)
class RankingOptions:
    ranker: str
    score_threshold: float


@dataclass(frozen=True, slots=True)
class FileSearchResult:
    file_id: str
    file_name: str
    score: float
    content: tuple[str, ...] = ()
    """The matching text, shown to clients only when they ask for it (``include[]``)."""


@dataclass(frozen=True, slots=True)
class FileSearchDetails:
    ranking_options: RankingOptions | None = None
    results: tuple[FileSearchResult, ...] = ()


@dataclass(frozen=True, slots=True)
class WebSearchSource:
    url: str
    title: str


@dataclass(frozen=True, slots=True)
class WebSearchDetails:
    query: str
    sources: tuple[WebSearchSource, ...] = ()
    """The pages the model was given, in order (shown with ``include`` of their sources)."""
    error: str = ""
    """Why the search failed (the call is then ``failed``); empty when it did not."""


WEB_SEARCH_READ = "read"
"""The key, in a ``web_search_call`` entry's fields, of what this server's call read (``pages``: URL
and title; ``text``: what the model was told). Only the server sets it (a client's item has no such
field), so only pages it read are cited."""


BuiltinDetails = CodeInterpreterDetails | FileSearchDetails | WebSearchDetails
"""What a built-in call's run step shows, by tool type."""
