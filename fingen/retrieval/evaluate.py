"""Retrieval evaluation on a BEIR directory: nDCG@10, Recall@10/100 and MRR@10 per qrels file.

Conventions (those of trec_eval / pytrec_eval, so numbers compare with BEIR and MTEB):

- nDCG gain is the graded label itself (linear: ``rel``, not ``2**rel - 1``), discount
  ``1 / log2(rank + 1)`` with ranks from 1; the ideal ranking sorts all labels of the query.
- A passage is relevant when its label is > 0 (recall, MRR).
- Only queries with at least one relevant passage in a qrels file count for that file; a
  query the retriever returns nothing for scores 0. Scores are means over those queries.

Retrievers: BM25 (``bm25s``; jieba words for Chinese) and any embedder ``load_embedder`` knows.
Corpus text is ``title + " " + text`` as in BEIR's dense search.

Comparisons: ``compare_to_reference`` adds, for every retriever but the reference, the mean
difference of each metric to the reference and a paired bootstrap 95% interval of it (the
per-query differences resampled with a seeded generator), from the per-query values that
``evaluate_beir(..., per_query=True)`` keeps.

>>> report = evaluate_beir("run/exports/beir", models=["minilm", "out/model"], bm25=True,
...                        per_query=True)                                # doctest: +SKIP
>>> compare_to_reference(report, "minilm")                                # doctest: +SKIP
>>> print_report(report)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingen.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table

    from fingen.embed.base import Embedder

__all__ = [
    "METRICS",
    "bm25_rankings",
    "compare_to_reference",
    "dense_rankings",
    "evaluate_beir",
    "evaluate_rankings",
    "load_beir",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_bootstrap",
    "per_query_metrics",
    "print_report",
    "recall_at_k",
    "report_table",
]

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
Qrels = Mapping[str, Mapping[str, int]]
Rankings = Mapping[str, Sequence[str]]


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval's ``ndcg_cut``); 0.0 when nothing is relevant."""
    dcg = sum(rels.get(pid, 0) / math.log2(r + 2) for r, pid in enumerate(ranking[:k]))
    ideal = sorted((v for v in rels.values() if v > 0), reverse=True)[:k]
    idcg = sum(v / math.log2(r + 2) for r, v in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Relevant passages in the top k / all relevant passages."""
    relevant = {pid for pid, v in rels.items() if v > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first relevant passage within the top k, else 0."""
    for r, pid in enumerate(ranking[:k]):
        if rels.get(pid, 0) > 0:
            return 1.0 / (r + 1)
    return 0.0


def per_query_metrics(rankings: Rankings, qrels: Qrels) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` for the queries of ``qrels`` that have a relevant
    passage (a query without a ranking scores 0)."""
    funcs = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}
    judged = [qid for qid, rels in qrels.items() if any(v > 0 for v in rels.values())]
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        name, k = metric.split("@")
        out[metric] = {
            qid: funcs[name](rankings.get(qid, ()), qrels[qid], int(k)) for qid in judged
        }
    return out


def evaluate_rankings(rankings: Rankings, qrels: Qrels) -> dict[str, float]:
    """Mean of ``METRICS`` over the queries of ``qrels`` that have a relevant passage."""
    return _means(per_query_metrics(rankings, qrels))


def _means(values: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in METRICS:
        v = list(values[metric].values())
        out[metric] = round(sum(v) / len(v), 5) if v else 0.0
    out["queries"] = len(values[METRICS[0]])
    return out


def paired_bootstrap(
    reference: Sequence[float],
    other: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean of ``other - reference`` (paired by position, one value per query) and its
    percentile bootstrap interval: the per-query differences are resampled with replacement
    ``resamples`` times with ``numpy.random.default_rng(seed)``, so the same inputs and seed
    give the same interval.

    Returns ``{"diff", "ci95": [low, high], "p_le_0", "queries", "resamples", "seed"}``;
    ``p_le_0`` is the share of resampled means <= 0 (near 0: ``other`` is reliably better).
    """
    import numpy as np

    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    n = int(a.size)
    if n == 0:
        return {"diff": 0.0, "ci95": [0.0, 0.0], "p_le_0": 1.0, "queries": 0,
                "resamples": resamples, "seed": seed}  # fmt: skip
    diffs = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=float)
    step = max(1, 2_000_000 // n)  # bounded memory for large query sets
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        means[start : start + size] = diffs[rng.integers(0, n, size=(size, n))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "diff": round(float(diffs.mean()), 5),
        "ci95": [round(float(low), 5), round(float(high), 5)],
        "p_le_0": round(float((means <= 0).mean()), 4),
        "queries": n,
        "resamples": resamples,
        "seed": seed,
    }


def compare_to_reference(
    report: dict[str, Any],
    reference: str | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Add ``report["comparison"]``: for every retriever but ``reference`` (default: the
    first in ``results``), per level and metric, the paired bootstrap of its per-query
    differences to the reference (``paired_bootstrap``). Needs a report made with
    ``evaluate_beir(..., per_query=True)``; returns the comparison."""
    per_query = report.get("per_query")
    if per_query is None:
        raise ValueError("the report has no per-query values: evaluate with per_query=True")
    names = list(report["results"])
    reference = reference if reference is not None else (names[0] if names else None)
    if reference not in per_query:
        raise ValueError(f"no retriever '{reference}' in the report ({', '.join(names)})")
    ref = per_query[reference]
    comparison: dict[str, Any] = {"reference": reference, "resamples": resamples, "seed": seed,
                                  "confidence": 0.95, "retrievers": {}}  # fmt: skip
    for name in names:
        if name == reference:
            continue
        levels: dict[str, Any] = {}
        for level, metrics in per_query[name].items():
            if level not in ref:
                continue
            levels[level] = {}
            for metric, values in metrics.items():
                qids = sorted(values)
                levels[level][metric] = paired_bootstrap(
                    [ref[level][metric].get(q, 0.0) for q in qids],
                    [values[q] for q in qids],
                    resamples=resamples,
                    seed=seed,
                )
        comparison["retrievers"][name] = levels
    report["comparison"] = comparison
    return comparison


def load_beir(
    beir_dir: str | Path,
) -> tuple[
    dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, dict[str, dict[str, int]]]
]:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and every ``qrels/*.tsv`` (name -> qrels)."""
    root = Path(beir_dir)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels"):
        if not (root / name).exists():
            raise InputError(f"not a BEIR directory: {name} is missing", path=str(root))
    corpus = {r["_id"]: r for r in _jsonl(root / "corpus.jsonl")}
    queries = {r["_id"]: r for r in _jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for path in sorted((root / "qrels").glob("*.tsv")):
        table: dict[str, dict[str, int]] = {}
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                table.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
        qrels[path.stem] = table
    if "all" in qrels:
        qrels = {"all": qrels.pop("all"), **qrels}
    return corpus, queries, qrels


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _doc_text(doc: Mapping[str, str]) -> str:
    title, text = doc.get("title") or "", doc.get("text") or ""
    return f"{title} {text}".strip()


def bm25_rankings(
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, Mapping[str, str]],
    *,
    lang: str = "en",
    k: int = 100,
) -> dict[str, list[str]]:
    """Top-k corpus ids per query with BM25."""
    from fingen.embed.bm25 import BM25Index

    ids = list(corpus)
    qids = list(queries)
    index = BM25Index([_doc_text(corpus[i]) for i in ids], lang=lang)
    _, hits = index.search([queries[q]["text"] for q in qids], k=k)
    return {q: [ids[j] for j in row.tolist()] for q, row in zip(qids, hits, strict=True)}


def dense_rankings(
    embedder: Embedder,
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, Mapping[str, str]],
    *,
    k: int = 100,
) -> dict[str, list[str]]:
    """Top-k corpus ids per query by embedding inner product (exact, or faiss when present)."""
    from fingen.embed.index import build_index

    ids, qids = list(corpus), list(queries)
    vectors = embedder.encode([_doc_text(corpus[i]) for i in ids], kind="passage")
    qvecs = embedder.encode([queries[q]["text"] for q in qids], kind="query")
    _, hits = build_index(vectors).search(qvecs, k)
    return {q: [ids[j] for j in row.tolist() if j >= 0] for q, row in zip(qids, hits, strict=True)}


def evaluate_beir(
    beir_dir: str | Path,
    models: Sequence[str] = (),
    bm25: bool = True,
    lang: str = "en",
    *,
    embedders: Mapping[str, Embedder] | None = None,
    k: int = 100,
    split: str | None = None,
    files: Sequence[str] | None = None,
    per_query: bool = False,
) -> dict[str, Any]:
    """Evaluate BM25 and embedders on the qrels files of a BEIR directory.

    Args:
        beir_dir: folder with corpus.jsonl, queries.jsonl, qrels/*.tsv.
        models: embedder names or paths for ``load_embedder`` ("minilm", "e5", a path).
        bm25: include BM25.
        lang: tokenization for BM25 ("zh" uses jieba).
        embedders: already loaded embedders by display name (e.g. a run's cached one).
        k: retrieval depth (>= 100 for Recall@100).
        split: only queries of this split (``queries.jsonl`` ``split``; fingen's exports);
            None: every query.
        files: qrels file names (without ``.tsv``) to use; default: every binary file
            (``*_graded`` files are left out).
        per_query: also keep every query's value of every metric (``report["per_query"]``:
            ``{retriever: {level: {metric: {query_id: value}}}}``; for ``compare_to_reference``).

    Returns:
        ``{"beir_dir", "lang", "corpus", "queries", "levels": {level: n_queries},
        "results": {retriever: {level: {metric: value, "queries": n}}}}``; qrels files
        without any relevant label (e.g. no topic queries) are left out of ``results``.
    """
    from fingen.embed.models import load_embedder

    corpus, queries, qrels = load_beir(beir_dir)
    if files is not None:
        qrels = {name: qrels[name] for name in files if name in qrels}
    else:
        qrels = {name: t for name, t in qrels.items() if not name.endswith("_graded")}
    if split is not None:
        queries = {q: r for q, r in queries.items() if r.get("split", "train") == split}
        qrels = {name: {q: r for q, r in t.items() if q in queries} for name, t in qrels.items()}
    if not qrels:
        raise InputError("no qrels/*.tsv files", path=str(beir_dir))
    wanted = {q for table in qrels.values() for q in table if q in queries}
    asked = {q: queries[q] for q in queries if q in wanted}
    retrievers: dict[str, Any] = {}
    if bm25:
        retrievers["bm25"] = lambda: bm25_rankings(corpus, asked, lang=lang, k=k)
    for name, emb in (embedders or {}).items():
        retrievers[name] = lambda emb=emb: dense_rankings(emb, corpus, asked, k=k)
    for name in models:
        retrievers[name] = lambda name=name: dense_rankings(load_embedder(name), corpus, asked, k=k)
    judged = {
        lvl: t for lvl, t in qrels.items() if any(v > 0 for r in t.values() for v in r.values())
    }
    values = {
        name: {level: per_query_metrics(rankings, table) for level, table in judged.items()}
        for name, run in retrievers.items()
        for rankings in [run()]
    }
    report: dict[str, Any] = {
        "beir_dir": str(beir_dir),
        "lang": lang,
        "split": split,
        "corpus": len(corpus),
        "queries": len(queries),
        "levels": {level: len(table) for level, table in qrels.items()},  # queries per file
        "metric_conventions": "trec_eval: linear gain nDCG, relevant = label > 0",
        "results": {
            name: {level: _means(v) for level, v in levels.items()}
            for name, levels in values.items()
        },
    }
    if per_query:
        report["per_query"] = values
    return report


def report_table(report: Mapping[str, Any], metric: str = METRICS[0]) -> Table:
    """A rich table: one row per (retriever, level), one column per metric; with a
    ``comparison`` (``compare_to_reference``), a column with the difference of ``metric`` to
    the reference and its 95% interval."""
    from rich.table import Table

    split = f" ({report['split']} split)" if report.get("split") else ""
    table = Table(title=f"Retrieval on {report.get('beir_dir', '')}{split}")
    comparison = report.get("comparison")
    for col in ("retriever", "qrels", "queries", *METRICS):
        table.add_column(col, justify="left" if col in ("retriever", "qrels") else "right")
    if comparison:
        table.add_column(f"Δ {metric} [95% CI]", justify="right", no_wrap=True)
        table.caption = (
            f"Δ: difference to {comparison['reference']} (per-query paired bootstrap, "
            f"{comparison['resamples']} resamples, seed {comparison['seed']})"
        )
    for name, levels in report["results"].items():
        for level, m in levels.items():
            row = [name, level, str(m["queries"]), *(f"{m[x]:.4f}" for x in METRICS)]
            if comparison:
                row.append(_delta_cell(comparison, name, level, metric))
            table.add_row(*row)
    return table


def _delta_cell(comparison: Mapping[str, Any], name: str, level: str, metric: str) -> str:
    if name == comparison["reference"]:
        return "reference"
    entry = comparison["retrievers"].get(name, {}).get(level, {}).get(metric)
    if entry is None:
        return "–"
    low, high = entry["ci95"]
    return f"{entry['diff']:+.4f} [{low:+.4f}, {high:+.4f}]"


def print_report(report: Mapping[str, Any], console: Any = None) -> None:
    """Print ``report_table(report)`` with rich (to ``console`` or stdout)."""
    from rich.console import Console

    (console or Console()).print(report_table(report))
