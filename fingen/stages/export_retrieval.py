"""Stages ``export_retrieval`` (BEIR, sentence-transformers, FlagEmbedding, HF) and ``evaluate``.

Files, all inside the run directory (``out`` = ``exports`` by default), split by source
document (``split:`` of the pipeline; see ``fingen.splits``)::

    exports/beir/{corpus,queries}.jsonl, exports/beir/qrels/*.tsv   (see fingen.export.retrieval)
    exports/sentence_transformers/{pairs,triplets,ntuples}/<split>.jsonl
    exports/flag_embedding/<split>.jsonl                 {query, pos, neg, pos_scores, neg_scores[, prompt]}
    exports/hf/                                          DatasetDict.save_to_disk
    export_retrieval.jsonl                               one row per file written
    evaluate.jsonl, evaluate.report.json                 metrics per retriever/qrels file
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from fingen.export.retrieval import (
    beir_dataset_dict,
    flag_embedding_rows,
    ntuple_width,
    resolve_groups,
    st_ntuples,
    st_pairs,
    st_triplets,
    write_beir,
    write_jsonl,
)
from fingen.labels import RelevanceRule
from fingen.retrieval.evaluate import METRICS, evaluate_beir
from fingen.splits import assign_splits
from fingen.stages.base import StageContext, StageParams, stage
from fingen.stages.relevance import SourceParams
from fingen.store import atomic_write_text

__all__ = ["EvaluateParams", "ExportRetrievalParams", "evaluate", "export_retrieval"]

Format = Literal["beir", "sentence_transformers", "flag_embedding", "hf"]


class ExportRetrievalParams(SourceParams):
    negatives: str | list[str] | None = Field(
        None, description="HardNegatives (default: the run's)"
    )
    formats: list[Format] = Field(["beir", "sentence_transformers", "flag_embedding", "hf"])
    out: str = Field("exports", description="folder inside the run directory")
    ntuple_negatives: int | None = Field(
        None, ge=1, description="negatives per n-tuple row (default: as many as mined, capped)"
    )
    instruction: str | None = Field(None, description="FlagEmbedding 'prompt' (query instruction)")


def _training_views(
    ctx: StageContext,
    params: ExportRetrievalParams,
    resolved: list[dict[str, Any]],
    splits: list[str],
) -> dict[str, int]:
    out, files = ctx.store.path(params.out), {}
    by_split = {s: [g for g in resolved if g["split"] == s] for s in splits}
    k = ntuple_width(resolved, params.ntuple_negatives)
    if "sentence_transformers" in params.formats:
        st = out / "sentence_transformers"
        for split, groups in by_split.items():
            files[f"sentence_transformers/pairs/{split}"] = write_jsonl(
                st / "pairs" / f"{split}.jsonl", st_pairs(groups)
            )
            if resolved:
                files[f"sentence_transformers/triplets/{split}"] = write_jsonl(
                    st / "triplets" / f"{split}.jsonl", st_triplets(groups)
                )
                files[f"sentence_transformers/ntuples/{split}"] = write_jsonl(
                    st / "ntuples" / f"{split}.jsonl", st_ntuples(groups, k))  # fmt: skip
        short = sum(1 for g in resolved if len(g["neg"]) < k)
        ctx.stats.extra.update(ntuple_negatives=k, ntuple_skipped_groups=short)
        if resolved and (short or params.ntuple_negatives not in (None, k)):
            ctx.stats.extra["ntuple_note"] = (
                f"n-tuples have {k} negatives ({params.ntuple_negatives or 'auto'} asked); "
                f"{short} of {len(resolved)} groups have fewer and are not in ntuples"
            )
    if "flag_embedding" in params.formats:
        for split, groups in by_split.items():
            rows = flag_embedding_rows(groups, instruction=params.instruction)
            files[f"flag_embedding/{split}"] = write_jsonl(
                out / "flag_embedding" / f"{split}.jsonl", rows
            )
    return files


@stage(
    ExportRetrievalParams,
    inputs={"passages": "passage", "queries": "query", "qrels": "qrel?",
            "negatives": "hard_negatives?"},
    outputs={"": "file"},
)  # fmt: skip
def export_retrieval(ctx: StageContext, params: ExportRetrievalParams) -> None:
    """Write the retrieval dataset in the requested formats, split by document (never calls
    a model).

    Example params: ``{formats: [beir, flag_embedding], instruction: "Represent this query: "}``
    """
    queries = list(ctx.input("queries", params.queries))
    qrels = list(ctx.input("qrels", params.qrels))
    passages = list(ctx.input("passages", params.passages))
    ctx.stats.inputs = ctx.stats.succeeded = len(queries)
    rule = RelevanceRule(ctx.config.relevance.min_positive)
    doc_split, query_split = assign_splits(queries, passages, ctx.config.split)
    names = ctx.config.split.names
    out = ctx.store.path(params.out)
    for sub in ("beir", "sentence_transformers", "flag_embedding", "hf"):  # no stale exports
        shutil.rmtree(out / sub, ignore_errors=True)
    files: dict[str, int] = {}
    if "beir" in params.formats:
        counts = write_beir(out / "beir", passages, queries, qrels, rule=rule,
                            splits=query_split, split_names=names)  # fmt: skip
        files.update({f"beir/{k}": v for k, v in counts.items()})
    groups = list(ctx.input("negatives", params.negatives))
    by_q, by_p = {q.query_id: q for q in queries}, {p.passage_id: p for p in passages}
    resolved = list(resolve_groups(groups, by_q, by_p, query_split=query_split,
                                   doc_split=doc_split))  # fmt: skip
    files.update(_training_views(ctx, params, resolved, names))
    if "hf" in params.formats:
        dd = beir_dataset_dict(passages, queries, qrels, splits=query_split)
        dd.save_to_disk(str(out / "hf"))
        files.update({f"hf/{name}": len(ds) for name, ds in dd.items()})
    for path, rows in files.items():
        ctx.output().write({"file": f"{params.out}/{path}", "rows": rows})
    ctx.stats.extra.update(
        files=files,
        min_positive=rule.min_positive,
        splits={"queries": dict(Counter(query_split.values())),
                "documents": dict(Counter(doc_split.values()))},
        hard_negative_groups=len(groups),
        groups_used=len(resolved),
    )  # fmt: skip


class EvaluateParams(StageParams):
    beir: str = Field("exports/beir", description="BEIR folder inside the run directory")
    bm25: bool = True
    run_embedder: bool = Field(True, description="evaluate the run's (cached) embedder")
    models: list[str] = Field(default_factory=list, description="further embedders by name")
    trained: str | list[str] | None = Field(
        None, description="train stages whose models are scored too (default: every earlier one)"
    )
    k: int = Field(100, ge=10)
    split: str | None = Field(
        "dev", description="score this split's queries (None: all; no dev queries: all)"
    )


@stage(EvaluateParams, inputs={"trained": "model?"}, outputs={"": "evaluation"})
def evaluate(ctx: StageContext, params: EvaluateParams) -> None:
    """nDCG@10, Recall@10/100, MRR@10 per qrels file for BM25 and embedders, on the dev split.

    The run's embedder mined the labels and chose the hard negatives: the report names it,
    and its numbers on ``*_extended`` files (mined labels) are optimistic.

    Models fine-tuned by earlier ``train`` stages are scored too, named by their folder in
    the run (``models/<train stage>``).

    Example params: ``{bm25: true, models: [e5]}``
    """
    beir = ctx.store.path(params.beir)
    mining = str(ctx.config.embedder.model)
    embedders = {mining: ctx.embedder()} if params.run_embedder else {}
    for row in ctx.input("trained", params.trained):
        from fingen.embed.models import load_embedder  # torch only when there is a model

        # named by its folder in the run (``models/<train stage>``), not an absolute path
        embedders[row["file"]] = load_embedder(str(ctx.store.path(row["file"])))
    split = params.split if params.split and _has_split(beir, params.split) else None
    report = evaluate_beir(
        beir,
        [m for m in params.models if m not in embedders],
        params.bm25,
        ctx.lang,
        embedders=embedders,
        k=params.k,
        split=split,
    )
    report["mining_embedder"] = mining
    report["note"] = (
        f"labels were mined and hard negatives chosen with '{mining}': its scores on "
        "*_extended qrels (mined labels) are optimistic"
        + ("" if split else f"; no '{params.split}' queries, so every query was scored")
    )
    for retriever, levels in report["results"].items():
        for level, metrics in levels.items():
            ctx.stats.inputs += 1
            ctx.stats.succeeded += 1
            ctx.output().write({"retriever": retriever, "qrels": level, **metrics})
    atomic_write_text(
        ctx.store.path(f"{ctx.key}.report.json"), json.dumps(report, indent=2, ensure_ascii=False)
    )
    ctx.stats.extra["ndcg@10"] = {
        r: {lvl: m[METRICS[0]] for lvl, m in levels.items()}
        for r, levels in report["results"].items()
    }
    ctx.stats.extra.update(split=split or "all", note=report["note"])


def _has_split(beir: Any, split: str) -> bool:
    path = beir / "queries.jsonl"
    if not path.is_file():
        return False
    with path.open(encoding="utf-8") as f:
        return any(json.loads(line).get("split") == split for line in f if line.strip())
