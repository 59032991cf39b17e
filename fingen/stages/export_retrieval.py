"""Stages ``export_retrieval`` (BEIR, sentence-transformers, FlagEmbedding, HF) and ``evaluate``.

Files, all inside the run directory (``out`` = ``exports`` by default)::

    exports/beir/{corpus,queries}.jsonl, exports/beir/qrels/*.tsv   (see fingen.export.retrieval)
    exports/sentence_transformers/{pairs,triplets,ntuples}.jsonl
    exports/flag_embedding/train.jsonl                                {query, pos, neg[, prompt]}
    exports/hf/                                                       DatasetDict.save_to_disk
    export_retrieval.jsonl                                            one row per file written
    evaluate.jsonl, evaluate.report.json                              metrics per retriever/level
"""

from __future__ import annotations

import json
import shutil
from typing import Literal

from pydantic import Field

from fingen.export.retrieval import (
    beir_dataset_dict,
    flag_embedding_rows,
    resolve_groups,
    st_ntuples,
    st_pairs,
    st_triplets,
    write_beir,
    write_jsonl,
)
from fingen.retrieval.evaluate import METRICS, evaluate_beir
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
    graded: bool = Field(False, description="write graded scores (default: binary, as BEIR)")
    ntuple_negatives: int = Field(5, ge=1, description="negatives per n-tuple row")
    instruction: str | None = Field(None, description="FlagEmbedding 'prompt' (query instruction)")


@stage(
    ExportRetrievalParams,
    inputs={"passages": "passage", "queries": "query", "qrels": "qrel?", "partial": "partial?",
            "negatives": "hard_negatives?"},
    outputs={"": "file"},
)  # fmt: skip
def export_retrieval(ctx: StageContext, params: ExportRetrievalParams) -> None:
    """Write the retrieval dataset in the requested formats (never calls a model).

    Example params: ``{formats: [beir, flag_embedding], instruction: "Represent this query: "}``
    """
    queries = list(ctx.input("queries", params.queries))
    qrels = list(ctx.input("qrels", params.qrels))
    passages = list(ctx.input("passages", params.passages))
    ctx.stats.inputs = ctx.stats.succeeded = len(queries)
    out = ctx.store.path(params.out)
    for sub in ("beir", "sentence_transformers", "flag_embedding", "hf"):  # no stale exports
        shutil.rmtree(out / sub, ignore_errors=True)
    files: dict[str, int] = {}
    if "beir" in params.formats:
        counts = write_beir(out / "beir", passages, queries, qrels, graded=params.graded)
        files.update({f"beir/{k}": v for k, v in counts.items()})
    groups = list(ctx.input("negatives", params.negatives))
    by_q, by_p = {q.query_id: q for q in queries}, {p.passage_id: p for p in passages}
    resolved = list(resolve_groups(groups, by_q, by_p))
    if "sentence_transformers" in params.formats:
        st = out / "sentence_transformers"
        files["sentence_transformers/pairs"] = write_jsonl(st / "pairs.jsonl", st_pairs(resolved))
        if groups:
            k = params.ntuple_negatives
            files["sentence_transformers/triplets"] = write_jsonl(
                st / "triplets.jsonl", st_triplets(resolved)
            )
            files["sentence_transformers/ntuples"] = write_jsonl(
                st / "ntuples.jsonl", st_ntuples(resolved, k)
            )
            ctx.stats.extra["ntuple_skipped"] = sum(1 for g in resolved if len(g["neg"]) < k)
    if "flag_embedding" in params.formats:
        rows = flag_embedding_rows(resolved, instruction=params.instruction)
        files["flag_embedding/train"] = write_jsonl(out / "flag_embedding" / "train.jsonl", rows)
    if "hf" in params.formats:
        dd = beir_dataset_dict(passages, queries, qrels)
        dd.save_to_disk(str(out / "hf"))
        files.update({f"hf/{name}": len(ds) for name, ds in dd.items()})
    for path, rows in files.items():
        ctx.output().write({"file": f"{params.out}/{path}", "rows": rows})
    ctx.stats.extra.update(
        files=files,
        hard_negative_groups=len(groups),
        groups_used=len(resolved),
    )


class EvaluateParams(StageParams):
    beir: str = Field("exports/beir", description="BEIR folder inside the run directory")
    bm25: bool = True
    run_embedder: bool = Field(True, description="evaluate the run's (cached) embedder")
    models: list[str] = Field(default_factory=list, description="further embedders by name")
    k: int = Field(100, ge=10)


@stage(EvaluateParams, outputs={"": "evaluation"})
def evaluate(ctx: StageContext, params: EvaluateParams) -> None:
    """nDCG@10, Recall@10/100, MRR@10 per qrels file for BM25 and embedders.

    Example params: ``{bm25: true, models: [e5]}``
    """
    embedders = {ctx.config.embedder.model: ctx.embedder()} if params.run_embedder else {}
    report = evaluate_beir(
        ctx.store.path(params.beir),
        [m for m in params.models if m not in embedders],
        params.bm25,
        ctx.lang,
        embedders=embedders,
        k=params.k,
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
