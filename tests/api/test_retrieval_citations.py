"""Numbered results for the model, and its citation markers turned into ``file_citation`` annotations."""

from __future__ import annotations

from threadline.domain.ports.citations import FileCitation, Source, annotate, format_results

REPORT = Source("file-report", "report.pdf", "Revenue grew 12% in the third quarter.")
MEMO = Source("file-memo", "memo.docx", "The office moves to Berlin in May.")
NOTES = Source("file-notes", "笔记.md", "会议定在周五。")


def test_results_are_shown_under_their_markers() -> None:
    text = format_results(3, [REPORT, MEMO])
    assert text == (
        "【3:0†report.pdf】\nRevenue grew 12% in the third quarter.\n\n"
        "【3:1†memo.docx】\nThe office moves to Berlin in May."
    )
    assert format_results(0, []) == "No results found in the files."


def test_markers_become_annotations_over_their_characters() -> None:
    answer = (
        "Revenue grew 12%【3:0†report.pdf】 and the office moves【3:1†memo.docx】. 周五开会【5:0†笔记.md】。"
    )
    citations = annotate(answer, {3: [REPORT, MEMO], 5: [NOTES]})
    assert [c.file_id for c in citations] == ["file-report", "file-memo", "file-notes"]
    for citation in citations:
        assert answer[citation.start_index : citation.end_index] == citation.text
    assert citations[0] == FileCitation("【3:0†report.pdf】", 16, 32, "file-report")


def test_markers_naming_no_result_are_left_alone() -> None:
    answer = "A【3:7†report.pdf】 B【9:0†x】 C【3:1†source】 D【3:x†y】 E[3:0†report.pdf]"
    citations = annotate(answer, {3: [REPORT, MEMO]})
    # Only 3:1 names a result; the filename the model wrote does not matter (it often says "source").
    assert [(c.text, c.file_id) for c in citations] == [("【3:1†source】", "file-memo")]
    assert annotate("no markers at all", {3: [REPORT]}) == []
