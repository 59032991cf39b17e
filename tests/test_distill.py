"""Teacher sampling (Fin-R1): n requests per question, reasoning kept, overlong samples kept."""

from __future__ import annotations

import json
from pathlib import Path

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.llm import ChatRequest, Completion, Usage, build_engine
from fingen.pipeline import run_pipeline
from fingen.reasoning.distill import DistillTask, SampleRequest, distill_samples, to_cot_sample
from fingen.records import CoTSample, QAItem
from fingen.store import iter_jsonl
from tests.llm_handlers import Recorder, fake_engine, installed, last_user, refuse, truncated
from tests.scripted_server import ScriptedServer

ITEM = QAItem(
    qa_id="q1",
    question="What was the change in payments volume from 5735 to 5829?",
    context="| year | volume |\n| --- | --- |\n| 2007 | 5829 |\n| 2006 | 5735 |",
    gold_answer="94",
    answer_type="number",
    source="finqa",
)
COT = "Volume was 5829 in 2007 and 5735 in 2006.\nThe change is 5829 - 5735 = 94.\n\\boxed{94}"


def engine(srv: ScriptedServer, tmp_path: Path, **overrides: object):
    cfg = LLMConfig(backend="openai", base_url=srv.base_url, model="teacher", backoff_s=0.01,
                    **overrides)  # fmt: skip
    return build_engine(cfg, cache_path=tmp_path / "cache.sqlite")


def test_prompt_is_fin_r1_style_without_system_message() -> None:
    task = DistillTask()
    messages = task.build(SampleRequest(ITEM, 0))
    assert [m["role"] for m in messages] == ["user"]
    text = messages[0]["content"]
    assert ITEM.question in text and "| 2007 | 5829 |" in text and "\\boxed{}" in text
    params = task.request_params(SampleRequest(ITEM, 3))
    assert params == {"temperature": 0.6, "sample_idx": 3}
    assert DistillTask(seed=7, max_tokens=99).request_params(SampleRequest(ITEM, 2)) == {
        "temperature": 0.6, "sample_idx": 2, "max_tokens": 99, "seed": 9,
    }  # fmt: skip
    zh = DistillTask(lang="zh").build(SampleRequest(ITEM, 0))
    assert "问题" in zh[0]["content"] and len(zh) == 1


def test_each_sample_is_its_own_request_and_a_rerun_pays_for_none(tmp_path: Path) -> None:
    other = ITEM.model_copy(update={"qa_id": "q2", "question": "What is 2 + 2?"})
    teacher = Recorder(lambda request: COT)
    cache = tmp_path / "cache.sqlite"
    with fake_engine(teacher, model="teacher", cache_path=cache) as llm:
        results = list(distill_samples([ITEM, other], llm, n=3))
    assert teacher.count == 6
    assert {r.temperature for r in teacher.requests} == {0.6}
    assert all(r.messages[0]["role"] == "user" for r in teacher.requests)
    samples = [s for r in results for s in r.records]
    assert [(s.qa_id, s.sample_idx) for s in samples] == [
        (q, i) for q in ("q1", "q2") for i in range(3)
    ]
    assert all(s.answer == "94" and s.finish_reason == "stop" for s in samples)
    assert "5829 - 5735 = 94" in samples[0].reasoning and "boxed" not in samples[0].reasoning
    with fake_engine(teacher, model="teacher", cache_path=cache) as llm:
        again = list(distill_samples([ITEM, other], llm, n=3))
    assert teacher.count == 6  # every sample came from the cache
    assert all(r.cached for r in again)


def test_separate_reasoning_field_is_kept(tmp_path: Path) -> None:
    # Through HTTP on purpose: the OpenAI client must carry `message.reasoning_content` into
    # Completion.reasoning; no other test sends that field through fingen's client.
    action = {"content": "The answer is \\boxed{94}.", "reasoning": "5829 - 5735 = 94"}
    with ScriptedServer(default=action) as srv, engine(srv, tmp_path) as llm:
        [result] = list(distill_samples([ITEM], llm, n=1))
    [sample] = result.records
    assert sample.reasoning == "5829 - 5735 = 94"
    assert sample.answer == "94"
    assert sample.raw.startswith("<think>\n5829 - 5735 = 94\n</think>")


def test_truncated_sample_is_kept_as_overlong_material() -> None:
    long_cot = "Let me think about the volume. " * 40 + "\\boxed{94}"
    teacher = Recorder(lambda request: truncated(long_cot))
    with fake_engine(teacher, model="teacher") as llm:
        [result] = list(distill_samples([ITEM], llm, n=1, max_tokens=64))
    assert result.ok and not result.failures
    [sample] = result.records
    assert sample.finish_reason == "length"
    assert sample.answer is None and sample.tokens > 0
    assert teacher.requests[0].max_tokens == 64


def test_to_cot_sample_splits_think_tags_and_ids_are_stable() -> None:
    text = "<think>step 1\nstep 2\nstep 3</think>\n<answer>\\boxed{94}</answer>"
    completion = Completion(text=text, usage=Usage(completion_tokens=20))
    sample = to_cot_sample("q1", 0, completion)
    assert sample.reasoning == "step 1\nstep 2\nstep 3"
    assert sample.answer == "94" and sample.tokens == 20
    assert sample.sample_id == to_cot_sample("q1", 0, completion).sample_id
    assert sample.sample_id != to_cot_sample("q1", 1, completion).sample_id


def test_distill_stage_writes_samples_and_counts_per_source(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [{"question": f"What is {i} + 90?", "answer": str(i + 90)} for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")

    def teacher(request: ChatRequest) -> object:
        prompt = last_user(request)
        if "What is 3 + 90" in prompt:
            return truncated("no idea " * 50)
        if "What is 2 + 90" in prompt:
            refuse()  # the server refuses: a transport error, no retries
        return "step\n\\boxed{91}"

    with installed(teacher) as handler:
        config = PipelineConfig(
            name="distill_test",
            llm=LLMConfig(backend="fake", model="t", fake={"handler": handler}),
            stages=[
                StageConfig(stage="qa_source", params={"source": "jsonl", "path": str(data),
                                                       "name": "mine", "limit": 4}),
                StageConfig(stage="distill", params={"n": 2}),
            ],
        )  # fmt: skip
        result = run_pipeline(config, tmp_path / "run")
    assert result.status == "complete_with_failures"  # two transport errors: a re-run retries
    entry = result.stages["distill"]
    assert entry["inputs"] == 8 == entry["succeeded"] + entry["failed"]
    assert entry["failed"] == 2 and entry["failures_by_reason"] == {"transport_error": 2}
    assert entry["transient_failures"] == 2
    assert entry["extra"]["per_source"]["mine"] == {"samples": 6, "truncated": 2, "no_answer": 2}
    samples = list(iter_jsonl(result.run_dir / "distill.jsonl", CoTSample))
    assert len(samples) == 6 and {s.sample_idx for s in samples} == {0, 1}


def test_every_reasoning_prompt_renders_in_both_languages() -> None:
    from fingen.reasoning.annotate import AnnotateTask, TextItem
    from fingen.reasoning.answer_judge import AnswerJudgeTask, SamplePair
    from fingen.reasoning.extract import SENTIMENT
    from fingen.reasoning.judge import ReasoningJudgeTask
    from fingen.reasoning.synthesize import SynthesizeTask, SynthSource

    sample = to_cot_sample("q1", 0, Completion(text=COT))
    table = SynthSource.from_table([["item", "2007"], ["revenue", "5829"]], title="Visa")
    for lang in ("en", "zh"):
        built = {
            "distill": DistillTask(lang=lang).build(SampleRequest(ITEM, 0)),
            "answer_judge": AnswerJudgeTask(lang).build(SamplePair(ITEM, sample)),
            "reasoning_judge": ReasoningJudgeTask(lang).build(SamplePair(ITEM, sample)),
            "synthesize": SynthesizeTask(lang).build(table),
            "annotate": AnnotateTask(SENTIMENT, lang).build(TextItem("t", "Profit rose.")),
        }
        for name, messages in built.items():
            assert messages[-1]["role"] == "user", (name, lang)
            assert "{{" not in messages[-1]["content"] and "{%" not in messages[-1]["content"]
        assert [m["role"] for m in built["distill"]] == ["user"]  # Fin-R1: no system prompt
        judge = built["reasoning_judge"][-1]["content"]
        assert "5829 - 5735 = 94" in judge and "follows_instruction" in judge
        assert ("finance" if lang == "en" else "金融") in built["reasoning_judge"][0]["content"]
        assert "table_average" in built["synthesize"][-1]["content"]
        assert "| revenue | 5829 |" in built["synthesize"][-1]["content"]
