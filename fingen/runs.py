"""Operations on a finished run directory: its config, evaluation and label audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fingen.config import PipelineConfig, apply_overrides, format_validation_error
from fingen.errors import ConfigError, InputError

__all__ = ["audit", "evaluate", "run_config"]


def run_config(run_dir: Path, overrides: list[str] | None = None) -> PipelineConfig:
    """The pipeline config recorded in ``run_dir/manifest.json``, with ``--set`` overrides."""
    from pydantic import ValidationError

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not a run directory (no manifest.json)", path=str(run_dir))
    data = json.loads(manifest_path.read_text(encoding="utf-8")).get("config", {})
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), where="run config") from None


def evaluate(
    beir_dir: Path,
    models: list[str],
    bm25: bool,
    lang: str,
    out: Path | None,
    *,
    split: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``fingen eval``: metrics per level for BM25 and embedders on one BEIR folder; with
    two retrievers or more, every one is compared with the first model (or BM25 when no
    model is given) by a paired bootstrap 95% interval of the per-query differences
    (``resamples`` draws, ``seed``). JSON (without the per-query values) written to ``out``.

    ``split`` scores only the queries of that split (``split`` field of ``queries.jsonl``,
    as fingen's exports write it); any BEIR folder works without it.
    """
    from fingen.retrieval.evaluate import compare_to_reference, evaluate_beir

    if not (beir_dir / "corpus.jsonl").is_file():
        raise InputError("not a BEIR directory (no corpus.jsonl)", path=str(beir_dir))
    if not models and not bm25:
        raise ConfigError("nothing to evaluate: give --bm25 and/or --model")
    if split is not None and not _has_split(beir_dir, split):
        raise InputError(
            f"no queries of split '{split}' in queries.jsonl (leave --split out to score "
            "every query)",
            path=str(beir_dir),
        )
    report = evaluate_beir(beir_dir, models, bm25, lang, split=split, per_query=True)
    if len(report["results"]) > 1:
        reference = models[0] if models else next(iter(report["results"]))
        compare_to_reference(report, reference, resamples=resamples, seed=seed)
    report.pop("per_query", None)
    out = out or _default_eval_path(beir_dir)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    report["written_to"] = str(out)
    return report


def _has_split(beir_dir: Path, split: str) -> bool:
    with (beir_dir / "queries.jsonl").open(encoding="utf-8") as f:
        return any(json.loads(line).get("split") == split for line in f if line.strip())


def _default_eval_path(beir_dir: Path) -> Path:
    """``eval.json`` in the run directory holding ``beir_dir``, else beside the BEIR files."""
    for parent in beir_dir.resolve().parents:
        if (parent / "manifest.json").is_file():
            return parent / "eval.json"
    return beir_dir / "eval.json"


def audit(
    run_dir: Path,
    sample: int,
    *,
    judge: str = "llm",
    model: str | None = None,
    cross_encoder: str | None = None,
    second_embedder: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """``fingen audit``: re-judge mined labels, and a pool of pairs mining never judged.

    The LLM judge is the run's ``model`` (default: ``models.judge`` when the run defines
    one, else ``llm``), with ``overrides`` (e.g. a stronger model). It has its own request
    cache (``cache/audit.sqlite``), so the mining judge's cached verdicts are never reused.
    """
    from fingen.llm.engine import build_engine
    from fingen.retrieval.audit import audit_run
    from fingen.retrieval.judges import build_judge

    config = run_config(run_dir, overrides)
    name = model or ("judge" if "judge" in config.models else "default")
    engine = None
    try:
        if judge == "llm":
            engine = build_engine(
                config.model_config_for(name), cache_path=run_dir / "cache" / "audit.sqlite"
            )
            judge_impl = build_judge("llm", llm=engine.for_stage("audit"), lang=config.lang)
        else:
            judge_impl = build_judge(judge, model=cross_encoder, lang=config.lang)
        second = None
        if second_embedder:
            from fingen.embed.models import load_embedder

            second = load_embedder(second_embedder)
        report = audit_run(run_dir, sample, judge_impl, second_embedder=second)
        report["judge_model"] = name if judge == "llm" else cross_encoder
        return report
    finally:
        if engine is not None:
            engine.close()
