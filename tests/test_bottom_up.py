"""Bottom-up generation: prompt building and parsing on real passages, every rejection reason,
and the shared row checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fingen.ingest import chunk_document
from fingen.llm.base import Completion
from fingen.llm.tasks import RowRejected
from fingen.records import Document, Failure, Passage, Qrel, Query, content_id
from fingen.retrieval.bottom_up import (
    REJECT_REASONS,
    BottomUpReply,
    BottomUpTask,
    numbered_sentences,
)
from fingen.retrieval.checks import (
    cjk_ratio,
    dedup_key,
    find_span,
    is_question,
    language_matches,
    ngram_overlap,
    normalize_ws,
)

DONE = Completion(text="{}")


def _prose(passages: list[Passage], min_sentences: int = 4) -> Passage:
    """The first passage that reads as prose (several long sentences)."""
    for p in passages:
        lengths = [s.end - s.start for s in p.sentences]
        if len(lengths) >= min_sentences and sum(lengths) / len(lengths) > 60:
            return p
    raise AssertionError("no prose passage")


@pytest.fixture(scope="module")
def en_passage(shared_data: Path) -> Passage:
    """A prose passage of 3M's 2018 10-K (FinanceBench pages)."""
    docs = []
    with gzip.open(shared_data / "financebench_pages" / "pages.jsonl.gz", "rt") as f:
        for line in f:
            row = json.loads(line)
            if row["doc_name"] == "3M_2018_10K" and 20 <= row["page"] < 40:
                docs.append(Document(doc_id=row["doc_id"], title=row["doc_name"], text=row["text"]))
    return _prose([p for d in docs for p in chunk_document(d)])


@pytest.fixture(scope="module")
def zh_passage(shared_data: Path) -> Passage:
    """The first passage of a CFBenchmark research-report excerpt."""
    with (shared_data / "cfbenchmark_cn" / "summary.jsonl").open(encoding="utf-8") as f:
        row = json.loads(f.readline())
    doc = Document(doc_id=row["id"], text=row["input"], lang="zh")
    return _prose(chunk_document(doc), min_sentences=3)


def _reply(**parts: object) -> BottomUpReply:
    return BottomUpReply.model_validate(parts)


def _sq(question: str, ids: list[int], evidence: str) -> dict[str, object]:
    return {"question": question, "sentence_ids": ids, "evidence": evidence, "answer": "a"}


def _split(out: list) -> tuple[list[Query], list[Qrel], list[Failure]]:
    return (
        [r for r in out if isinstance(r, Query)],
        [r for r in out if isinstance(r, Qrel)],
        [r for r in out if isinstance(r, Failure)],
    )


def test_prompt_numbers_every_sentence_of_a_real_en_passage(en_passage: Passage) -> None:
    task = BottomUpTask(lang="en", model="m", sentence_queries=3, passage_queries=2)
    messages = task.build(en_passage)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    for s in numbered_sentences(en_passage):
        assert f"[{s['idx']}] {s['text']}" in user
    assert "Exactly 3 sentence-level" in user and "Exactly 2 passage-level" in user
    assert '"3M_2018_10K"' in user


def test_prompt_is_chinese_for_a_real_zh_passage(zh_passage: Passage) -> None:
    messages = BottomUpTask(lang="zh", model="m").build(zh_passage)
    user = messages[-1]["content"]
    assert "恰好 2 个句子级问题" in user and "恰好 1 个段落级问题" in user
    assert f"[0] {numbered_sentences(zh_passage)[0]['text']}" in user


def test_valid_rows_give_queries_with_direct_qrels(en_passage: Passage) -> None:
    task = BottomUpTask(lang="en", model="qwen", sentence_queries=1, passage_queries=1)
    s1 = en_passage.sentence_text(1)
    reply = _reply(
        sentence_queries=[_sq("What did 3M report about this topic in its 2018 10-K?", [1], s1)],
        passage_queries=[{"question": "How did 3M describe its overall position in 2018?"}],
    )
    queries, qrels, failures = _split(task.parse(en_passage, reply, DONE))
    assert failures == []
    assert [q.level for q in queries] == ["sentence", "passage"]
    sq, pq = queries
    assert sq.query_id == content_id(sq.text, "sentence", en_passage.passage_id)
    assert sq.evidence_sentence_ids == [1] and sq.evidence == s1 and sq.answer == "a"
    assert pq.evidence_sentence_ids is None and pq.answer is None
    assert sq.origin == task.origin and task.origin.endswith("@qwen") and len(task.origin) == 17
    assert sq.source_passage_ids == [en_passage.passage_id]
    assert sq.source_doc_ids == [en_passage.doc_id]
    assert {(r.query_id, r.passage_id, r.score, r.kind) for r in qrels} == {
        (q.query_id, en_passage.passage_id, 2, "direct") for q in queries
    }


def test_query_ids_are_stable_across_runs(en_passage: Passage) -> None:
    reply = _reply(passage_queries=[{"question": "How did 3M fund its 2018 dividends?"}])
    a = BottomUpTask(passage_queries=1, sentence_queries=0).parse(en_passage, reply, DONE)
    b = BottomUpTask(passage_queries=1, sentence_queries=0).parse(en_passage, reply, DONE)
    assert a == b


def test_span_check_tolerates_whitespace_and_line_breaks(en_passage: Passage) -> None:
    s0 = en_passage.sentence_text(0)
    reflowed = "\n   ".join(s0.split())
    reply = _reply(
        sentence_queries=[_sq("What does 3M state first in its 2018 annual report?", [0], reflowed)]
    )
    queries, _, failures = _split(BottomUpTask(passage_queries=0).parse(en_passage, reply, DONE))
    assert failures == [] and len(queries) == 1


def test_zh_rows_pass_without_the_spaces_pdf_text_has(zh_passage: Passage) -> None:
    s0 = zh_passage.sentence_text(0)
    evidence = "".join(s0.split())  # models drop the spaces between Chinese and numbers
    reply = _reply(
        sentence_queries=[_sq("公司2018年业绩预告的主要内容是什么？", [0], evidence)],
        passage_queries=[{"question": "煤化工龙头的成本优势如何支撑公司未来成长？"}],
    )
    queries, qrels, failures = _split(BottomUpTask(lang="zh").parse(zh_passage, reply, DONE))
    assert failures == [] and len(queries) == 2 and len(qrels) == 2
    assert all(q.lang == "zh" for q in queries)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_sq("What did 3M report in 2018?", [99], "x"), "bad_sentence_ids"),
        (_sq("What did 3M report in 2018?", [], "x"), "bad_sentence_ids"),
        (
            _sq("What did 3M report in 2018?", [0], "words the passage never says"),
            "span_not_verbatim",
        ),
        (_sq("What did 3M report in 2018?", [0], ""), "span_too_short"),
        (_sq("What did 3M report in 2018?", [0], "<s0:8>"), "span_too_short"),
        (_sq("What did 3M report in 2018?", [0], "<s1>"), "span_outside_cited"),
        (_sq("What does this page say about 3M in 2018?", [0], "<s0>"), "not_self_contained"),
        (_sq("What is the name of the company?", [0], "<s0>"), "not_self_contained"),
        (_sq("What did Honeywell report in 2018?", [0], "<s0>"), "unsupported_entity"),
        (_sq("What did 3M report in 2021?", [0], "<s0>"), "unsupported_entity"),
        (_sq("3M reported higher sales in 2018.", [0], "<s0>"), "not_a_question"),
        (_sq("<s0>?", [0], "<s0>"), "copies_passage"),
        (_sq("3M在2018年的原材料成本如何变化？", [0], "<s0>"), "wrong_language"),
    ],
)
def test_each_bad_sentence_row_is_rejected_with_its_reason(
    en_passage: Passage, row: dict, reason: str
) -> None:
    s0, s1 = en_passage.sentence_text(0), en_passage.sentence_text(1)

    def fill(v: object) -> object:
        if not isinstance(v, str):
            return v
        return v.replace("<s0:8>", s0[:8]).replace("<s0>", s0).replace("<s1>", s1)

    row = {k: fill(v) for k, v in row.items()}
    out = BottomUpTask(passage_queries=0).parse(en_passage, _reply(sentence_queries=[row]), DONE)
    queries, qrels, failures = _split(out)
    assert queries == [] and qrels == []
    assert [f.reason for f in failures] == [reason]
    assert failures[0].stage == "bottom_up" and failures[0].item_id == en_passage.passage_id
    assert json.loads(failures[0].raw)["question"] == row["question"]
    assert reason in REJECT_REASONS


def test_near_duplicates_and_extra_rows_are_rejected(en_passage: Passage) -> None:
    task = BottomUpTask(lang="en", sentence_queries=1, passage_queries=2)
    s0 = en_passage.sentence_text(0)
    reply = _reply(
        sentence_queries=[
            _sq("What does 3M expect for 2018?", [0], s0),
            _sq("What else does 3M expect for 2018?", [0], s0),
        ],
        passage_queries=[
            {"question": "what does 3M  expect for 2018"},  # same as the first, bar case/space
            {"question": "How does 3M describe its financial position for 2018?"},
            {"question": "Why does 3M mention its credit ratings?"},
        ],
    )
    queries, _, failures = _split(task.parse(en_passage, reply, DONE))
    assert [q.text for q in queries] == [
        "What does 3M expect for 2018?",
        "How does 3M describe its financial position for 2018?",
    ]
    assert sorted(f.reason for f in failures) == ["duplicate", "over_quota", "over_quota"]


def test_an_empty_reply_rejects_the_passage(en_passage: Passage) -> None:
    with pytest.raises(RowRejected) as exc:
        BottomUpTask().parse(en_passage, _reply(), DONE)
    assert exc.value.reason == "no_queries"


def test_asking_for_no_queries_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BottomUpTask(sentence_queries=0, passage_queries=0)


def test_unsplit_passage_shows_its_text_as_sentence_zero() -> None:
    p = Passage(passage_id="p", doc_id="d", text="Revenue  rose\n5%.")
    assert numbered_sentences(p) == [{"idx": 0, "text": "Revenue rose 5%."}]


# --- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("What was 3M's 2018 revenue?", "en", True),
        ("How did margins change in 2018", "en", True),
        ("Net sales rose 3.5% in 2018.", "en", False),
        ("Revenue?", "en", False),
        ("公司2018年归母净利润是多少？", "zh", True),
        ("公司2018年的毛利率为何下降", "zh", True),
        ("公司2018年业绩符合预期吗", "zh", True),
        ("公司几乎没有负债。", "zh", False),
        ("公司2018年实现营收增长。", "zh", False),
    ],
)
def test_is_question(text: str, lang: str, expected: bool) -> None:
    assert is_question(text, lang) is expected


def test_language_is_judged_by_cjk_ratio() -> None:
    assert cjk_ratio("abc") == 0.0 and cjk_ratio("营收") == 1.0 and cjk_ratio("123") == 0.0
    assert language_matches("贵州茅台2018年ROE是多少？", "zh")
    assert not language_matches("What was ROE?", "zh")
    assert not language_matches("茅台的ROE是多少？", "en")


def test_find_span_returns_offsets_in_the_original_text() -> None:
    text = "Net sales  were\n$32.8 billion in 2018. 公司 2018 年 营收 增长"
    start, end = find_span("were $32.8 billion", text)
    assert text[start:end] == "were\n$32.8 billion"
    start, end = find_span("公司2018年营收", text)
    assert text[start:end] == "公司 2018 年 营收"
    assert find_span("were $33 billion", text) is None and find_span("  ", text) is None
    assert normalize_ws("ａｂｃ  d") == "abc d"  # NFKC folds full-width forms


def test_overlap_and_dedup_key() -> None:
    passage = "Net sales in 2018 were $32.8 billion, up 3.5 percent."
    assert ngram_overlap("Net sales in 2018 were $32.8 billion?", passage) == 1.0
    assert ngram_overlap("What were 3M's total sales last year?", passage) < 0.3
    assert dedup_key("What were sales?") == dedup_key("what  were SALES")


def test_reply_schema_holds_the_quotas_so_a_constrained_decoder_cannot_overrun() -> None:
    schema = BottomUpTask(lang="zh", sentence_queries=2, passage_queries=1).response_model
    props = schema.model_json_schema()["properties"]
    assert (props["sentence_queries"]["minItems"], props["sentence_queries"]["maxItems"]) == (2, 2)
    assert (props["passage_queries"]["minItems"], props["passage_queries"]["maxItems"]) == (1, 1)
    sq = schema.model_json_schema()["$defs"]["SentenceQuery"]["properties"]
    assert sq["evidence"]["minLength"] == 8 and sq["question"]["maxLength"] == 300
    # validation stays lenient: an extra row is an over_quota failure, not a lost reply
    extra = {"question": "x?", "sentence_ids": [0], "evidence": "y"}
    assert len(schema.model_validate({"sentence_queries": [extra] * 3}).sentence_queries) == 3


def test_prompt_shows_the_documents_metadata() -> None:
    p = Passage(passage_id="p", doc_id="d", text="Revenue rose 8% in 2023. Margin fell.",
                title="ACME annual report", company="ACME Corp", date="2023",
                doc_type="10-K", industry="Industrials")  # fmt: skip
    user = BottomUpTask().build(p)[-1]["content"]
    assert "company ACME Corp" in user and "type 10-K" in user and "period 2023" in user
    assert "industry Industrials" in user and "at least 20 characters" in user
