"""QA sources -> QAItem: FinQA and TAT-QA (real dev data), ConvFinQA, JSONL/CSV/HF mappings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fingen.errors import InputError
from fingen.reasoning.mapped import FieldMapping, load_csv, load_hf_dataset, load_jsonl
from fingen.reasoning.programs import execute_program
from fingen.reasoning.sources import load_convfinqa, load_finqa, load_tatqa
from fingen.reasoning.tables import render_table
from fingen.records import Failure, QAItem, content_id

TABLE = [["year", "price"], ["2007", "$ 60.94"], ["2005", "$ 25.14"]]
QUESTIONS = [
    "what was the weighted average exercise price per share in 2007?",
    "and what was it in 2005?",
    "what was, then, the change over the years?",
    "and how much does this change represent in relation to the 2005 price, in percentage?",
]
ANSWERS = [60.94, 25.14, 35.8, 1.42403]
PROGRAMS = ["60.94", "25.14", "subtract(60.94, 25.14)", "subtract(60.94, 25.14), divide(#0, 25.14)"]


def split(items):
    items = list(items)
    return [i for i in items if isinstance(i, QAItem)], [i for i in items if isinstance(i, Failure)]


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def conversation() -> dict:
    return {
        "id": "Single_MRO/2007/page_134.pdf-1",
        "pre_text": ["the table shows prices ."],
        "post_text": ["."],
        "table": TABLE,
        "annotation": {
            "dialogue_break": QUESTIONS,
            "turn_program": PROGRAMS,
            "exe_ans_list": ANSWERS,
        },
    }


def test_render_table_is_one_markdown_format() -> None:
    text = render_table([[" a ", "b|c"], ["1", "  2\n 3 ", "extra"]])
    assert text == "| a | b\\|c |  |\n| --- | --- | --- |\n| 1 | 2 3 | extra |"
    assert render_table([]) == ""


def test_finqa_dev_items_load_with_context_program_and_types(shared_data) -> None:
    items, failures = split(load_finqa(shared_data / "finqa_dev200" / "dev_200.json"))
    assert (len(items), failures) == (200, [])
    first = items[0]
    assert (
        first.question == "what is the average payment volume per transaction for american express?"
    )
    assert (first.gold_answer, first.answer_type, first.program) == (
        "127.4",
        "number",
        "divide(637, const_5)",
    )
    assert first.meta["exe_ans"] == 127.4 and first.meta["answer"] == "127.40"
    assert "| american express | 637 | 647 | 5.0 | 86 |" in first.context
    assert first.context.index("largest operators") < first.context.index("| company |")
    assert first.qa_id == content_id("finqa", first.meta["id"], first.question)
    kinds = {i.answer_type for i in items}
    assert kinds == {"number", "percent", "yes_no"}
    assert {i.gold_answer for i in items if i.answer_type == "yes_no"} == {"yes", "no"}
    assert len({i.qa_id for i in items}) == 200
    for item in items[:20]:  # the kept program still reproduces the gold
        result = execute_program(item.program, item.meta["table"])
        assert result == item.meta["exe_ans"] or abs(result - item.meta["exe_ans"]) < 1e-5


def test_finqa_malformed_items_become_failures(tmp_path: Path) -> None:
    good = {"id": "g", "pre_text": [], "post_text": [], "table": TABLE,
            "qa": {"question": "q?", "exe_ans": 0.5, "program": "divide(1, 2)", "answer": "50%"}}  # fmt: skip
    bad = [{"id": "no-qa"}, {"id": "bad-ans", "qa": {"question": "q?", "exe_ans": "maybe"}}, 7]
    items, failures = split(load_finqa(write_json(tmp_path / "f.json", [good, *bad])))
    assert [i.answer_type for i in items] == ["percent"]
    assert [f.item_id for f in failures] == ["no-qa", "bad-ans", "3"]
    assert all(f.stage == "sources" and f.reason == "malformed_item" and f.raw for f in failures)


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_finqa(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InputError, match="not valid json"):
        list(load_tatqa(tmp_path / "broken.json"))


def test_tatqa_dev_questions_map_types_and_keep_scale(shared_data) -> None:
    items, failures = split(load_tatqa(shared_data / "tatqa" / "tatqa_dataset_dev.json"))
    assert (len(items), failures) == (1668, [])
    by_type = {i.answer_type for i in items}
    assert by_type == {"span", "multi_span", "number", "percent"}
    change = next(
        i for i in items if i.question == "What is the change in Other in 2019 from 2018?"
    )
    assert (change.gold_answer, change.answer_type) == ("-12.6", "number")
    assert change.meta["scale"] == "million" and change.meta["answer_with_scale"] == "-12.6 million"
    assert change.meta["derivation"] == "44.1-56.7"
    multi = next(i for i in items if i.question == "What are the contract types?")
    assert multi.gold_answer == "fixed-price type; cost-plus type; time-and-material type"
    pct = next(i for i in items if i.answer_type == "percent")
    assert pct.meta["scale"] == "percent" and pct.meta["answer_with_scale"].endswith("%")
    assert change.context.startswith("|  |  | Years Ended September 30, |  |")
    assert len({i.qa_id for i in items}) == len(items)


def test_tatqa_bad_question_is_a_failure_and_the_rest_loads(tmp_path: Path) -> None:
    doc = {"table": {"uid": "t", "table": TABLE},
           "paragraphs": [{"uid": "p", "order": 1, "text": "Prices fell."}],
           "questions": [{"uid": "q1", "question": "Price in 2005?", "answer": ["$ 25.14"],
                          "answer_type": "span", "scale": ""},
                         {"uid": "q2", "question": "Odd?", "answer": [], "answer_type": "span"},
                         {"uid": "q3", "question": "Odd?", "answer": 1, "answer_type": "guess"}]}  # fmt: skip
    items, failures = split(load_tatqa(write_json(tmp_path / "t.json", [doc, {"table": 1}])))
    assert [i.gold_answer for i in items] == ["$ 25.14"]
    assert items[0].context.endswith("Prices fell.")
    assert [f.item_id for f in failures] == ["q2", "q3", "t.json#1"]


def test_convfinqa_conversation_gives_one_item_per_turn_with_history(tmp_path: Path) -> None:
    items, failures = split(load_convfinqa(write_json(tmp_path / "c.json", [conversation()])))
    assert failures == []
    assert [i.gold_answer for i in items] == ["60.94", "25.14", "35.8", "1.42403"]
    assert [i.program for i in items] == PROGRAMS
    assert items[0].question == QUESTIONS[0]
    assert items[2].question == (
        "Conversation so far:\n"
        f"Q: {QUESTIONS[0]}\nA: 60.94\nQ: {QUESTIONS[1]}\nA: 25.14\n"
        f"Current question: {QUESTIONS[2]}"
    )
    assert items[3].answer_type == "percent"
    assert items[2].meta["history"][1] == {"question": QUESTIONS[1], "answer": "25.14"}
    assert [execute_program(i.program) for i in items] == ANSWERS
    assert "| 2007 | $ 60.94 |" in items[0].context


def test_convfinqa_turn_files_give_the_same_ids(tmp_path: Path) -> None:
    conv = conversation()
    turn = {**conv, "id": conv["id"] + "_2",
            "annotation": {**conv["annotation"], "cur_dial": QUESTIONS[:3], "turn_ind": 2,
                           "cur_program": PROGRAMS[2], "exe_ans": 35.8}}  # fmt: skip
    from_conv, _ = split(load_convfinqa(write_json(tmp_path / "c.json", [conv])))
    from_turn, _ = split(load_convfinqa(write_json(tmp_path / "t.json", [turn])))
    assert [i.qa_id for i in from_turn] == [from_conv[2].qa_id]


def test_convfinqa_bad_turn_is_a_failure(tmp_path: Path) -> None:
    conv = conversation()
    conv["annotation"]["exe_ans_list"] = [60.94, None, 35.8]
    items, failures = split(load_convfinqa(write_json(tmp_path / "c.json", [conv, {"id": "x"}])))
    assert [i.meta["turn"] for i in items] == [0]  # turn 2+ history needs turn 1's answer
    assert [f.item_id for f in failures][:2] == [f"{conv['id']}#1", f"{conv['id']}#2"]
    assert failures[-1].item_id == "x"


ROWS = [
    {"qid": "r1", "q": "Revenue 2019?", "a": 1234, "ctx": ["Revenue was 1,234.", "Up."]},
    {"qid": "r2", "q": "Sentiment?", "a": "positive", "kind": "label", "ctx": "Good news."},
    {"qid": "r3", "q": "Is it up?", "a": "yes", "ctx": ""},
    {"qid": "r4", "q": "", "a": "x", "ctx": ""},
    {"qid": "r5", "a": "x"},
]
MAPPING = FieldMapping(
    question_field="q", answer_field="a", context_field="ctx", id_field="qid",
    answer_type_field="kind", meta_fields=["kind"],
)  # fmt: skip


def check_rows(items: list[QAItem], failures: list[Failure], source: str) -> None:
    assert [i.answer_type for i in items] == ["number", "label", "yes_no"]
    assert items[0].gold_answer == "1234" and items[0].context == "Revenue was 1,234.\nUp."
    assert items[0].qa_id == content_id(source, "r1", "Revenue 2019?")
    assert [f.item_id for f in failures] == ["r4", "r5"]


def test_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps({**r, "kind": r.get("kind")}) if "q" in r else json.dumps(r) for r in ROWS]
    path.write_text("\n".join([*lines, "{broken"]) + "\n", encoding="utf-8")
    items, failures = split(load_jsonl(path, MAPPING))
    check_rows(items, failures[:2], "rows")
    assert failures[2].item_id == "rows.jsonl:6"


def test_csv_with_field_mapping_and_fixed_answer_type(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "question", "answer"])
        writer.writerow(["1", "Growth?", "12%"])
        writer.writerow(["2", "", "3"])
    items, failures = split(load_csv(path, FieldMapping(id_field="id", answer_type="percent")))
    assert [(i.gold_answer, i.answer_type, i.source) for i in items] == [("12%", "percent", "rows")]
    assert [f.item_id for f in failures] == ["2"]
    with pytest.raises(ValueError, match="allowed"):
        FieldMapping(answer_type="nonsense")
    with pytest.raises(ValueError):
        FieldMapping(question_feld="q")


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{**r, "kind": r.get("kind"), "q": r.get("q"), "ctx": r.get("ctx")} for r in ROWS[:4]]
    rows = [
        {
            **r,
            "a": str(r["a"]),
            "ctx": "\n".join(r["ctx"]) if r["q"] == "Revenue 2019?" else r["ctx"],
        }
        for r in rows
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    items, failures = split(load_hf_dataset(tmp_path / "ds", MAPPING, source="mine"))
    check_rows(items, [*failures, Failure(stage="sources", item_id="r5", reason="x")], "mine")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    items, _ = split(load_hf_dataset(tmp_path / "dd", MAPPING, split="train"))
    assert [i.gold_answer for i in items] == ["1234"]
    with pytest.raises(InputError, match="no split"):
        load_hf_dataset(tmp_path / "dd", MAPPING, split="test")
