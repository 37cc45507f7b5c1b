"""File search results as the model reads them, and the model's citation markers as annotations.

Results are shown to the model numbered ``【{message}:{result}†{filename}】`` (the form OpenAI's
models were trained on), and the model cites by repeating a marker. :func:`annotate` finds the
markers in its answer and turns each that names a known result into a ``file_citation``
annotation over the marker's characters; markers naming no known result are left as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MARKER = re.compile(r"【(\d+):(\d+)†([^】\n]*)】")


@dataclass(frozen=True, slots=True)
class Source:
    file_id: str
    filename: str
    text: str


@dataclass(frozen=True, slots=True)
class FileCitation:
    text: str
    start_index: int
    end_index: int
    file_id: str


def marker(message_index: int, result_index: int, filename: str) -> str:
    return f"【{message_index}:{result_index}†{filename}】"


def format_results(message_index: int, sources: Sequence[Source]) -> str:
    """The tool output the model sees for one file search: each result under its marker."""
    if not sources:
        return "No results found in the files."
    blocks = [
        f"{marker(message_index, i, source.filename)}\n{source.text}" for i, source in enumerate(sources)
    ]
    return "\n\n".join(blocks)


def annotate(text: str, searches: Mapping[int, Sequence[Source]]) -> list[FileCitation]:
    """Annotations for the markers in ``text`` that name a result of ``searches`` (message index →
    its numbered results), in order of appearance."""
    citations: list[FileCitation] = []
    for match in MARKER.finditer(text):
        sources = searches.get(int(match.group(1)), ())
        index = int(match.group(2))
        if index < len(sources):
            citations.append(FileCitation(match.group(0), match.start(), match.end(), sources[index].file_id))
    return citations
