"""Stage ``export_training``: SFT / DPO / RL records -> JSONL + parquet under ``exports/``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.export.training import write_training
from fingen.records import DPORecord, QAItem, RLRecord, SFTRecord
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ExportTrainingParams", "export_training"]

_DEFAULTS = {"sft": "route.sft", "dpo": "preference", "rl": "route.rl"}
_MODELS = {"sft": SFTRecord, "dpo": DPORecord, "rl": RLRecord}


class ExportTrainingParams(StageParams):
    sft: str | None = Field(None, description='SFT records (default "route.sft" when present)')
    dpo: str | None = Field(None, description='DPO records (default "preference" when present)')
    rl: str | None = Field(None, description='RL records (default "route.rl" when present)')
    items: str | None = Field(
        None, description="QAItems; adds answer_type/scale columns to RL (for accuracy_reward)"
    )
    dir: str = Field("exports/training", description="folder inside the run directory")
    formats: list[Literal["jsonl", "parquet"]] = Field(
        default_factory=lambda: ["jsonl", "parquet"], min_length=1
    )
    with_meta: bool = Field(False, description="add source / qa_id / rejected_reason columns")


def _sources(ctx: StageContext, params: ExportTrainingParams) -> dict[str, str]:
    given = {k: getattr(params, k) for k in _DEFAULTS if getattr(params, k)}
    if given:
        return given
    found = {}
    for kind, ref in _DEFAULTS.items():
        stage_key, _, output = ref.partition(".")
        if ctx.store.stage_path(stage_key, output).is_file():
            found[kind] = ref
    if not found:
        raise ConfigError(
            f"nothing to export: none of {sorted(_DEFAULTS.values())} exists; "
            "name the inputs with 'sft', 'dpo' or 'rl'",
            where=f"stages.{ctx.key}.params",
        )
    return found


@stage(ExportTrainingParams)
def export_training(ctx: StageContext, params: ExportTrainingParams) -> None:
    """Write the training sets (SFT ``messages``, DPO ``{prompt, chosen, rejected}``, RL
    ``{prompt, answer}``) as JSONL and parquet with explicit ``datasets`` Features.

    Example: ``{stage: export_training, params: {dir: exports/training, with_meta: true}}``
    """
    out_dir = ctx.store.path(params.dir)
    for kind in _MODELS:  # no stale exports from an earlier run
        for stale in out_dir.glob(f"{kind}.*"):
            stale.unlink()
    items = None
    if params.items:
        items = {it.qa_id: it for it in ctx.read(params.items, QAItem)}
    written: dict[str, dict[str, object]] = {}
    for kind, ref in _sources(ctx, params).items():
        records = list(ctx.read(ref, _MODELS[kind]))
        result = write_training(
            kind,
            records,
            out_dir,
            formats=params.formats,
            with_meta=params.with_meta,
            items=items if kind == "rl" else None,
        )
        ctx.stats.inputs += len(records)
        ctx.stats.succeeded += len(records)
        written[kind] = {
            "from": ref,
            "rows": result.rows,
            "files": {
                fmt: str(p.relative_to(ctx.run_dir.resolve())) for fmt, p in result.paths.items()
            },
        }
    ctx.stats.extra["exports"] = written
