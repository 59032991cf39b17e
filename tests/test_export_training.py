"""Training exports load back with ``datasets`` (JSON and parquet) with the declared Features."""

from __future__ import annotations

from pathlib import Path

import pytest

from fingen.config import LLMConfig, PipelineConfig, StageConfig
from fingen.errors import ConfigError
from fingen.export.training import (
    training_columns,
    training_dataset,
    training_features,
    write_training,
)
from fingen.pipeline import run_pipeline
from fingen.records import DPORecord, QAItem, RLRecord, SFTRecord
from fingen.store import RunStore

datasets = pytest.importorskip("datasets")

SFT = [
    SFTRecord(
        messages=[
            {"role": "user", "content": "Question: What is 5829 - 5735?"},
            {"role": "assistant", "content": "<think>\n5829 - 5735 = 94\n</think>\n<answer>\n94\n</answer>"},
        ],
        source="finqa",
        qa_id="q1",
    ),
    SFTRecord(messages=[{"role": "user", "content": "问题：利润增长了吗？"},
                        {"role": "assistant", "content": "<think>\n是\n</think>\n<answer>\n是\n</answer>"}]),
]  # fmt: skip
DPO = [
    DPORecord(prompt="Q?", chosen="<think>\na\n</think>\n<answer>\n1\n</answer>",
              rejected="<think>\na a a a", rejected_reason="overlong:length", qa_id="q1"),
]  # fmt: skip
RL = [
    RLRecord(prompt="Question: growth?", answer="9.86", source="tatqa", qa_id="q2"),
    RLRecord(prompt="Question: up?", answer="yes", source="finqa", qa_id=None),
]
ITEMS = {
    "q2": QAItem(qa_id="q2", question="growth?", gold_answer="9.86", answer_type="percent",
                 source="tatqa", meta={"scale": "percent"}),
}  # fmt: skip


def _load(path: Path) -> datasets.Dataset:
    kind = "json" if path.suffix == ".jsonl" else "parquet"
    return datasets.load_dataset(kind, data_files=str(path), split="train")


@pytest.mark.parametrize(
    ("kind", "records", "options"),
    [
        ("sft", SFT, {}),
        ("sft", SFT, {"with_meta": True}),
        ("dpo", DPO, {}),
        ("dpo", DPO, {"with_meta": True}),
        ("rl", RL, {}),
        ("rl", RL, {"with_meta": True, "items": ITEMS}),
    ],
)
def test_files_load_back_with_the_declared_features(
    tmp_path: Path, kind: str, records: list, options: dict
) -> None:
    result = write_training(kind, records, tmp_path, **options)
    features = training_features(kind, with_meta=options.get("with_meta", False),
                                 answer_info="items" in options)  # fmt: skip
    assert result.rows == len(records) and set(result.paths) == {"jsonl", "parquet"}
    for path in result.paths.values():
        loaded = _load(path)
        assert loaded.features == features, path.name  # JSON inference gives the same types
        assert loaded.num_rows == len(records)
    in_memory = training_dataset(kind, records, **options)
    assert in_memory.features == features
    assert in_memory.to_list() == _load(result.paths["parquet"]).to_list()


def test_columns_are_exactly_the_trainer_formats() -> None:
    assert training_columns("sft") == ["messages"]
    assert training_columns("dpo") == ["prompt", "chosen", "rejected"]
    assert training_columns("rl") == ["prompt", "answer"]
    assert training_columns("rl", answer_info=True, with_meta=True) == [
        "prompt", "answer", "answer_type", "scale", "source", "qa_id",
    ]  # fmt: skip
    rows = training_dataset("rl", RL, items=ITEMS, with_meta=True).to_list()
    assert rows[0] == {"prompt": "Question: growth?", "answer": "9.86", "answer_type": "percent",
                       "scale": "percent", "source": "tatqa", "qa_id": "q2"}  # fmt: skip
    assert rows[1]["answer_type"] == "" and rows[1]["qa_id"] == ""
    sft = training_dataset("sft", SFT).to_list()
    assert sft[1]["messages"][0] == {"role": "user", "content": "问题：利润增长了吗？"}


def test_bad_kinds_records_and_empty_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed"):
        training_columns("ppo")
    with pytest.raises(TypeError, match="RLRecord"):
        write_training("sft", RL, tmp_path)
    with pytest.raises(ValueError, match="format"):
        write_training("rl", RL, tmp_path, formats=["csv"])  # type: ignore[list-item]
    empty = write_training("dpo", [], tmp_path)
    assert empty.rows == 0 and empty.paths == {} and not list(tmp_path.iterdir())
    assert training_dataset("dpo", []).num_rows == 0


def _stage_run(run_dir: Path, params: dict) -> object:
    config = PipelineConfig(
        name="export_test",
        llm=LLMConfig(backend="fake"),
        stages=[StageConfig(stage="export_training", params=params)],
    )
    return run_pipeline(config, run_dir)


def test_stage_exports_what_route_and_preference_wrote(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    for (stage, output), records in {("route", "sft"): SFT, ("route", "rl"): RL,
                                     ("preference", ""): DPO}.items():  # fmt: skip
        writer = store.writer(stage, output)
        writer.write_all(records)
        writer.commit()
    refs = {"sft": "route.sft", "rl": "route.rl", "dpo": "preference"}
    result = _stage_run(store.root, {"formats": ["parquet"], **refs})
    entry = result.stages["export_training"]  # type: ignore[attr-defined]
    assert entry["inputs"] == entry["succeeded"] == 5
    exports = entry["extra"]["exports"]
    assert {k: v["rows"] for k, v in exports.items()} == {"sft": 2, "dpo": 1, "rl": 2}
    assert exports["dpo"]["files"] == {"parquet": "exports/training/dpo.parquet"}
    dpo = _load(store.root / "exports/training/dpo.parquet")
    assert dpo.column_names == ["prompt", "chosen", "rejected"]
    assert not (store.root / "exports/training/dpo.jsonl").exists()


def test_stage_without_anything_to_export_names_the_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to export"):
        _stage_run(tmp_path / "run", {})
