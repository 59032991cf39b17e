"""Stage ``export_training``: SFT / DPO / RL records -> conversational JSONL + parquet per
split under ``exports/training/<kind>/<split>.<format>``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.export.training import (
    KINDS,
    item_document,
    length_counter,
    split_key,
    token_lengths,
    training_rows,
    training_splits,
    write_training,
)
from fingen.splits import SPLITS
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["ExportTrainingParams", "export_training"]

Refs = str | list[str] | None


class ExportTrainingParams(StageParams):
    sft: Refs = Field(None, description="SFT records (default: the run's)")
    dpo: Refs = Field(None, description="DPO records (default: the run's)")
    rl: Refs = Field(None, description="RL records (default: the run's)")
    items: Refs = Field(
        None,
        description="QAItems (default: the run's, for the splits' documents); naming them adds "
        "answer_type/scale columns to RL (for accuracy_reward)",
    )
    dir: str = Field("exports/training", description="folder inside the run directory")
    formats: list[Literal["jsonl", "parquet"]] = Field(
        default_factory=lambda: ["jsonl", "parquet"], min_length=1
    )
    with_meta: bool = Field(False, description="add source / qa_id / rejected_reason columns")
    tokenizer: str | None = Field(
        None,
        description="token lengths in the manifest with this tokenizer (local folder, .gguf "
        "file or cached hub name, offline); default or on failure: characters/4",
    )


@stage(
    ExportTrainingParams,
    inputs={"sft": "sft?", "dpo": "dpo?", "rl": "rl?", "items": "qa?"},
)
def export_training(ctx: StageContext, params: ExportTrainingParams) -> None:
    """Write the SFT / DPO / RL sets for TRL as chat messages, split by source document.

    SFT ``messages``, DPO ``{prompt, chosen, rejected}``, RL ``{prompt, answer}`` in
    ``<dir>/<kind>/<split>.jsonl|parquet`` with explicit ``datasets`` Features; the dev / test
    shares are the pipeline's ``split:``, the QA items (named, else the run's) give each
    record's source document. The stage's extra gives rows per split and the token lengths
    (max, p95) to size a trainer's ``max_length``.

    Example: ``{stage: export_training, params: {with_meta: true, tokenizer: ./model}}``
    """
    out_dir = ctx.store.path(params.dir)
    for kind in KINDS:  # no stale exports from an earlier run (nor the old flat layout)
        for stale in [*out_dir.glob(f"{kind}.*"), *out_dir.glob(f"{kind}/*")]:
            if stale.is_file() and stale.name.split(".")[0] in (kind, *SPLITS):
                stale.unlink()
    view = ctx.view()
    present = [k for k in KINDS if getattr(params, k) is not None or view.produces(k)]
    if not present:
        raise ConfigError(
            "nothing to export: no earlier stage produces SFT, DPO or RL records; "
            "name the inputs with 'sft', 'dpo' or 'rl'",
            where=f"stages.{ctx.key}.params",
        )
    # QA items find each record's source document; named ones also add RL's answer columns
    items = {it.qa_id: it for it in ctx.input("items", params.items)}
    records = {kind: list(ctx.input(kind, getattr(params, kind))) for kind in present}
    every = [r for recs in records.values() for r in recs]
    splits = training_splits(every, ctx.config.split, items)
    keys = {split_key(r, items) for r in every}
    documents = {item_document(it) for it in items.values()} - {None}
    count, counted_with = length_counter(_tokenizer(ctx, params.tokenizer))
    written: dict[str, dict[str, object]] = {}
    lengths: dict[str, object] = {"counted_with": counted_with}
    root = ctx.run_dir.resolve()
    for kind in present:
        result = write_training(
            kind,
            records[kind],
            out_dir,
            formats=params.formats,
            with_meta=params.with_meta,
            items=items,
            splits=splits,
            answer_info=kind == "rl" and params.items is not None,
        )
        ctx.stats.inputs += len(records[kind])
        ctx.stats.succeeded += len(records[kind])
        written[kind] = {
            "from": [f.ref for f in view.files_of(kind)]
            if getattr(params, kind) is None
            else getattr(params, kind),
            "rows": result.rows,
            "splits": result.splits,
            "files": {
                split: {fmt: str(p.relative_to(root)) for fmt, p in paths.items()}
                for split, paths in result.paths.items()
            },
        }
        lengths[kind] = token_lengths(kind, training_rows(kind, records[kind]), count)
    ctx.stats.extra["exports"] = written
    ctx.stats.extra["split"] = {
        **ctx.config.split.model_dump(),
        "groups": len(keys),
        "by_document": len(keys & documents),
    }
    ctx.stats.extra["token_lengths"] = lengths


def _tokenizer(ctx: StageContext, name: str | None) -> str | None:
    """A path relative to the pipeline file when it exists there, else the name as given."""
    if name is None:
        return None
    path = ctx.config.resolve_path(name)
    return str(path) if path.exists() else name
