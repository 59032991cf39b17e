"""The report's summary of a run: counts per level, label origins, judge grades, CoT pass
rates. The run itself is read by ``fingen.run.load_run`` (the one run reader)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fingen.run import LEVELS, RunData, load_run

__all__ = ["LEVELS", "LevelStats", "RunData", "RunSummary", "SourceRate", "load_run", "summarize"]

_USAGE_KEYS = ("requests", "cached", "prompt_tokens", "completion_tokens", "cost")


# -- the report summary ------------------------------------------------------------------------
@dataclass
class LevelStats:
    queries: int = 0
    lengths: list[int] = field(default_factory=list)
    positives_per_query: list[int] = field(default_factory=list)
    origins: Counter[str] = field(default_factory=Counter)


@dataclass
class SourceRate:
    """CoT samples of one QA source and how many passed round 1 (correct) and round 2."""

    items: int = 0
    samples: int = 0
    correct: int = 0
    quality: int = 0
    passed: int = 0


@dataclass
class RunSummary:
    data: RunData
    totals: dict[str, Any]
    counts: dict[str, int]
    levels: dict[str, LevelStats]
    judge_scores: dict[str, Counter[int]]
    cot_sources: dict[str, SourceRate]

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data.manifest.get("stages", {})


def _totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys((*_USAGE_KEYS, "failed", "rejected_rows"), 0)
    for e in stages.values():
        for k in _USAGE_KEYS:
            totals[k] += e.get("usage", {}).get(k, 0)
        totals["failed"] += e.get("failed", 0)
        totals["rejected_rows"] += e.get("rejected_rows", 0)
    totals["cost"] = round(totals["cost"], 6)
    return totals


def _level_stats(data: RunData) -> dict[str, LevelStats]:
    per_query: Counter[str] = Counter()
    levels = {lv: LevelStats() for lv in LEVELS}
    for r in data.positives:
        per_query[r.query_id] += 1
        if q := data.queries.get(r.query_id):
            levels.setdefault(q.level, LevelStats()).origins[r.kind] += 1
    for q in data.queries.values():
        st = levels.setdefault(q.level, LevelStats())
        st.queries += 1
        st.lengths.append(len(q.text))
        st.positives_per_query.append(per_query[q.query_id])
    return levels


def _cot_rates(data: RunData) -> dict[str, SourceRate]:
    rates: dict[str, SourceRate] = defaultdict(SourceRate)
    items: set[str] = set()
    for s in data.cot.values():
        item = data.qa.get(s.qa_id)
        rate = rates[(item.source if item else "") or "unknown"]
        rate.items += s.qa_id not in items
        items.add(s.qa_id)
        rate.samples += 1
        rate.correct += s.correct is True
        rate.quality += s.quality is True
        rate.passed += s.correct is True and s.quality is True and s.finish_reason != "length"
    return dict(rates)


def summarize(run_dir: str | Path) -> RunSummary:
    """Everything the report shows, read from ``run_dir``."""
    data = load_run(run_dir)
    judge_scores: dict[str, Counter[int]] = defaultdict(Counter)
    for r in data.qrels:
        if r.kind != "direct":
            judge_scores[f"{r.kind} · {r.judge or 'unknown judge'}"][r.score] += 1
    counts = {
        "documents": sum(1 for _ in data.documents()),
        "passages": sum(1 for _ in data.passages()),
        "queries": len(data.queries),
        "qrels": len(data.positives),
        "negatives": len(data.negatives),
        "partial": len(data.partial),
        "clusters": len(data.clusters),
        "qa_items": len(data.qa),
        "cot_samples": len(data.cot),
        "sft": len(data.sft),
        "dpo": len(data.dpo),
        "rl": len(data.rl),
    }
    return RunSummary(
        data=data,
        totals=data.manifest.get("totals") or _totals(data.manifest.get("stages", {})),
        counts=counts,
        levels=_level_stats(data),
        judge_scores=dict(judge_scores),
        cot_sources=_cot_rates(data),
    )
