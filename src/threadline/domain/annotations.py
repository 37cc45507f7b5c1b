"""What a run's built-in calls made, shown in its answer: citations, links to files, charts.

As OpenAI's answers had it: the model's citations of file search results (``【search:result†file】``,
searches numbered in order) become ``file_citation`` annotations, its mentions of files the code
wrote (``sandbox:/mnt/data/…``) ``file_path`` annotations, its links to the pages a web search
read ``url_citation`` annotations (also the pages of this server's searches given back as input:
``pages_read``), and the code's charts ``image_file`` parts after the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from threadline.domain.content import (
    Annotation,
    FilePath,
    ImageFile,
    Part,
    Text,
    with_annotations,
)
from threadline.domain.entities import BuiltinCall, Message, RunStep, ToolCalls
from threadline.domain.ports.citations import Source, annotate, url_citations
from threadline.domain.steps import (
    WEB_SEARCH_READ,
    CodeInterpreterDetails,
    FileSearchDetails,
    ImageOutput,
    WebSearchDetails,
)


@dataclass
class Made:
    """What the run's built-in calls made that its answer may show."""

    searches: dict[int, list[Source]] = field(default_factory=dict)
    """Each file search's results, by the search's number (in the order the searches ran)."""
    written: dict[str, str] = field(default_factory=dict)
    """Files the code wrote: path → file id."""
    images: list[str] = field(default_factory=list)
    """The file ids of the code's charts."""
    pages: dict[str, str] = field(default_factory=dict)
    """The pages web searches read: URL → title."""


def made_by(steps: list[RunStep]) -> Made:
    made = Made()
    calls = [c for s in steps if isinstance(s.step_details, ToolCalls) for c in s.step_details.calls]
    for details in (c.details for c in calls if isinstance(c, BuiltinCall)):
        if isinstance(details, FileSearchDetails):
            made.searches[len(made.searches)] = [Source(r.file_id, r.file_name, "") for r in details.results]
        elif isinstance(details, WebSearchDetails):
            made.pages.update((p.url, p.title) for p in details.sources)
        elif isinstance(details, CodeInterpreterDetails):
            made.written.update((f.path, f.file_id) for f in details.files)
            made.images += [o.file_id for o in details.outputs if isinstance(o, ImageOutput)]
    return made


def pages_read(entries: list[Message]) -> dict[str, str]:
    """The pages (URL → title) this server's web searches read, of the ``web_search_call`` entries
    among ``entries`` (searches given back as input: only what the server stored, never a client's)."""
    pages: dict[str, str] = {}
    for entry in entries:
        read = entry.fields.get(WEB_SEARCH_READ) if entry.type == "web_search_call" else None
        if isinstance(read, dict):
            pages.update((str(p["url"]), str(p["title"])) for p in read.get("pages") or ())
    return pages


def answer_content(
    content: list[Part], steps: list[RunStep], read: dict[str, str] | None = None
) -> list[Part]:
    """The answer's content with what the run's built-in calls made (see the module's docstring),
    and links to the pages ``read`` (URL → title) by searches given back as input."""
    made = made_by(steps)
    made.pages = {**(read or {}), **made.pages}
    if not (made.searches or made.written or made.images or made.pages):
        return content
    parts: list[Part] = []
    for part in content:
        if isinstance(part, Text):
            cited: list[Annotation] = [
                *annotate(part.value, made.searches),
                *file_paths(part.value, made.written),
                *url_citations(part.value, made.pages),
            ]
            part = with_annotations(part, cited)
        parts.append(part)
    return parts + [ImageFile(file_id) for file_id in made.images]


def file_paths(text: str, written: dict[str, str]) -> list[FilePath]:
    """``file_path`` annotations over ``text``'s mentions of the files the code wrote (path → file
    id): ``sandbox:/mnt/data/out.csv`` as OpenAI's models link them, or the bare path."""
    if not written:
        return []
    paths = "|".join(re.escape(path) for path in sorted(written, key=len, reverse=True))
    # A mention ends where the path does: not inside a longer name (``out.csv2``, ``out.csv.bak``).
    mention = re.compile(rf"(?:sandbox:)?({paths})(?![A-Za-z0-9_/-]|\.[A-Za-z0-9])")
    return [FilePath(m.group(0), m.start(), m.end(), written[m.group(1)]) for m in mention.finditer(text)]
