"""Sentence splitting (zh + en) and sentence-packed passages with exact offsets."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fingen.ingest import (
    CFBENCHMARK_FIELDS,
    FINANCEBENCH_FIELDS,
    IngestOptions,
    chunk_document,
    chunk_documents,
    load_documents,
    split_sentences,
)
from fingen.records import Document, Passage, content_id


def sentences(text: str, lang: str = "en") -> list[str]:
    return [text[a:b] for a, b in split_sentences(text, lang)]


def doc(text: str, lang: str = "en", doc_id: str = "d1") -> Document:
    return Document(doc_id=doc_id, title="ACME 10-K", text=text, lang=lang)


def assert_offsets_exact(document: Document, passages: list[Passage]) -> None:
    """Each passage is a slice of the document; each sentence a stripped slice of the passage."""
    cursor = 0
    for order, p in enumerate(passages):
        assert p.order == order and p.doc_id == document.doc_id
        assert p.text.strip() == p.text and p.text
        at = document.text.find(p.text, max(0, cursor - len(p.text)))
        assert at >= 0
        cursor = at + len(p.text)
        assert [s.idx for s in p.sentences] == list(range(len(p.sentences)))
        assert p.sentences[0].start == 0 and p.sentences[-1].end == len(p.text)
        for s, nxt in zip(p.sentences, p.sentences[1:], strict=False):
            assert s.end <= nxt.start
            assert p.text[s.end : nxt.start].strip() == ""
        for s in p.sentences:
            piece = p.sentence_text(s.idx)
            assert piece == p.text[s.start : s.end] and piece.strip() == piece and piece


# --- English -------------------------------------------------------------------------------


def test_english_split_skips_abbreviations_initials_and_decimals() -> None:
    text = (
        "Apple Inc. reported revenue of $3.5 billion in the U.S. market. Growth was 12.5%, "
        "e.g. in services. See Note No. 4 for details! Was it enough? J. Smith said yes. "
        "The plan ended in 2019. Results improved."
    )
    assert sentences(text) == [
        "Apple Inc. reported revenue of $3.5 billion in the U.S. market.",
        "Growth was 12.5%, e.g. in services.",
        "See Note No. 4 for details!",
        "Was it enough?",
        "J. Smith said yes.",
        "The plan ended in 2019.",
        "Results improved.",
    ]


def test_english_closing_quotes_stay_with_their_sentence() -> None:
    text = 'He said "sales fell." Then the stock dropped (by 5%.) Next year "Growth?" Maybe.'
    assert sentences(text) == [
        'He said "sales fell."',
        "Then the stock dropped (by 5%.)",
        'Next year "Growth?"',
        "Maybe.",
    ]


def test_lines_bullets_and_table_rows_are_boundaries() -> None:
    text = (
        "Key figures\n"
        "- Revenue up 5%\n"
        "- Margin down\n"
        "Revenue  1,234  1,100\n"
        "Net income  321  300\n"
        "1. First item\n"
        "2. Second item"
    )
    assert sentences(text) == text.split("\n")


def test_hard_wrapped_pdf_lines_are_joined_into_sentences() -> None:
    text = (
        "The Company aims to reduce risk through asset diversification and long duration\n"
        "fixed-income securities. The Company's ticker symbol on the exchange is listed as\n"
        "MMM. Changes in rates can impact liabilities.\n"
        "\n"
        "Short heading\n"
        "Body starts here."
    )
    assert sentences(text) == [
        "The Company aims to reduce risk through asset diversification and long duration\n"
        "fixed-income securities.",
        "The Company's ticker symbol on the exchange is listed as\nMMM.",
        "Changes in rates can impact liabilities.",
        "Short heading",
        "Body starts here.",
    ]


# --- Chinese -------------------------------------------------------------------------------


def test_chinese_split_on_terminators_with_closing_quotes_and_brackets() -> None:
    text = "公司发布公告。“提价幅度约10%！”我们维持评级；（风险提示：需求不及预期。）目标价15.28元……后续关注？是"
    assert sentences(text, "zh") == [
        "公司发布公告。",
        "“提价幅度约10%！”",
        "我们维持评级；",
        "（风险提示：需求不及预期。）",
        "目标价15.28元……",
        "后续关注？",
        "是",
    ]


def test_chinese_ideographic_spaces_and_newlines_are_trimmed() -> None:
    text = "　　事件：公司发布业绩预告。\n　　盈利预测：维持买入评级。"
    assert sentences(text, "zh") == ["事件：公司发布业绩预告。", "盈利预测：维持买入评级。"]


# --- packing ---------------------------------------------------------------------------------


def test_passages_pack_whole_sentences_up_to_max_chars() -> None:
    text = " ".join(f"Sentence number {i} reports revenue growth of {i}.5%." for i in range(40))
    document = doc(text)
    passages = chunk_document(document, max_chars=200, min_chars=0)
    assert len(passages) > 5
    assert all(len(p.text) <= 200 for p in passages)
    assert " ".join(p.text for p in passages) == text
    assert_offsets_exact(document, passages)


def test_overlong_sentence_is_hard_split_at_spaces() -> None:
    words = " ".join(f"word{i}" for i in range(300))
    document = doc(f"Short one. {words}. Tail sentence here.")
    passages = chunk_document(document, max_chars=100, min_chars=0)
    assert all(len(p.text) <= 100 for p in passages)
    assert all(not p.text.startswith(("ord", "rd")) for p in passages)
    assert " ".join(p.text for p in passages).split() == document.text.split()
    assert_offsets_exact(document, passages)


def test_overlong_chinese_sentence_is_hard_split() -> None:
    document = doc("营业收入" * 200 + "。结束。", lang="zh")
    passages = chunk_document(document, max_chars=150)
    assert all(len(p.text) <= 150 for p in passages)
    assert "".join(p.text for p in passages) == document.text
    assert_offsets_exact(document, passages)


def test_overlap_repeats_trailing_sentences() -> None:
    text = " ".join(f"Fact {i} is stated here." for i in range(12))
    document = doc(text)
    passages = chunk_document(document, max_chars=70, overlap_sentences=1, min_chars=0)
    for prev, nxt in itertools.pairwise(passages):
        assert nxt.sentence_text(0) == prev.sentence_text(len(prev.sentences) - 1)
    assert_offsets_exact(document, passages)


def test_short_tail_merges_into_previous_passage() -> None:
    document = doc("A" * 90 + ". " + "B" * 90 + ". Tiny end.")
    passages = chunk_document(document, max_chars=100, min_chars=20)
    assert [p.text[-9:] for p in passages] == ["A" * 8 + ".", "Tiny end."]
    assert len(passages[1].sentences) == 2
    assert_offsets_exact(document, passages)


def test_default_budget_depends_on_language() -> None:
    zh = doc("公司业绩稳定增长。" * 200, lang="zh")
    en = doc("Revenue grew steadily this year. " * 200)
    assert max(len(p.text) for p in chunk_document(zh, min_chars=0)) <= 600
    en_lengths = [len(p.text) for p in chunk_document(en, min_chars=0)]
    assert 600 < max(en_lengths) <= 1200


def test_passage_ids_are_stable_and_carry_title_and_lang() -> None:
    document = doc("公司发布公告。我们维持评级。", lang="zh")
    first = chunk_document(document)
    assert first == chunk_document(document)
    (p,) = first
    assert p.passage_id == content_id("d1", 0, p.text)
    assert (p.title, p.lang) == ("ACME 10-K", "zh")


def test_whitespace_only_document_gives_no_passages() -> None:
    assert chunk_document(doc(" \n\t\u3000 ")) == []


def test_chunk_documents_streams_many_documents() -> None:
    docs = (doc(f"Document {i} says revenue rose.", doc_id=f"d{i}") for i in range(3))
    passages = chunk_documents(docs)
    assert next(passages).doc_id == "d0"
    assert [p.doc_id for p in passages] == ["d1", "d2"]


@pytest.mark.parametrize("kwargs", [{"max_chars": 0}, {"overlap_sentences": -1}, {"min_chars": -5}])
def test_invalid_arguments_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        chunk_document(doc("Some text."), **kwargs)


# --- real text -------------------------------------------------------------------------------


def test_offsets_hold_on_real_financebench_pages(shared_data: Path) -> None:
    path = shared_data / "financebench_pages" / "pages.jsonl.gz"
    docs, _ = load_documents(path, options=IngestOptions(fields=FINANCEBENCH_FIELDS, limit=40))
    total = 0
    for document in docs:
        passages = chunk_document(document, max_chars=800, overlap_sentences=1)
        assert_offsets_exact(document, passages)
        total += len(passages)
    assert total > 40
    page = next(d for d in docs if "ticker symbol is" in d.text)
    texts = [p.sentence_text(s.idx) for p in chunk_document(page) for s in p.sentences]
    assert any(t.startswith("The Company’s ticker symbol is") and t.endswith("MMM.") for t in texts)


def test_offsets_hold_on_real_chinese_reports(shared_data: Path) -> None:
    path = shared_data / "cfbenchmark_cn" / "summary.jsonl"
    docs, _ = load_documents(path, options=IngestOptions(fields=CFBENCHMARK_FIELDS, limit=40))
    for document in docs:
        passages = chunk_document(document)
        assert_offsets_exact(document, passages)
        ends = [p.sentence_text(s.idx)[-1] for p in passages for s in p.sentences]
        assert sum(e in "。！？；”）" for e in ends) >= 0.7 * len(ends)
