"""Stage ``train``: fine-tune a bi-encoder on the run's retrieval exports (``fingen.train``).

Files, inside the run directory::

    models/<stage key>/                 a sentence-transformers model folder (+ train_info.json)
    train.jsonl                         one row: {"file": "models/<key>", "base": .., "rows": n}

A later ``evaluate`` stage scores the trained model next to the others.

The manifest entry's ``extra`` holds the numbers (rows, steps, time, the dev split's metrics
of the base and the trained model), which the report shows as a before/after table.
"""

from __future__ import annotations

from pydantic import Field

from fingen.stages.base import Progress, StageContext, StageParams, stage
from fingen.train import TrainOptions, train_embedder

__all__ = ["TrainParams", "train"]


class TrainParams(StageParams):
    base: str = Field("minilm", description="minilm, e5 or a sentence-transformers model path")
    exports: str = Field("exports", description="the export_retrieval folder in the run directory")
    out: str | None = Field(None, description="model folder in the run (default models/<key>)")
    epochs: float = Field(1.0, gt=0, description="passes over the train split")
    lr: float = Field(2e-5, ge=0, description="peak learning rate (10% warmup, linear decay)")
    batch_size: int = Field(32, ge=1, description="rows per batch (in-batch negatives)")
    hard_negatives: int | None = Field(
        None, ge=0, description="negatives per row (default: the export's n-tuple width)"
    )
    cached: bool = Field(False, description="CachedMultipleNegativesRankingLoss")
    mini_batch_size: int = Field(16, ge=1, description="sub-batch of the cached loss")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    eval_steps: int | None = Field(None, ge=1, description="also score dev every N steps")
    instruction: str | None = Field(
        None, description="query prompt (default: export_retrieval's instruction)"
    )
    device: str | None = Field(None, description="cpu, cuda (default: cuda when available)")
    seed: int = Field(0, description="seed of shuffling and initialization")


def _instruction(ctx: StageContext, params: TrainParams) -> str | None:
    if params.instruction is not None:
        return params.instruction
    found = None
    for sc in ctx.config.stages:
        if sc.stage == "export_retrieval":
            found = (sc.params or {}).get("instruction") or found
    return found or ""


@stage(TrainParams, outputs={"": "model"})
def train(ctx: StageContext, params: TrainParams) -> None:
    """Fine-tune a bi-encoder on the train split; score base and trained model on dev.

    sentence-transformers' trainer: MultipleNegativesRankingLoss with the run's hard
    negatives, no duplicate texts in a batch, the export instruction as the query prompt.

    Example params: ``{base: minilm, epochs: 1, hard_negatives: 3}``
    """
    out = params.out or f"models/{ctx.key}"
    options = TrainOptions(
        epochs=params.epochs, lr=params.lr, batch_size=params.batch_size,
        hard_negatives=params.hard_negatives, cached=params.cached,
        mini_batch_size=params.mini_batch_size, max_steps=params.max_steps,
        eval_steps=params.eval_steps, instruction=_instruction(ctx, params),
        device=params.device, seed=params.seed, show_progress=False,
    )  # fmt: skip
    bar: list[Progress] = []

    def on_step(step: int, total: int) -> None:
        if not bar:
            bar.append(ctx.make_progress(f"{ctx.key}: training", total))
        bar[0].advance(1)

    result = train_embedder(
        ctx.store.path(params.exports), params.base, out=ctx.store.path(out),
        options=options, on_step=on_step,
    )  # fmt: skip
    info = result.info
    ctx.stats.inputs = ctx.stats.succeeded = info["rows"]["total"]
    ctx.output().write({"file": out, "base": params.base, "rows": info["rows"]["total"]})
    ctx.stats.extra.update(
        model_dir=out,
        base=info["base"],
        device=info["device"],
        rows=info["rows"],
        steps=info["steps"],
        train_loss=info["train_loss"],
        time_s=info["time_s"],
        prompts=info["prompts"],
        dev=info["dev"],
    )
