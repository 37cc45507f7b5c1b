"""A message's content as typed values: its parts (text, refusal, images, files) and the annotations
of its text (citations of searched files, links to files the code wrote, cited web pages).

The domain builds and reads only these. The one stored form is in ``records.py`` (the Assistants
API's JSON, so rows written before these values were typed read back the same); each API surface
renders its own wire JSON from them (``api/objects.py``, ``api/response_objects.py``).

A thread's non-message entries (``function_call``, ``reasoning``, ...; see ``entities.ItemType``)
keep their fields in one :class:`ItemFields` part, as the Responses item that made them had them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# --- annotations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileCitation:
    """The model cited a file search result: ``text`` is its marker (``【0:1†name】``)."""

    text: str
    start_index: int
    end_index: int
    file_id: str


@dataclass(frozen=True, slots=True)
class FilePath:
    """The text mentions a file the code wrote (``sandbox:/mnt/data/out.csv``)."""

    text: str
    start_index: int
    end_index: int
    file_id: str


@dataclass(frozen=True, slots=True)
class UrlCitation:
    """The text links a page a web search read: ``text`` is the link as the model wrote it."""

    text: str
    start_index: int
    end_index: int
    url: str
    title: str


Annotation = FileCitation | FilePath | UrlCitation


# --- parts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    value: str
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    refusal: str


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An uploaded image (a user's), or a chart the code drew (an answer's)."""

    file_id: str
    detail: str | None = None
    """``auto``, ``low`` or ``high``; ``None`` when not given."""


@dataclass(frozen=True, slots=True)
class ImageUrl:
    url: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class InputFile:
    """A Responses ``input_file``, read: the model is shown its ``text``, or the image it is
    (``image``: an uploaded one, by ``file_id``; ``image_url``: one sent as data or fetched).
    ``file_url``: where it was fetched from, if it was."""

    file_id: str | None
    filename: str | None
    text: str | None = None
    image: bool = False
    image_url: str | None = None
    file_url: str | None = None


@dataclass(frozen=True, slots=True)
class PendingFile:
    """An ``input_file`` as the request gave it, still to be read (``domain/input_files.py``);
    ``param`` names it in errors. Never stored."""

    given: dict[str, Any]
    param: str


@dataclass(frozen=True, slots=True)
class ItemFields:
    """A non-message entry's fields (``call_id``, ``output`` ...), kept as its Responses item had them."""

    fields: dict[str, Any] = field(default_factory=dict)


Part = Text | Refusal | ImageFile | ImageUrl | InputFile | PendingFile | ItemFields


def text_content(value: str) -> list[Part]:
    """Content of one text part."""
    return [Text(value)]


def text_of(parts: Sequence[Part]) -> str:
    """The text parts' values joined: what a chat model is shown of an answer."""
    return "".join(p.value for p in parts if isinstance(p, Text))


def with_annotations(part: Text, annotations: Sequence[Annotation]) -> Text:
    """``part`` with ``annotations`` added, all in order of where they start."""
    merged = sorted((*part.annotations, *annotations), key=lambda a: a.start_index)
    return Text(part.value, tuple(merged))
