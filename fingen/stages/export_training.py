"""Stage ``export_training``: SFT / DPO / RL records -> JSONL + parquet under ``exports/``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.export.training import write_training
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ExportTrainingParams", "export_training"]

_KINDS = ("sft", "dpo", "rl")
Refs = str | list[str] | None


class ExportTrainingParams(StageParams):
    sft: Refs = Field(None, description="SFT records (default: the run's)")
    dpo: Refs = Field(None, description="DPO records (default: the run's)")
    rl: Refs = Field(None, description="RL records (default: the run's)")
    items: Refs = Field(
        None, description="QAItems; adds answer_type/scale columns to RL (for accuracy_reward)"
    )
    dir: str = Field("exports/training", description="folder inside the run directory")
    formats: list[Literal["jsonl", "parquet"]] = Field(
        default_factory=lambda: ["jsonl", "parquet"], min_length=1
    )
    with_meta: bool = Field(False, description="add source / qa_id / rejected_reason columns")


@stage(
    ExportTrainingParams,
    inputs={"sft": "sft?", "dpo": "dpo?", "rl": "rl?", "items": "qa?"},
)
def export_training(ctx: StageContext, params: ExportTrainingParams) -> None:
    """Write the training sets (SFT ``messages``, DPO ``{prompt, chosen, rejected}``, RL
    ``{prompt, answer}``) as JSONL and parquet with explicit ``datasets`` Features.

    Example: ``{stage: export_training, params: {dir: exports/training, with_meta: true}}``
    """
    out_dir = ctx.store.path(params.dir)
    for kind in _KINDS:  # no stale exports from an earlier run
        for stale in out_dir.glob(f"{kind}.*"):
            stale.unlink()
    view = ctx.view()
    present = [k for k in _KINDS if getattr(params, k) is not None or view.produces(k)]
    if not present:
        raise ConfigError(
            "nothing to export: no earlier stage produces SFT, DPO or RL records; "
            "name the inputs with 'sft', 'dpo' or 'rl'",
            where=f"stages.{ctx.key}.params",
        )
    items = None
    if params.items is not None:
        items = {it.qa_id: it for it in ctx.input("items", params.items)}
    written: dict[str, dict[str, object]] = {}
    for kind in present:
        records = list(ctx.input(kind, getattr(params, kind)))
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
            "from": [f.ref for f in view.files_of(kind)]
            if getattr(params, kind) is None
            else getattr(params, kind),
            "rows": result.rows,
            "files": {
                fmt: str(p.relative_to(ctx.run_dir.resolve())) for fmt, p in result.paths.items()
            },
        }
    ctx.stats.extra["exports"] = written
