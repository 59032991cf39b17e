"""Synthesized questions are kept only when their FinQA program executes to the stated answer."""

from __future__ import annotations

import json
from pathlib import Path

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.pipeline import run_pipeline
from fingen.reasoning.synthesize import SynthQA, SynthSource, check_program, synthesize_items
from fingen.records import Passage, QAItem
from fingen.store import iter_jsonl
from tests.llm_handlers import Recorder, fake_engine, installed

TEXT = (
    "Visa reported payments volume of $5,829 billion in 2007, up from $5,735 billion in 2006. "
    "Operating margin was 42.5% in 2007. The company had 1,592 million cards in circulation, "
    "and net income rose to $1,253 million from $1,020 million a year earlier, while operating "
    "expenses were broadly flat at $2,730 million."
)
PASSAGE = Passage(passage_id="p1", doc_id="d1", text=TEXT, title="Visa 10-K 2007")
GOOD = {"question": "What was the percentage change in Visa's payments volume from 2006 to 2007?",
        "answer": "1.64%", "answer_type": "percent",
        "program": "subtract(5829, 5735), divide(#0, 5735)"}  # fmt: skip
MISMATCH = {"question": "By how much did Visa's net income grow from 2006 to 2007?",
            "answer": "$250 million", "answer_type": "number",
            "program": "subtract(1253, 1020)"}  # fmt: skip
INVALID = {"question": "What was Visa's net income margin in 2007?", "answer": "10%",
           "answer_type": "percent", "program": "ratio(1253, revenue)"}  # fmt: skip
UNGROUNDED = {"question": "What was Visa's 2007 revenue growth?", "answer": "12",
              "answer_type": "number", "program": "subtract(6263, 6251)"}  # fmt: skip
SPAN = {"question": "Which company reported 1,592 million cards in circulation?",
        "answer": "Visa", "answer_type": "span", "program": None}  # fmt: skip
MISSING = {"question": "How many cards were in circulation?", "answer": "1592",
           "answer_type": "number", "program": None}  # fmt: skip


def test_program_must_execute_to_the_stated_answer() -> None:
    src = SynthSource.from_passage(PASSAGE)
    assert check_program(SynthQA(**GOOD), src)[0] is None
    assert check_program(SynthQA(**GOOD), src)[2] == "0.01639"
    assert check_program(SynthQA(**MISMATCH), src)[0] == "program_mismatch"
    assert check_program(SynthQA(**INVALID), src)[0] == "program_invalid"
    assert check_program(SynthQA(**MISSING), src)[0] == "program_invalid"
    assert check_program(SynthQA(**UNGROUNDED), src)[0] == "program_ungrounded"
    assert check_program(SynthQA(**UNGROUNDED), src, require_grounded=False)[0] is None
    assert check_program(SynthQA(**SPAN), src)[0] is None


def test_table_sources_run_table_ops() -> None:
    rows = [["item", "2007", "2006"], ["net income", "1,253", "1,020"], ["cards", "1592", "1450"]]
    src = SynthSource.from_table(rows, title="Visa")
    assert "| net income | 1,253 | 1,020 |" in src.context
    qa = SynthQA(question="What was average net income over 2006-2007?", answer="1136.5",
                 answer_type="number", program="table_average(net income, none)")  # fmt: skip
    assert check_program(qa, src) == (None, "number:tolerance", "1136.5")
    wrong_row = qa.model_copy(update={"program": "table_average(revenue, none)"})
    assert check_program(wrong_row, src)[0] == "program_invalid"


def test_only_checked_questions_become_items() -> None:
    model = Recorder(lambda request: {"items": [GOOD, MISMATCH, INVALID, SPAN]})
    with fake_engine(model, model="m") as llm:
        [result] = list(synthesize_items([SynthSource.from_passage(PASSAGE)], llm, n=4))
    prompt = model.requests[0].messages[-1]["content"]
    assert "Write 4 question(s)" in prompt and "$5,829 billion" in prompt
    assert "table_sum" not in prompt  # no table in a plain passage
    assert result.ok
    assert [it.gold_answer for it in result.records] == ["1.64%", "Visa"]
    good = result.records[0]
    assert good.program == GOOD["program"] and good.meta["exe_ans"] == "0.01639"
    assert good.context == TEXT and good.meta["doc_id"] == "d1"
    assert [f.reason for f in result.failures] == ["program_mismatch", "program_invalid"]
    assert "executed '233'" in result.failures[0].detail


def test_synthesize_stage_counts_kept_and_rejected_questions(tmp_path: Path) -> None:
    doc = tmp_path / "visa.txt"
    doc.write_text(TEXT, encoding="utf-8")
    with installed(lambda request: {"items": [GOOD, MISMATCH, UNGROUNDED]}) as handler:
        config = PipelineConfig(
            name="synth",
            llm=LLMConfig(backend="fake", model="m", fake={"handler": handler}),
            stages=[
                StageConfig(stage="ingest", params={"paths": [str(doc)]}),
                StageConfig(stage="chunk"),
                StageConfig(stage="synthesize", params={"n": 3, "min_chars": 50}),
            ],
        )
        result = run_pipeline(config, tmp_path / "run")
    entry = result.stages["synthesize"]
    assert entry["inputs"] == 1 == entry["succeeded"] and entry["failed"] == 0
    assert entry["rejected_rows"] == 2
    assert entry["failures_by_reason"] == {"program_mismatch": 1, "program_ungrounded": 1}
    assert entry["extra"] == {"questions": 1, "answer_types": {"percent": 1}}
    [item] = list(iter_jsonl(result.run_dir / "synthesize.jsonl", QAItem))
    assert item.source == "synthesize" and item.answer_type == "percent"
    failures = [json.loads(x) for x in (result.run_dir / "synthesize.failures.jsonl").open()]
    assert {f["reason"] for f in failures} == {"program_mismatch", "program_ungrounded"}
    assert all(f["raw"] for f in failures)
