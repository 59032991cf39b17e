"""Unlabeled-task annotation: CoT label extraction, unparseable outputs dropped, rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.llm import ChatRequest, Completion, RowRejected
from fingen.pipeline import run_pipeline
from fingen.reasoning.annotate import (
    AnnotateTask,
    TextItem,
    annotate_rounds,
    labelset_for,
    round_config,
    rows_to_texts,
)
from fingen.reasoning.extract import SENTIMENT, YES_NO
from fingen.records import Failure, SFTRecord
from fingen.store import iter_jsonl
from tests.llm_handlers import Recorder, fake_engine, installed, last_user
from tests.scripted_server import ScriptedServer

TEXTS = {
    "t1": "Net profit rose 35% on strong demand; the board raised the dividend.",
    "t2": "The company issued a profit warning and cut its full-year guidance.",
    "t3": "Quarterly revenue was in line with last year.",
}
POS = "<think>Profit up and a higher dividend are good news.</think>\n<answer>positive</answer>"
NEG = "<think>A profit warning is bad news.</think>\n<answer>negative</answer>"
NEU = "<think>In line means no change.</think>\n<answer>neutral</answer>"
VAGUE = "It could be good or bad, hard to say."


def _annotator(mapping: dict[str, str]) -> Recorder:
    """A model answering each text of ``TEXTS`` with ``mapping[its key]``."""

    def answer(request: ChatRequest) -> str:
        prompt = last_user(request)
        return next((reply for key, reply in mapping.items() if TEXTS[key] in prompt), "")

    return Recorder(answer)


def _rules(mapping: dict[str, str]) -> list[dict]:
    return [{"match": TEXTS[k], "action": {"content": v}} for k, v in mapping.items()]


def test_task_prompt_and_parse_give_an_sft_record() -> None:
    task = AnnotateTask(SENTIMENT, task="Classify the sentiment for investors.")
    item = TextItem("t1", TEXTS["t1"], "news")
    [message] = task.build(item)
    assert message["role"] == "user"
    assert "Classify the sentiment for investors." in message["content"]
    assert "positive, negative, neutral" in message["content"] and TEXTS["t1"] in message["content"]
    [record] = task.parse(item, POS, Completion(text=POS))
    assert record.messages[0] == message
    assert record.messages[1]["content"] == (
        "<think>\nProfit up and a higher dividend are good news.\n</think>\n<answer>\npositive\n</answer>"
    )
    assert record.qa_id == "t1" and record.source == "news"
    zh = "<think>利润大增</think><answer>积极</answer>"
    assert "positive" in task.parse(item, zh, Completion(text=zh))[0].messages[1]["content"]
    with pytest.raises(RowRejected) as exc:
        task.parse(item, VAGUE, Completion(text=VAGUE))
    assert exc.value.reason == "unparseable"


def test_label_sets_and_round_configs() -> None:
    assert labelset_for(None, None, "yes_no") is YES_NO
    custom = labelset_for(["up", "down"], {"up": ["涨"]})
    assert custom.labels == ("up", "down")
    with pytest.raises(ValueError, match="allowed"):
        labelset_for(None, None, "stars")
    base = LLMConfig(backend="local", temperature=0.0)
    remote = round_config(base, base_url="http://h:8000/v1", model="ft-v1")
    assert (remote.backend, remote.base_url, remote.model) == (
        "openai",
        "http://h:8000/v1",
        "ft-v1",
    )
    local = round_config(base, model="smollm2")
    assert local.backend == "local" and local.local.model == "smollm2" and local.model == ""


def test_rows_without_text_are_failures() -> None:
    rows = [{"id": "a", "text": "hello"}, {"id": "b", "body": "x"}, "not a row"]
    out = list(rows_to_texts(rows))
    assert isinstance(out[0], TextItem) and out[0].text_id == "a"
    assert [f.reason for f in out[1:] if isinstance(f, Failure)] == ["no_text", "no_text"]


def test_each_round_uses_its_own_endpoint() -> None:
    texts = [TextItem(k, v) for k, v in TEXTS.items()]
    first = _annotator({"t1": POS, "t2": VAGUE, "t3": NEU})
    second = _annotator({"t1": POS, "t2": NEG, "t3": NEU})
    engines = [fake_engine(first, model="v0"), fake_engine(second, model="v1")]
    try:
        results = list(annotate_rounds(texts, SENTIMENT, engines))
    finally:
        for e in engines:
            e.close()
    assert (first.count, second.count) == (3, 3)
    assert [(rnd, r.item_id, r.ok) for rnd, r in results] == [
        (0, "t1", True), (0, "t2", False), (0, "t3", True),
        (1, "t1", True), (1, "t2", True), (1, "t3", True),
    ]  # fmt: skip
    failure = results[1][1].failures[0]
    assert failure.reason == "unparseable" and failure.raw == VAGUE


def test_annotate_stage_writes_each_round_and_counts_dropped_outputs(tmp_path: Path) -> None:
    data = tmp_path / "texts.jsonl"
    rows = [{"id": k, "text": v} for k, v in TEXTS.items()] + [{"id": "t4", "text": ""}]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    # round 0 is the run's model (the fake backend); round 1 names another endpoint, which is
    # an OpenAI-compatible server by definition (`base_url`), so it is the scripted one
    first = _annotator({"t1": POS, "t2": VAGUE, "t3": NEU})
    second = _rules({"t1": POS, "t2": NEG, "t3": VAGUE})
    with installed(first) as handler, ScriptedServer(rules=second) as s1:
        params = {"path": str(data), "rounds": [{}, {"base_url": s1.base_url, "model": "v1"}]}
        config = PipelineConfig(
            name="annotate_test",
            llm=LLMConfig(backend="fake", model="v0", fake={"handler": handler}),
            stages=[StageConfig(stage="annotate", params=params)],
        )
        result = run_pipeline(config, tmp_path / "run")
        assert (first.count, s1.count) == (3, 3)
    entry = result.stages["annotate"]
    assert entry["inputs"] == 7 == entry["succeeded"] + entry["failed"]
    assert entry["failures_by_reason"] == {"unparseable": 2, "no_text": 1}
    assert entry["outputs"] == {"main": 2, "round0": 2, "round1": 2, "failures": 3}
    assert entry["extra"]["rounds"] == [
        {"model": "v0", "labels": {"positive": 1, "(unparseable)": 1, "neutral": 1}},
        {"model": "v1", "labels": {"positive": 1, "negative": 1, "(unparseable)": 1}},
    ]
    final = list(iter_jsonl(result.run_dir / "annotate.jsonl", SFTRecord))
    assert [r.qa_id for r in final] == ["t1", "t2"]
    assert final[1].messages[1]["content"].endswith("<answer>\nnegative\n</answer>")
