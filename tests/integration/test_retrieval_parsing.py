"""Parsing each format (fixtures made at run time), refusing what cannot be read, and chunk bounds."""

from __future__ import annotations

import io
import json
import time
import zipfile
import zlib

import pytest

from threadline.config import Settings
from threadline.domain.ports.retrieval import ChunkingStrategy
from threadline.errors import FileContentError
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.chunking import chunk_text
from threadline.retrieval.parsing import ParseLimits, parse
from threadline.retrieval.terms import terms

CL100K = tiktoken_encoding("cl100k_base")


def make_pdf(pages: list[str]) -> bytes:
    """A PDF with one line of Helvetica text per page, written with pypdf."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
        stream = ContentStream(None, writer)
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(paragraphs: list[str], *, padding: int = 0) -> bytes:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    xml = f'<?xml version="1.0"?><w:document xmlns:w="{w}"><w:body>{body}</w:body></w:document>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", xml + " " * padding)
    return out.getvalue()


def test_text_markdown_and_code() -> None:
    assert parse("notes.txt", "Plain text, café.".encode()) == "Plain text, café."
    assert "# Title" in parse("README.md", b"# Title\n\nSome *markdown*.")
    assert "def add(a, b):" in parse("lib.py", b"def add(a, b):\n    return a + b\n")
    assert parse("bom.txt", "\ufeffwith a BOM".encode()) == "with a BOM"
    assert parse("wide.txt", "UTF-16 text".encode("utf-16")) == "UTF-16 text"


def test_json() -> None:
    body = json.dumps({"product": "kettle", "price": 30}).encode()
    assert '"kettle"' in parse("data.json", body)
    with pytest.raises(FileContentError, match="not valid JSON") as caught:
        parse("broken.json", b'{"product": ')
    assert caught.value.code == "invalid_file"


def test_html_keeps_text_and_drops_scripts() -> None:
    page = b"""<html><head><title>t</title><style>p{color:red}</style></head>
    <body><h1>Refunds</h1><p>Returns within <b>30 days</b>.</p><script>alert('x')</script></body></html>"""
    text = parse("policy.html", page)
    assert text.splitlines() == ["Refunds", "Returns within 30 days."]
    assert "alert" not in text and "color" not in text


def test_pdf() -> None:
    text = parse("report.pdf", make_pdf(["First page about tides.", "Second page about volcanoes."]))
    assert "tides" in text and "volcanoes" in text
    assert text.index("tides") < text.index("volcanoes")


def test_docx() -> None:
    text = parse("memo.docx", make_docx(["Quarterly report", "Revenue grew 12%.", "收入增长"]))
    assert text.splitlines() == ["Quarterly report", "Revenue grew 12%.", "收入增长"]


@pytest.mark.parametrize(
    ("filename", "data", "code", "reason"),
    [
        ("image.png", b"\x89PNG\r\n\x1a\n", "unsupported_file", "not supported"),
        ("report.pdf", b"%PDF-1.7\nthis is not a pdf at all", "invalid_file", "not a readable PDF"),
        ("memo.docx", b"PK\x03\x04 truncated", "invalid_file", "not a readable DOCX"),
        ("blob.txt", b"\x00\x01\x02binary", "invalid_file", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "invalid_file", "not UTF-8"),
        ("empty.md", b"   \n\n", "invalid_file", "no text"),
        ("empty.pdf", None, "invalid_file", "no text"),
    ],
)
def test_unreadable_files_give_a_reason(filename: str, data: bytes | None, code: str, reason: str) -> None:
    with pytest.raises(FileContentError, match=reason) as caught:
        parse(filename, data if data is not None else make_pdf([""]))
    assert caught.value.code == code
    assert caught.value.status == 400
    assert filename.split(".")[-1] in caught.value.message


def test_docx_zip_bomb_stops_at_the_cap() -> None:
    bomb = make_docx(["boom"], padding=ParseLimits().max_inflated_bytes + 10)
    assert len(bomb) < ParseLimits().max_inflated_bytes // 100  # spaces compress a thousandfold
    with pytest.raises(FileContentError, match="inflates past"):
        parse("bomb.docx", bomb)


def test_docx_entities_are_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(
            "word/document.xml",
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;&a;</d>',
        )
    with pytest.raises(FileContentError, match="entities"):
        parse("laughs.docx", out.getvalue())


def test_size_limits() -> None:
    with pytest.raises(FileContentError, match="4 pages, more than the 3 allowed"):
        parse("long.pdf", make_pdf(["a", "b", "c", "d"]), ParseLimits(max_pages=3))
    with pytest.raises(FileContentError, match="more than 100 characters"):
        parse("long.txt", b"x" * 101, ParseLimits(max_characters=100))
    with pytest.raises(FileContentError, match="longer than 0 s"):
        parse("slow.pdf", make_pdf(["a"]), ParseLimits(timeout_seconds=0))
    settings = Settings(file_max_pages=7, file_max_characters=8, file_parse_timeout_seconds=9.0)
    assert ParseLimits.from_settings(settings) == ParseLimits(8, 7, 9.0, 64 * 1024 * 1024, 2_000_000, 100)


LONG_TEXT = " ".join(f"Sentence {i} is about topic {i % 7} and 第{i}个话题。" for i in range(400))


@pytest.mark.parametrize(("size", "overlap"), [(800, 400), (100, 0), (100, 50), (333, 100), (4096, 2048)])
def test_chunks_respect_size_and_overlap(size: int, overlap: int) -> None:
    chunks = chunk_text(LONG_TEXT, ChunkingStrategy(size, overlap), CL100K)
    total = len(CL100K.encode(LONG_TEXT))
    assert chunks, "no chunks"
    for chunk in chunks:
        assert chunk.token_count <= size
        assert len(CL100K.encode(chunk.text)) <= size
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    # Windows start every (size - overlap) tokens and the last one reaches the end.
    step = size - overlap
    expected = 1 if total <= size else 1 + -(-(total - size) // step)
    assert len(chunks) == expected
    assert chunks[-1].text.endswith("话题。")
    if len(chunks) > 1 and overlap:
        tail = CL100K.encode(chunks[0].text)[-overlap // 2 :]
        assert CL100K.decode(tail).strip() in chunks[1].text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}, "max_chunk"),
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}},
            "max_chunk",
        ),
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}},
            "overlap",
        ),
        ({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": -1}}, "overlap"),
        ({"type": "static", "static": {"max_chunk_size_tokens": "800", "chunk_overlap_tokens": 1}}, "static"),
        ({"type": "semantic"}, "chunking_strategy"),
    ],
)
def test_chunking_strategy_bounds(body: dict[str, object], param: str) -> None:
    from threadline.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as caught:
        ChunkingStrategy.from_request(body)
    assert param in (caught.value.param or "")


def test_auto_is_800_and_400() -> None:
    assert ChunkingStrategy.from_request(None) == ChunkingStrategy(800, 400)
    assert ChunkingStrategy.from_request({"type": "auto"}).to_object() == {
        "type": "static",
        "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
    }


def test_terms_split_cjk_into_bigrams_and_latin_into_words() -> None:
    assert terms("Refund policy: 退款政策") == ["refund", "policy", "退款", "款政", "政策"]
    assert terms("日本語のテキスト") == ["日本", "本語", "語の", "のテ", "テキ", "キス", "スト"]
    assert terms("字 Python3_x") == ["字", "python3", "x"]


HOSTILE_HTML = {
    "unclosed tags": "<a " * 330_000,
    "unclosed quote": '<a title="' * 100_000,
    "deep nesting": "<div>" * 200_000 + "deep",
    "huge attribute list": "<p " + " ".join(f'a{i}="v"' for i in range(120_000)) + ">attrs</p>",
    "entities": "&amp;&#x41;&notanentity;" * 40_000,
    "open comments": "<!--" * 250_000,
    "open scripts": "<script>" * 125_000,
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HTML))
def test_html_is_read_in_linear_time(case: str) -> None:
    page = HOSTILE_HTML[case].encode()
    assert len(page) >= 900_000
    started = time.perf_counter()
    try:
        parse("hostile.html", page)
    except FileContentError as exc:
        assert exc.code == "invalid_file" and "no text" in exc.message
    # html.parser needs minutes for 100 KB of unclosed tags; a linear reader a fraction of a second.
    assert time.perf_counter() - started < 5


def test_html_quoted_brackets_entities_and_raw_text() -> None:
    page = b"""<p title="a > b" data-x='<c>'>Fish &amp; chips&nbsp;&#x263A;</p><SCRIPT type="x">a<b</SCRIPT
    ><p>after < lone &bogus;</p><template>hidden</template><br/>end"""
    assert parse("q.html", page).splitlines() == ["Fish & chips \u263a", "after < lone &bogus;", "end"]


def test_json_nesting_is_refused_by_depth_naming_the_setting() -> None:
    with pytest.raises(FileContentError, match=r"deeper than 3 levels.*THREADLINE_FILE_MAX_JSON_DEPTH"):
        parse("deep.json", b'{"a": [[{"b": 1}]]}', ParseLimits(max_json_depth=3))
    assert parse("ok.json", b'{"a": "[[[[{{{{", "b": [[1]]}', ParseLimits(max_json_depth=3))
    with pytest.raises(FileContentError, match="THREADLINE_FILE_MAX_JSON_DEPTH") as caught:
        parse("deep.json", b"[" * 400_000 + b"]" * 400_000)
    assert caught.value.code == "invalid_file"


def test_docx_of_millions_of_empty_paragraphs_stops_at_the_element_budget() -> None:
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    xml = f'<w:document xmlns:w="{w}"><w:body>{"<w:p/>" * 3_000_000}</w:body></w:document>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", xml)
    with pytest.raises(FileContentError, match=r"more than 100000 XML elements.*MAX_XML_ELEMENTS"):
        parse("bomb.docx", out.getvalue(), ParseLimits(max_xml_elements=100_000))


def test_a_pdf_whose_page_inflates_to_300_mb_is_refused_quickly() -> None:
    from pypdf import PdfWriter
    from pypdf.generic import NameObject, StreamObject

    squeeze = zlib.compressobj(9)
    parts = [squeeze.compress(b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n")]
    block = b" " * (1 << 20)
    parts += [squeeze.compress(block) for _ in range(300)]
    stream = StreamObject()
    stream._data = b"".join(parts) + squeeze.flush()
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    assert len(out.getvalue()) < 400_000
    started = time.perf_counter()
    with pytest.raises(FileContentError) as caught:
        parse("bomb.pdf", out.getvalue())
    assert caught.value.code == "invalid_file"
    assert time.perf_counter() - started < 5  # pypdf stops inflating at its own limit (75 MB)
