"""A file's bytes to plain text, for search: text, Markdown, code, JSON, HTML, PDF and DOCX.

Uploads are untrusted, so every reader is bounded and runs in time linear in its input: characters
kept (``max_characters``), PDF pages (``max_pages``), the time spent (checked as text is taken),
JSON nesting (``max_json_depth``, checked before ``json.loads`` recurses), and for DOCX the XML
inflated from the zip (``max_inflated_bytes``: a zip bomb stops at the cap) and its elements
(``max_xml_elements``), read as a stream by expat so memory stays flat. HTML is read by a small
scanner of our own: ``html.parser`` is quadratic on unclosed tags (100 KB of ``<a `` takes minutes).
A file that cannot be read raises :class:`~threadline.errors.FileContentError` with the reason:
``unsupported_file`` for a format we do not read, ``invalid_file`` for a damaged, empty or
oversized one (the message names the limit and its setting). Ingestion runs this in a child process
(``workers/ingestion.py``) whose memory and CPU are bounded too.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from xml.parsers import expat

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


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_characters: int = 5_000_000
    max_pages: int = 2000
    timeout_seconds: float = 60.0
    max_inflated_bytes: int = 64 * 1024 * 1024
    max_xml_elements: int = 2_000_000
    max_json_depth: int = 100
    purpose: str = "search"
    """``search`` (a vector store's file) or ``input`` (an ``input_file`` part): the words of refusals."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            settings.file_max_characters,
            settings.file_max_pages,
            settings.file_parse_timeout_seconds,
            settings.file_max_inflated_bytes,
            settings.file_max_xml_elements,
            settings.file_max_json_depth,
        )

    def for_input(self, max_characters: int) -> ParseLimits:
        """These limits for an ``input_file`` part, whose text is held to ``max_characters``."""
        return dataclasses.replace(self, max_characters=max_characters, purpose="input")


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
            setting = "INPUT_FILE_MAX_CHARACTERS" if self.limits.purpose == "input" else "FILE_MAX_CHARACTERS"
            raise _invalid(
                self,
                f"it has more than {self.limits.max_characters} characters of text (THREADLINE_{setting})",
            )
        self.check_time()
        return text

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _invalid(
                self,
                f"extracting its text took longer than {self.limits.timeout_seconds:g} s"
                " (THREADLINE_FILE_PARSE_TIMEOUT_SECONDS)",
            )


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
        use = "as input files" if budget.limits.purpose == "input" else "for file search"
        raise FileContentError(
            f"Files with extension {suffix!r} are not supported {use} ({filename}).",
            code="unsupported_file",
        )
    text = text.strip()
    if not text:
        raise _invalid(budget, "no text could be extracted from it")
    return text


def _invalid(budget: _Budget, reason: str) -> FileContentError:
    use = "read" if budget.limits.purpose == "input" else "searched"
    return FileContentError(f"The file {budget.filename} cannot be {use}: {reason}.", code="invalid_file")


def _decode(data: bytes, budget: _Budget) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _invalid(budget, "it is binary, not text")
    for encoding in (
        ("utf-8-sig", "utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8-sig",)
    ):
        try:
            return budget.take(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    raise _invalid(budget, "it is not UTF-8 text")


# A JSON string (possessive: an unterminated one fails in one pass) or a bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


def _json(text: str, budget: _Budget) -> str:
    # json.loads recurses per level: measure the nesting first, in one pass.
    depth, deepest = 0, budget.limits.max_json_depth
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                raise _invalid(
                    budget,
                    f"its JSON nests deeper than {deepest} levels (THREADLINE_FILE_MAX_JSON_DEPTH)",
                )
        elif token in "]}":
            depth -= 1
    try:
        json.loads(text)
    except RecursionError as exc:
        raise _invalid(budget, "its JSON nests too deeply") from exc
    except ValueError as exc:
        raise _invalid(budget, f"it is not valid JSON ({exc})") from exc
    return text


_HTML_SKIP = frozenset({"script", "style", "noscript", "template", "head"})
_HTML_BLOCK = frozenset(
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
_TAG_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9:-]*+)")
# The rest of a tag up to its ``>``, quoted values whole; possessive, so a tag that never ends is
# found out in one pass rather than retried from every ``<``.
_TAG_END = re.compile(r"""(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""")


def _html(text: str, budget: _Budget) -> str:
    """The text of an HTML page, in one left-to-right pass: every search starts where the last one
    ended, and one that finds nothing ends the page (as a browser drops an unterminated tag)."""
    parts: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        lt = text.find("<", pos)
        if lt < 0:
            parts.append(budget.take(html.unescape(text[pos:])))
            break
        if lt > pos:
            parts.append(budget.take(html.unescape(text[pos:lt])))
        if text.startswith("<!--", lt):
            close = text.find("-->", lt + 4)
            if close < 0:
                break
            pos = close + 3
            continue
        if text.startswith(("<!", "<?"), lt):
            close = text.find(">", lt + 2)
            if close < 0:
                break
            pos = close + 1
            continue
        name = _TAG_NAME.match(text, lt + 1)
        if name is None:
            parts.append(budget.take("<"))  # a lone "<" is text
            pos = lt + 1
            continue
        rest = _TAG_END.match(text, name.end())
        if rest is None:
            break
        pos = rest.end()
        tag = name.group(1).lower()
        closing = name.group().startswith("/")
        if tag in _HTML_BLOCK:
            parts.append("\n")
        elif tag in _HTML_SKIP and not closing and not rest.group().endswith("/>"):
            found = re.compile(f"</{re.escape(tag)}[\\s>/]", re.IGNORECASE).search(text, pos)
            if found is None:
                break
            pos = found.end()
            close = text.find(">", found.end() - 1)
            if close < 0:
                break
            pos = close + 1
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes, budget: _Budget) -> str:
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise _invalid(budget, "it is an encrypted PDF")
        pages = len(reader.pages)
        if pages > budget.limits.max_pages:
            raise _invalid(
                budget,
                f"it has {pages} pages, more than the {budget.limits.max_pages} allowed"
                " (THREADLINE_FILE_MAX_PAGES)",
            )
        return "\n\n".join(budget.take(page.extract_text() or "") for page in reader.pages)
    except FileContentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf reports damaged files through several exception types (its own decompression limits
        # among them: a stream inflating past them is a PdfReadError).
        raise _invalid(budget, f"it is not a readable PDF ({exc.__class__.__name__}: {exc})") from exc


_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_READ_BYTES = 1 << 16


class _DocxText:
    """expat handlers gathering a DOCX's paragraphs, counting elements against the budget."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.elements = 0
        self.open: list[list[str]] = []  # paragraphs being read (a text box nests one in another)
        self.in_text = False
        self.paragraphs: list[str] = []

    def start(self, name: str, _attrs: object) -> None:
        self.elements += 1
        if self.elements > self.budget.limits.max_xml_elements:
            raise _invalid(
                self.budget,
                f"its document has more than {self.budget.limits.max_xml_elements} XML elements"
                " (THREADLINE_FILE_MAX_XML_ELEMENTS)",
            )
        if name == f"{_W}p":
            self.open.append([])
        elif name == f"{_W}t":
            self.in_text = True
        elif self.open and name == f"{_W}tab":
            self.open[-1].append("\t")
        elif self.open and name in (f"{_W}br", f"{_W}cr"):
            self.open[-1].append("\n")

    def end(self, name: str) -> None:
        if name == f"{_W}t":
            self.in_text = False
        elif name == f"{_W}p" and self.open:
            text = "".join(self.open.pop())
            if text:
                self.paragraphs.append(self.budget.take(text))

    def data(self, text: str) -> None:
        if self.in_text and self.open:
            self.open[-1].append(text)

    def refuse_entities(self, *_args: object) -> None:
        # Word never writes these; refusing them rules out entity expansion attacks.
        raise _invalid(self.budget, "its XML declares entities")


def _docx(data: bytes, budget: _Budget) -> str:
    cap = budget.limits.max_inflated_bytes
    reader = _DocxText(budget)
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    parser.StartDoctypeDeclHandler = reader.refuse_entities
    parser.EntityDeclHandler = reader.refuse_entities
    inflated = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive, archive.open("word/document.xml") as member:
            # Count what is inflated rather than trusting the size the archive claims.
            while block := member.read(_READ_BYTES):
                inflated += len(block)
                if inflated > cap:
                    raise _invalid(
                        budget,
                        f"its document inflates past {cap} bytes (THREADLINE_FILE_MAX_INFLATED_BYTES)",
                    )
                parser.Parse(block, False)
                budget.check_time()
            parser.Parse(b"", True)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise _invalid(budget, f"it is not a readable DOCX ({exc})") from exc
    except expat.ExpatError as exc:
        raise _invalid(budget, f"its document XML is damaged ({exc})") from exc
    return "\n".join(reader.paragraphs)
