"""Stage ``annotate``: the unlabeled-task loop of "LLMs Meet Finance" (CoT labels, N rounds)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Literal

from pydantic import Field

from fingen.errors import ConfigError
from fingen.reasoning.annotate import (
    TextItem,
    annotate_rounds,
    labelset_for,
    read_text_rows,
    record_label,
    round_config,
    rows_to_texts,
)
from fingen.records import Failure
from fingen.stages.base import StageContext, StageParams, stage

__all__ = ["AnnotateParams", "RoundEndpoint", "annotate"]

Tally = defaultdict[str, Counter[str]]


# -- annotate ---------------------------------------------------------------------------------
class RoundEndpoint(StageParams):
    """One annotation round's model: a name from ``models`` (``use``), or an endpoint whose
    unset fields keep the pipeline's ``llm`` settings."""

    use: str | None = Field(None, description="a model of the pipeline ('default' or models.*)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint of this round")
    model: str | None = None
    api_key_env: str | None = None


class AnnotateParams(StageParams):
    file_params = ("path",)

    input: str | None = Field("chunk", description="earlier stage whose rows hold the texts")
    path: str | None = Field(None, description="JSONL/json/CSV file of texts instead of input")
    text_field: str = "text"
    id_field: str | None = None
    limit: int | None = Field(None, ge=1)
    labels: list[str] | None = Field(None, description="the label set (default: preset)")
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    preset: Literal["sentiment", "yes_no", "choices"] = "sentiment"
    task: str | None = Field(None, description="the instruction shown before the text")
    temperature: float | None = Field(None, ge=0, le=2)
    rounds: list[RoundEndpoint] = Field(default_factory=list, description="one model per round")


def _round_engine(ctx: StageContext, endpoint: RoundEndpoint, index: int) -> Any:
    """One round's engine, from the run's models (so its usage counts in the run's totals
    and budget): a named model, the stage's own, or an endpoint registered for the round."""
    if endpoint.use is not None:
        return ctx.named_llm(endpoint.use)
    fields = endpoint.model_dump(exclude={"use"}, exclude_none=True)
    if not fields:
        return ctx.llm()
    try:
        config = round_config(ctx.config.llm, **fields)
    except ValueError as exc:
        raise ConfigError(str(exc), where=f"stages.{ctx.key}.params.rounds") from None
    return ctx.named_llm(f"{ctx.key}.round{index}", config)


def _texts(ctx: StageContext, params: AnnotateParams) -> list[TextItem]:
    if params.path is None and params.input is None:
        raise ConfigError("give 'input' or 'path'", where=f"stages.{ctx.key}.params")
    rows = (
        read_text_rows(ctx.config.resolve_path(params.path))
        if params.path
        else ctx.rows(str(params.input))
    )
    texts: list[TextItem] = []
    for row in rows_to_texts(rows, text_field=params.text_field, id_field=params.id_field):
        if params.limit is not None and len(texts) >= params.limit:
            break
        if isinstance(row, Failure):
            ctx.stats.inputs += 1
            ctx.fail(row.model_copy(update={"stage": ctx.key}))
        else:
            texts.append(row)
    return texts


@stage(AnnotateParams, outputs={"": "sft"})
def annotate(ctx: StageContext, params: AnnotateParams) -> None:
    """CoT-annotate unlabeled texts with one label each, once per round. Main output: the last
    round's records; with several rounds every round also goes to output ``round<i>``.

    Example: ``{stage: annotate, params: {input: chunk, labels: [positive, negative, neutral],
    rounds: [{}, {base_url: "http://host:8000/v1", model: "ft-v1"}]}}``
    """
    labelset = labelset_for(params.labels, params.synonyms, params.preset)
    texts = _texts(ctx, params)
    rounds = params.rounds or [RoundEndpoint()]
    engines = [_round_engine(ctx, e, i) for i, e in enumerate(rounds)]
    per_round, last = [Counter[str]() for _ in engines], len(engines) - 1
    for name in [""] + [f"round{i}" for i in range(len(engines)) if last]:
        ctx.output(name)  # every output exists, even when empty
    options = params.model_dump(include={"task", "temperature"})
    for rnd, result in annotate_rounds(texts, labelset, engines, lang=ctx.lang, **options):
        for record in ctx.collect([result]):
            names = ([""] if rnd == last else []) + ([f"round{rnd}"] if last else [])
            for name in names:
                ctx.output(name).write(record)
            per_round[rnd][record_label(record, labelset) or "?"] += 1
        per_round[rnd].update(f"({f.reason})" for f in result.failures)
    ctx.stats.extra["rounds"] = [
        {"model": engine.model, "labels": dict(c)}
        for engine, c in zip(engines, per_round, strict=True)
    ]
