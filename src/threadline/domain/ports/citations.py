"""File search results as the model reads them, and the model's citation markers as annotations.

Results are shown to the model numbered ``【{message}:{result}†{filename}】`` (the form OpenAI's
models were trained on), and the model cites by repeating a marker. :func:`annotate` finds the
markers in its answer and turns each that names a known result into a ``file_citation``
annotation over the marker's characters; markers naming no known result are left as plain text.

A web search's pages are cited differently: the model links their URLs, and
:func:`url_citations` finds the links.

The marker is a contract between three layers: the ``file_search`` tool writes it, the run loop
reads it back, the Responses API cuts it out of answers. These are pure functions with no I/O, so
they live with the ports all three may import, rather than behind a protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from threadline.domain.content import FileCitation, UrlCitation

MARKER = re.compile(r"【(\d+):(\d+)†([^】\n]*)】")


@dataclass(frozen=True, slots=True)
class Source:
    file_id: str
    filename: str
    text: str


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


# --- web search: the model cites a page by linking its URL -----------------------------------


_URL_GOES_ON = re.compile(r"[A-Za-z0-9/_~%?=&#+-]|\.[A-Za-z0-9]")


def url_citations(text: str, pages: Mapping[str, str]) -> list[UrlCitation]:
    """``url_citation`` annotations for ``text``'s mentions of the web search results ``pages``
    (URL → title): a markdown link to one (``[label](url)``, the annotation over the whole link) or
    the URL itself, not as the start of a longer URL; in order of appearance."""
    taken: list[tuple[int, int]] = []
    citations: list[UrlCitation] = []
    for url in sorted(pages, key=len, reverse=True):  # a longer URL before one it starts with
        at = text.find(url)
        while at >= 0:
            end = at + len(url)
            if _URL_GOES_ON.match(text, end) is None:
                start = at
                if text.startswith(")", end) and text[:at].endswith("]("):
                    label = text.rfind("[", 0, at - 2)
                    if label >= 0 and "\n" not in text[label:at]:
                        start, end = label, end + 1
                if not any(start < e and s < end for s, e in taken):
                    taken.append((start, end))
                    citations.append(UrlCitation(text[start:end], start, end, url, pages[url]))
            at = text.find(url, at + len(url))
    return sorted(citations, key=lambda c: c.start_index)


# --- the Responses API's text: markers cut out, annotations at the cut ---------------------

_MARKER_PREFIX = re.compile(r"【(\d+(:(\d+(†[^】\n]*)?)?)?)?")
"""What the start of a marker may look like before its end has arrived."""


def strip_markers(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` without its citation markers (as the Responses API shows an answer), and the spans
    cut out of it (start, end in ``text``)."""
    spans = [(m.start(), m.end()) for m in MARKER.finditer(text)]
    return MARKER.sub("", text), spans


def cut_index(index: int, spans: Sequence[tuple[int, int]]) -> int:
    """Where ``index`` of the marked text falls in the text with the ``spans`` cut out."""
    return index - sum(min(end, index) - start for start, end in spans if start < index)


class MarkerFilter:
    """Cuts markers out of text that arrives in pieces, holding back what may be the start of one,
    so the pieces put together are :func:`strip_markers`' text."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, piece: str) -> str:
        text, self.held = self.held + piece, ""
        out: list[str] = []
        at = 0
        while (start := text.find("【", at)) >= 0:
            out.append(text[at:start])
            if (found := MARKER.match(text, start)) is not None:
                at = found.end()
            elif _MARKER_PREFIX.fullmatch(text, start) is not None:
                self.held = text[start:]
                return "".join(out)
            else:
                out.append("【")
                at = start + 1
        out.append(text[at:])
        return "".join(out)

    def flush(self) -> str:
        """What is held back once the text has ended (it was not a marker)."""
        held, self.held = self.held, ""
        return held
