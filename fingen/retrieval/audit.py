"""Audit a finished run's relevance labels with an independent judge (``fingen audit RUN_DIR``).

Two numbers per query level, each with a 95% Wilson interval:

- **mined precision**: a seeded sample of mined positives (grade >= ``min_positive``) is
  judged again; the share still graded a positive.
- **false-negative rate**: for every query, a candidate pool that mining never judged:
  the mining embedder's ranks beyond the mining depth (``mining_depth`` .. ``depth``), BM25's
  top ``bm25_k``, and a second embedder's top ``depth`` when one is given, minus every pair
  that carries any label. A seeded sample of that pool is judged; the share graded a positive
  estimates how many relevant passages the labels miss (FinCPRG reports ~4% after mining).

The audit judge should be another model than the mining judge (``models.judge`` by default)
and never reuses the mining judge's cached answers. The result is written to
``<run_dir>/audit.json`` and returned.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingen.errors import InputError
from fingen.files import atomic_write_text
from fingen.records import Passage, Query
from fingen.retrieval.judges import Candidate, Judge
from fingen.run import LEVELS, load_run

if TYPE_CHECKING:
    from fingen.embed.base import Embedder

__all__ = ["audit_run", "candidate_pool", "wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (``(0.0, 1.0)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def _estimate(judge: Judge, pairs: list[Candidate], min_positive: int) -> dict[str, Any]:
    hits = failed = 0
    rows = []
    for v in judge.judge(pairs):
        if v.score is None:
            failed += 1
            continue
        hits += int(v.score >= min_positive)
        rows.append({"query_id": v.candidate.query.query_id,
                     "passage_id": v.candidate.passage.passage_id, "source": v.candidate.source,
                     "score": v.score, "rationale": v.rationale})  # fmt: skip
    n = len(pairs) - failed
    return {"judged": n, "relevant": hits, "share": round(hits / n, 4) if n else None,
            "ci95": wilson_interval(hits, n), "failed": failed, "pairs": rows}  # fmt: skip


def candidate_pool(
    queries: Sequence[Query],
    corpus: Sequence[Passage],
    labeled: set[tuple[str, str]],
    *,
    embedder: Embedder,
    mining_depth: int,
    depth: int = 100,
    bm25_k: int = 20,
    second: Embedder | None = None,
    lang: str = "en",
) -> list[Candidate]:
    """Unlabeled (query, passage) pairs that mining did not look at (see the module doc);
    ``Candidate.source`` says which retriever proposed each (``+``-joined when several)."""
    from fingen.embed.bm25 import BM25Index
    from fingen.embed.index import build_index

    if not queries or not corpus:
        return []
    found: dict[tuple[int, int], list[str]] = defaultdict(list)
    texts = [q.text for q in queries]
    sources = [("embedder", embedder, mining_depth)]
    if second is not None:
        sources.append(("second_embedder", second, 0))
    for name, emb, skip in sources:
        vectors = emb.encode([p.text for p in corpus], kind="passage")
        _, hits = build_index(vectors).search(emb.encode(texts, kind="query"), depth)
        for qi, row in enumerate(hits.tolist()):
            for rank, pi in enumerate(row):
                if pi >= 0 and rank >= skip:
                    found[qi, pi].append(name)
    if bm25_k > 0:
        _, hits = BM25Index([p.text for p in corpus], lang=lang).search(texts, bm25_k)
        for qi, row in enumerate(hits.tolist()):
            for pi in row:
                found[qi, pi].append("bm25")
    return [
        Candidate(queries[qi], corpus[pi], "+".join(dict.fromkeys(names)))
        for (qi, pi), names in sorted(found.items())
        if (queries[qi].query_id, corpus[pi].passage_id) not in labeled
    ]


def audit_run(
    run_dir: str | Path,
    sample: int,
    judge: Judge,
    *,
    embedder: Embedder | None = None,
    second_embedder: Embedder | None = None,
    mining_depth: int | None = None,
    depth: int = 100,
    bm25_k: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Mined precision and false-negative rate per level of a finished run.

    Args:
        run_dir: a run directory (``outputs/<pipeline>/<run>``).
        sample: pairs judged per estimate and level.
        judge: the audit judge (ideally another model than the mining judge).
        embedder: the mining embedder (default: the run's, with its embedding cache).
        second_embedder: another embedder whose top-``depth`` joins the pool.
        mining_depth: ranks mining judged (default: the run's ``mine`` ``global_top_k``).
        depth: how deep the embedders' rankings go for the pool.
        bm25_k: BM25's top-k in the pool.
        seed: sampling seed.
    """
    data = load_run(run_dir)
    root = data.root
    corpus = list(data.passages())
    if not corpus:
        raise InputError("no passages: not a run directory with a corpus", path=str(root))
    config = data.manifest.get("config", {})
    lang = config.get("lang", "en")
    mining_depth = _mining_depth(config) if mining_depth is None else mining_depth
    labeled = {(r.query_id, r.passage_id) for r in data.qrels}
    by_pid = {p.passage_id: p for p in corpus}
    rng = random.Random(seed)
    pool = candidate_pool(
        list(data.queries.values()), corpus, labeled, embedder=embedder or _run_embedder(root),
        mining_depth=mining_depth, depth=depth, bm25_k=bm25_k, second=second_embedder, lang=lang,
    )  # fmt: skip
    min_positive = data.rule.min_positive
    levels: dict[str, Any] = {}
    for level in LEVELS:
        mined = [
            Candidate(data.queries[r.query_id], by_pid[r.passage_id], "mined")
            for r in sorted(data.positives, key=lambda r: (r.query_id, r.passage_id))
            if r.kind == "mined" and r.passage_id in by_pid
            and data.queries[r.query_id].level == level
        ]  # fmt: skip
        unlabeled = [c for c in pool if c.query.level == level]
        if not mined and not unlabeled:
            continue
        m = _estimate(judge, rng.sample(mined, min(sample, len(mined))), min_positive)
        u = _estimate(judge, rng.sample(unlabeled, min(sample, len(unlabeled))), min_positive)
        levels[level] = {
            "mined_precision": {"population": len(mined), **m, "precision": m["share"]},
            "false_negative_rate": {"pool": len(unlabeled), **u, "rate": u["share"]},
        }
    report = {
        "run_dir": str(root), "judge": judge.name, "sample": sample, "seed": seed,
        "min_positive": min_positive,
        "pool": {"mining_depth": mining_depth, "depth": depth, "bm25_k": bm25_k,
                 "second_embedder": getattr(second_embedder, "name", None),
                 "size": len(pool)},
        "levels": levels,
    }  # fmt: skip
    atomic_write_text(root / "audit.json", json.dumps(report, indent=2, ensure_ascii=False))
    return report


def _mining_depth(config: dict[str, Any]) -> int:
    for stage in config.get("stages", []):
        if stage.get("stage") == "mine":
            return int(stage.get("params", {}).get("global_top_k", 10))
    return 10


def _run_embedder(root: Path) -> Embedder:
    from fingen.embed.models import load_embedder

    manifest = root / "manifest.json"
    name = "minilm"
    if manifest.is_file():
        name = json.loads(manifest.read_text(encoding="utf-8")).get("embedder") or name
    return load_embedder(name, cache_dir=root / "cache")
