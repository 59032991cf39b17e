"""Fin-R1's filter end to end on a fake teacher's outputs: verify, judge, route, DPO, rewards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.llm.base import ChatRequest
from fingen.llm.fake import schema_instance
from fingen.pipeline import run_pipeline
from fingen.reasoning.judge import CRITERIA
from fingen.reasoning.preference import (
    PairOptions,
    pick_chosen,
    rejection_reasons,
    repetition_rate,
)
from fingen.reasoning.reward import accuracy_reward, format_reward
from fingen.reasoning.route import ANSWER_FORMAT, format_completion, qa_prompt, route_item
from fingen.records import CoTSample, DPORecord, QAItem, RLRecord, SFTRecord
from fingen.store import iter_jsonl
from tests.llm_handlers import installed, last_user, refuse, reply, truncated

Q_NUM = "What was the change in payments volume from 2006 to 2007?"
Q_YES = "Did net income increase in 2019?"
Q_TEXT = "What drove the decline in gross margin?"
CORRECT = (
    "Step 1: payments volume was 5829 in 2007.\nStep 2: it was 5735 in 2006.\n"
    "Step 3: the change is 5829 - 5735 = 94.\nSo the change is \\boxed{94}."
)
WRONG = "Step 1: volume was 5825.\nStep 2: 5825 - 5735 = 90.\nThe change is \\boxed{90}."
TRUNCATED = " ".join(
    f"Year {y}: compare note {y % 7} with row {y % 11}." for y in range(1990, 2030)
)
REPETITIVE = "The change is 94 million. " * 8 + "\n\\boxed{94}"
YES_COT = "Step 1: 2019 income 120.\nStep 2: 2018 income 100.\nStep 3: 120 > 100.\n\\boxed{Yes}"
TEXT_COT = "Step 1: costs rose.\nStep 2: prices flat.\nStep 3: margin fell.\n\\boxed{rising raw material costs}"


def _judgement(score: int) -> dict[str, Any]:
    return {c: {"reason": "checked", "score": score} for c in CRITERIA}


NUM_SAMPLES = [reply(CORRECT), reply(WRONG), truncated(TRUNCATED), reply(REPETITIVE)]


def cot_model(request: ChatRequest) -> Any:
    """Teacher and judges of the filter, answering from the prompt."""
    prompt = last_user(request)
    # teacher: four different samples for the numeric question, one per sample index
    if f"Question: {Q_NUM}\n\nPlease reason" in prompt:
        return NUM_SAMPLES[request.sample_idx % len(NUM_SAMPLES)]
    if f"Question: {Q_YES}\n\nPlease reason" in prompt:
        return YES_COT
    if f"Question: {Q_TEXT}\n\nPlease reason" in prompt:
        return TEXT_COT
    # round 1 judge (only the free-text answer reaches it): wrong
    if "Candidate's final answer" in prompt:
        return {"reason": "other cause", "correct": 0}
    # round 2 judge: the yes/no reasoning fails, everything else passes
    if "Reasoning to review" in prompt:
        return _judgement(0 if Q_YES in prompt.rpartition("Reasoning to review")[0] else 1)
    return schema_instance(request.json_schema) if request.json_schema else "{}"


def _items_file(tmp_path: Path) -> Path:
    rows = [
        {"question": Q_NUM, "answer": "94", "type": "number", "context": "volume 5829 / 5735"},
        {"question": Q_YES, "answer": "yes", "type": "yes_no", "context": "income 120 / 100"},
        {"question": Q_TEXT, "answer": "higher input costs", "type": "text", "context": "..."},
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _pipeline(handler: str, data: Path) -> PipelineConfig:
    fields = {"context_field": "context", "answer_type_field": "type"}
    stages = [
        ("qa_source", {"source": "jsonl", "path": str(data), "name": "demo", "fields": fields}),
        ("distill", {"n": 4, "max_tokens": 256}),
        ("verify", {}),
        ("judge_reasoning", {}),
        ("route", {}),
        ("preference", {"max_pairs": 3}),
        ("export_training", {"items": "qa_source", "with_meta": True}),
    ]
    return PipelineConfig(
        name="cot_fake",
        llm=LLMConfig(backend="fake", model="teacher", concurrency=1, fake={"handler": handler}),
        stages=[StageConfig(stage=s, params=p) for s, p in stages],
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("cot")
    with installed(cot_model) as handler:
        result = run_pipeline(_pipeline(handler, _items_file(tmp)), tmp / "run")
    assert result.status == "complete"
    return result


def test_every_stage_accounts_for_each_input(run: Any) -> None:
    for key, entry in run.stages.items():
        assert entry["inputs"] == entry["succeeded"] + entry["failed"], key
    assert run.stages["distill"]["inputs"] == 12
    verify = run.stages["verify"]["extra"]
    assert verify["per_source"]["demo"] == {"correct": 6, "wrong": 6}
    assert verify["methods"]["llm_judge"] == 4  # the free-text answers only


def test_both_rounds_passed_goes_to_sft_else_rl(run: Any) -> None:
    sft = list(iter_jsonl(run.run_dir / "route.sft.jsonl", SFTRecord))
    rl = list(iter_jsonl(run.run_dir / "route.rl.jsonl", RLRecord))
    assert len(sft) == 1
    user, assistant = sft[0].messages
    # Fin-R1's prompt: context, question, then the <think>/<answer> instruction
    assert user["role"] == "user"
    assert user["content"] == f"volume 5829 / 5735\n\nQuestion: {Q_NUM}\n\n{ANSWER_FORMAT['en']}"
    assert assistant["content"].startswith("<think>\nStep 1: payments volume was 5829")
    assert "</think>\n<answer>\nSo the change is \\boxed{94}.\n</answer>" in assistant["content"]
    assert {(r.answer, r.prompt.split("Question: ")[1].split("\n\n")[0]) for r in rl} == {
        ("yes", Q_YES), ("higher input costs", Q_TEXT),
    }  # fmt: skip
    assert all(r.prompt.endswith(ANSWER_FORMAT["en"]) for r in rl)
    reasons = run.stages["route"]["extra"]["per_source"]["demo"]
    assert reasons == {"sft": 1, "low_quality": 1, "incorrect": 1}


def test_sft_records_earn_format_and_accuracy_rewards(run: Any) -> None:
    sft = list(iter_jsonl(run.run_dir / "route.sft.jsonl", SFTRecord))
    completions = [r.messages[-1]["content"] for r in sft]
    assert format_reward(completions) == [1.0]
    assert accuracy_reward(completions, answer=["94"], answer_type=["number"]) == [1.0]
    samples = [s for s in iter_jsonl(run.run_dir / "verify.jsonl", CoTSample) if s.answer]
    rewards = accuracy_reward([s.raw for s in samples], answer=["94"] * len(samples))
    assert rewards == [1.0 if s.answer == "94" else 0.0 for s in samples]


def test_dpo_pairs_reject_wrong_overlong_and_repetitive_samples(run: Any) -> None:
    pairs = list(iter_jsonl(run.run_dir / "preference.jsonl", DPORecord))
    assert len(pairs) == 3
    assert {p.chosen for p in pairs} == {format_completion(_sample(CORRECT))}
    by_reason = {p.rejected_reason.split(":")[0]: p for p in pairs}
    assert set(by_reason) == {"overlong", "repetitive", "wrong"}
    assert by_reason["overlong"].rejected_reason == "overlong:length, wrong"  # no answer either
    assert "</think>" not in by_reason["overlong"].rejected  # cut off mid-thought
    assert "\\boxed{90}" in by_reason["wrong"].rejected
    assert by_reason["repetitive"].rejected.count("The change is 94 million.") == 8
    extra = run.stages["preference"]["extra"]
    assert extra["per_source"]["demo"] == {"paired": 1, "pairs": 3, "no_chosen": 2}
    assert extra["rejected_by"] == {"overlong": 1, "repetitive": 1, "wrong": 1}


def _exported(run_dir: Path, kind: str) -> dict[str, list[dict[str, Any]]]:
    """split -> rows of exports/training/<kind>/<split>.jsonl"""
    return {
        p.stem: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
        for p in sorted((run_dir / "exports/training" / kind).glob("*.jsonl"))
    }


def test_exports_are_conversational_split_and_carry_rl_answer_types(run: Any) -> None:
    exported = {kind: _exported(run.run_dir, kind) for kind in ("sft", "dpo", "rl")}
    rows = [r for part in exported["rl"].values() for r in part]
    assert {(r["answer"], r["answer_type"]) for r in rows} == {
        ("yes", "yes_no"), ("higher input costs", "text"),
    }  # fmt: skip
    assert all(r["prompt"][0]["role"] == "user" and len(r["prompt"]) == 1 for r in rows)
    dpo = [r for part in exported["dpo"].values() for r in part]
    assert [m["role"] for r in dpo for m in r["prompt"] + r["chosen"] + r["rejected"]] == [
        "user", "assistant", "assistant",
    ] * 3  # fmt: skip
    # three items without a known document: split by item, and a small run still gets a dev
    split_of: dict[str, set[str]] = {}
    for part in exported.values():
        for split, part_rows in part.items():
            for r in part_rows:
                split_of.setdefault(r["qa_id"], set()).add(split)
    assert len(split_of) == 3 and all(len(s) == 1 for s in split_of.values())
    assert sorted(s for v in split_of.values() for s in v).count("dev") == 1
    extra = run.stages["export_training"]["extra"]
    assert extra["split"]["groups"] == 3 and extra["split"]["by_document"] == 0
    assert extra["token_lengths"]["counted_with"] == "characters/4 (no tokenizer named)"
    assert extra["token_lengths"]["sft"]["rows"] == 1 and extra["token_lengths"]["dpo"]["rows"] == 3
    for kind, info in extra["exports"].items():
        for files in info["files"].values():
            assert all((run.run_dir / f).is_file() for f in files.values()), kind


def test_prompts_ask_for_think_and_answer_in_the_runs_language() -> None:
    item = QAItem(qa_id="q", question="利润增长了吗？", context="利润 120 / 100", gold_answer="是")
    zh = qa_prompt(item, "zh")
    assert zh == f"利润 120 / 100\n\n问题：利润增长了吗？\n\n{ANSWER_FORMAT['zh']}"
    words = set(re.findall(r"[A-Za-z]+", ANSWER_FORMAT["zh"]))
    assert words == {"think", "answer", "boxed"}  # only the literal tags and the answer command
    assert qa_prompt(item, "zh", instruction=False) == "利润 120 / 100\n\n问题：利润增长了吗？"
    for text in ANSWER_FORMAT.values():
        shape = text[text.index("<think>") :]
        assert format_reward([shape.replace("...", "x")]) == [1.0]  # the shape format_reward wants


# -- pure functions -----------------------------------------------------------------------------
def _sample(raw: str, idx: int = 0, **fields: Any) -> CoTSample:
    from fingen.reasoning.extract import split_reasoning

    split = split_reasoning(raw)
    base = {"sample_id": f"s{idx}", "qa_id": "q", "sample_idx": idx, "raw": raw,
            "reasoning": split.reasoning, "answer": split.answer}  # fmt: skip
    return CoTSample(**{**base, **fields})


def test_repetition_rate_separates_loops_from_prose() -> None:
    assert repetition_rate(CORRECT) < 0.05
    assert repetition_rate(REPETITIVE) > 0.6
    assert repetition_rate("利润增长利润增长利润增长利润增长利润增长") > 0.5
    assert repetition_rate("short") == 0.0


def test_far_longer_than_chosen_counts_as_overlong() -> None:
    chosen = _sample(CORRECT, tokens=100, correct=True)
    long = _sample(CORRECT + "\nLet me double-check." * 5, 1, tokens=260, correct=True)
    assert rejection_reasons(long, chosen, PairOptions()) == ["overlong:2.6x"]
    assert rejection_reasons(long, chosen, PairOptions(length_ratio=3.0)) == []


def test_chosen_prefers_a_judge_pass_then_the_shortest() -> None:
    a = _sample(CORRECT, 0, tokens=90, correct=True, quality=None)
    b = _sample(CORRECT + " ok", 1, tokens=120, correct=True, quality=True)
    c = _sample(CORRECT, 2, tokens=50, correct=True, quality=False)
    d = _sample(REPETITIVE, 3, tokens=10, correct=True, quality=True)
    assert pick_chosen([a, b, c, d]).sample_id == "s1"
    assert pick_chosen([a, c]).sample_id == "s0"
    assert pick_chosen([c, d]) is None


def test_route_reasons_for_items_without_a_passing_sample() -> None:
    item = QAItem(qa_id="q", question="Q?", gold_answer="1", answer_type="number", source="s")
    assert route_item(item, []).reason == "no_samples"
    assert route_item(item, [_sample(WRONG, correct=None)]).reason == "undecided"
    unjudged = [_sample(CORRECT, correct=True)]
    assert route_item(item, unjudged).reason == "unjudged"
    assert route_item(item, unjudged, require_quality=False).reason == "sft"
    truncated = [_sample(CORRECT, correct=True, quality=True, finish_reason="length")]
    routed = route_item(item, truncated)
    assert routed.reason == "incorrect" and routed.rl is not None and routed.rl.answer == "1"


# -- shipped pipelines ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cot_finqa", "cot_tatqa"])
def test_shipped_cot_pipelines_validate(name: str) -> None:
    from fingen.config import load_pipeline
    from fingen.pipeline import validate_pipeline

    root = Path(__file__).resolve().parents[1]
    config = load_pipeline(root / "pipelines" / f"{name}.yaml")
    assert config.llm.backend == "local"
    assert [s.stage for s in config.stages] == [
        "qa_source", "distill", "verify", "judge_reasoning", "route", "preference",
        "export_training",
    ]  # fmt: skip
    assert len(validate_pipeline(config)) == 7


@pytest.mark.parametrize(
    ("name", "data"),
    [("cot_finqa", "finqa_dev200/dev_200.json"), ("cot_tatqa", "tatqa/tatqa_dataset_dev.json")],
)
def test_shipped_pipelines_run_on_real_data_with_the_fake_backend(
    shared_data: Path, tmp_path: Path, name: str, data: str
) -> None:
    from fingen.config import load_pipeline

    root = Path(__file__).resolve().parents[1]
    overrides = ["llm.backend=fake", "stages.qa_source.params.limit=3",
                 f"stages.qa_source.params.path={shared_data / data}"]  # fmt: skip
    result = run_pipeline(load_pipeline(root / "pipelines" / f"{name}.yaml", overrides), tmp_path)
    assert result.status == "complete"
    assert result.stages["distill"]["inputs"] == 6
    for key, entry in result.stages.items():
        assert entry["inputs"] == entry["succeeded"] + entry["failed"], key
    assert list((tmp_path / "exports/training/rl").glob("*.jsonl"))  # the teacher is always wrong
    split = result.stages["export_training"]["extra"]["split"]
    assert split["groups"] == split["by_document"] > 0  # FinQA filings / TAT-QA tables


def test_a_failed_judge_keeps_the_sample_undecided_and_counts_the_failure(tmp_path: Path) -> None:
    def model(request: ChatRequest) -> Any:
        prompt = last_user(request)
        if "Candidate's final answer" in prompt:
            refuse("no")  # the answer judge's requests fail at the transport
        if "Please reason" in prompt:
            return TEXT_COT
        return schema_instance(request.json_schema) if request.json_schema else "{}"

    with installed(model) as handler:
        config = _pipeline(handler, _items_file(tmp_path))
        config = config.model_copy(update={"stages": config.stages[:3]})
        result = run_pipeline(config, tmp_path / "run")
    verify = result.stages["verify"]
    assert verify["inputs"] == 12 == verify["succeeded"] and verify["failed"] == 0
    # the yes/no item's answer names no yes/no label either: 8 samples go to the judge
    assert verify["rejected_rows"] == 8 and verify["failures_by_reason"] == {"transport_error": 8}
    assert verify["extra"]["methods"] == {"number": 4, "llm_judge_failed": 8}
    samples = list(iter_jsonl(result.run_dir / "verify.jsonl", CoTSample))
    assert sum(s.correct is None for s in samples) == 8
