"""A file's bytes to plain text, for search: text, Markdown, code, JSON, HTML, PDF and DOCX.

Uploads are untrusted, so every reader is bounded: characters kept (``max_characters``), PDF
pages (``max_pages``), the time spent (checked between pages and paragraphs), and for DOCX the
size of the XML inflated from the zip (a zip bomb stops at the cap). A file that cannot be read
raises :class:`~threadline.errors.FileContentError` with the reason: ``unsupported_file`` for a
format we do not read, ``invalid_file`` for a damaged, empty or oversized one.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from xml.etree import ElementTree

from threadline.config import Settings
from threadline.errors import FileContentError

TEXT_EXTENSIONS = frozenset(
    [
        ".txt",
        ".md",
        ".markdown",
        ".rst",
        ".tex",
        ".csv",
        ".log",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".css",
        ".go",
        ".java",
        ".js",
        ".mjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".php",
        ".py",
        ".rb",
        ".rs",
        ".sh",
        ".swift",
        ".kt",
        ".scala",
        ".sql",
        ".yaml",
        ".yml",
        ".toml",
        ".xml",
        ".ini",
    ]
)
HTML_EXTENSIONS = frozenset({".html", ".htm"})
DOCX_XML_CAP = 64 * 1024 * 1024
"""Bytes of ``word/document.xml`` inflated at most: real documents are far smaller."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_characters: int = 5_000_000
    max_pages: int = 2000
    timeout_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(settings.file_max_characters, settings.file_max_pages, settings.file_parse_timeout_seconds)


class _Budget:
    """The limits as one running account: characters so far, and the deadline."""

    def __init__(self, filename: str, limits: ParseLimits) -> None:
        self.filename = filename
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_seconds
        self.characters = 0

    def take(self, text: str) -> str:
        self.characters += len(text)
        if self.characters > self.limits.max_characters:
            raise _invalid(self.filename, f"it has more than {self.limits.max_characters} characters of text")
        if time.monotonic() > self.deadline:
            raise _invalid(
                self.filename, f"extracting its text took longer than {self.limits.timeout_seconds:g} s"
            )
        return text


def parse(filename: str, data: bytes, limits: ParseLimits | None = None) -> str:
    """The text of the file ``filename`` whose content is ``data``."""
    budget = _Budget(filename, limits or ParseLimits())
    suffix = PurePath(filename).suffix.lower()
    if suffix == ".pdf" or data.startswith(b"%PDF-"):
        text = _pdf(data, budget)
    elif suffix == ".docx":
        text = _docx(data, budget)
    elif suffix in HTML_EXTENSIONS:
        text = _html(_decode(data, budget), budget)
    elif suffix == ".json":
        text = _json(_decode(data, budget), budget)
    elif suffix in TEXT_EXTENSIONS or suffix == "":
        text = _decode(data, budget)
    else:
        raise FileContentError(
            f"Files with extension {suffix!r} are not supported for file search ({filename}).",
            code="unsupported_file",
        )
    text = text.strip()
    if not text:
        raise _invalid(filename, "no text could be extracted from it")
    return text


def _invalid(filename: str, reason: str) -> FileContentError:
    return FileContentError(f"The file {filename} cannot be searched: {reason}.", code="invalid_file")


def _decode(data: bytes, budget: _Budget) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _invalid(budget.filename, "it is binary, not text")
    for encoding in (
        ("utf-8-sig", "utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8-sig",)
    ):
        try:
            return budget.take(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    raise _invalid(budget.filename, "it is not UTF-8 text")


def _json(text: str, budget: _Budget) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        raise _invalid(budget.filename, f"it is not valid JSON ({exc})") from exc
    return text


class _HTMLText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    _BLOCK = frozenset(
        [
            "p",
            "div",
            "br",
            "li",
            "ul",
            "ol",
            "tr",
            "table",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "header",
            "footer",
            "pre",
            "blockquote",
        ]
    )

    def __init__(self, budget: _Budget) -> None:
        super().__init__(convert_charrefs=True)
        self.budget = budget
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(self.budget.take(data))


def _html(text: str, budget: _Budget) -> str:
    parser = _HTMLText(budget)
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes, budget: _Budget) -> str:
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise _invalid(budget.filename, "it is an encrypted PDF")
        pages = len(reader.pages)
        if pages > budget.limits.max_pages:
            raise _invalid(
                budget.filename, f"it has {pages} pages, more than the {budget.limits.max_pages} allowed"
            )
        return "\n\n".join(budget.take(page.extract_text() or "") for page in reader.pages)
    except FileContentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf reports damaged files through several exception types.
        raise _invalid(
            budget.filename, f"it is not a readable PDF ({exc.__class__.__name__}: {exc})"
        ) from exc


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx(data: bytes, budget: _Budget) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open("word/document.xml") as member:
            # Read one byte past the cap rather than trusting the size the archive claims.
            xml = member.read(DOCX_XML_CAP + 1)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise _invalid(budget.filename, f"it is not a readable DOCX ({exc})") from exc
    if len(xml) > DOCX_XML_CAP:
        raise _invalid(budget.filename, f"its document inflates past {DOCX_XML_CAP} bytes")
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        # Word never writes these; refusing them rules out entity expansion attacks.
        raise _invalid(budget.filename, "its XML declares entities")
    paragraphs: list[str] = []
    try:
        for _event, element in ElementTree.iterparse(io.BytesIO(xml), events=("end",)):
            if element.tag == f"{_W}p":
                parts = []
                for node in element.iter():
                    if node.tag == f"{_W}t" and node.text:
                        parts.append(node.text)
                    elif node.tag == f"{_W}tab":
                        parts.append("\t")
                    elif node.tag in (f"{_W}br", f"{_W}cr"):
                        parts.append("\n")
                paragraphs.append(budget.take("".join(parts)))
                element.clear()
    except ElementTree.ParseError as exc:
        raise _invalid(budget.filename, f"its document XML is damaged ({exc})") from exc
    return "\n".join(paragraphs)
