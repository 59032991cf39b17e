"""Render a run summary as one self-contained HTML page (inline CSS and SVG, no network).

Autoescaping is on: document text, queries and model output are untrusted. Every number that
mirrors the manifest or the data carries ``data-count="<key>"`` (and ``data-value``), e.g.
``stage.<key>.inputs``, ``stage.<key>.outputs.<name>``, ``stage.<key>.failures_by_reason.<r>``,
``stage.<key>.usage.<field>``, ``totals.<field>``, ``data.<table>``, ``level.<level>.queries``.

Example::

    path = write_report("outputs/demo/20250101-120000")          # <run>/report.html
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from fingen.errors import InputError, StoreError
from fingen.files import atomic_write_text, safe_join
from fingen.records import CoTSample, Passage, QAItem, Qrel, Query
from fingen.report.charts import bar_chart, histogram
from fingen.report.collect import LEVELS, RunData, RunSummary, summarize

__all__ = [
    "QuerySample",
    "TrainingLift",
    "count",
    "render_report",
    "sample_items",
    "sample_queries",
    "training_lifts",
    "write_report",
]

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def count(key: str, value: Any) -> Markup:
    """``<span data-count=key data-value=value>formatted</span>`` (values escaped)."""
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Markup('<span class="n">{}</span>').format(value)
    shown = f"{value:,}" if isinstance(value, int) else f"{value:,.6f}".rstrip("0").rstrip(".")
    return Markup('<span class="n" data-count="{}" data-value="{}">{}</span>').format(
        key, value, shown
    )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit:,} more chars]"


@dataclass
class QuerySample:
    """A query with its labels (positive, negative and partial) and their passages."""

    query: Query
    evidence: list[tuple[Qrel, Passage | None]]


def sample_queries(data: RunData, limit: int = 40) -> list[QuerySample]:
    """Up to ``limit`` queries, levels taken in turn, ordered by id (ids are hashes: a spread)."""
    by_level: dict[str, list[Query]] = defaultdict(list)
    for q in sorted(data.queries.values(), key=lambda q: q.query_id):
        by_level[q.level].append(q)
    picked: list[Query] = []
    while len(picked) < limit and any(by_level.values()):
        for queue in by_level.values():
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    labels: dict[str, list[Qrel]] = defaultdict(list)
    for r in data.qrels:
        labels[r.query_id].append(r)
    ids = {r.passage_id for q in picked for r in labels[q.query_id]}
    passages = {p.passage_id: p for p in data.passages(ids)}
    return [
        QuerySample(q, [(r, passages.get(r.passage_id)) for r in labels[q.query_id]])
        for q in picked
    ]


def sample_items(data: RunData, limit: int = 20) -> list[tuple[QAItem, list[CoTSample]]]:
    """Up to ``limit`` QA items (those with samples first) with their CoT samples."""
    groups: dict[str, list[CoTSample]] = defaultdict(list)
    for s in sorted(data.cot.values(), key=lambda s: (s.qa_id, s.sample_idx)):
        groups[s.qa_id].append(s)
    items = sorted(data.qa.values(), key=lambda i: (i.qa_id not in groups, i.qa_id))[:limit]
    return [(i, groups.get(i.qa_id, [])) for i in items]


@dataclass
class TrainingLift:
    """One ``train`` stage: its base and trained model and their dev metrics per level."""

    key: str
    base: str
    model_dir: str
    steps: int
    rows: int
    split: str | None
    note: str
    metrics: list[str]
    rows_by_level: list[tuple[str, int, list[tuple[float, float, float]]]]  # (before, after, Δ)
    prompted_ndcg: float | None = None  # the base with the trained prompt, before training


def training_lifts(s: RunSummary) -> list[TrainingLift]:
    """The before/after numbers of every ``train`` stage of the run (from its manifest entry)."""
    out = []
    for key, e in s.stages.items():
        extra = e.get("extra") or {}
        if e.get("stage") != "train" or "dev" not in extra:
            continue
        dev = extra["dev"]
        after = dev.get("after") or {}
        before = dev.get("before") or {}
        metrics = [m for m in next(iter(after.values()), {}) if m != "queries"]
        levels = []
        for level, m in after.items():
            b = before.get(level, {})
            vals = [(b.get(x, 0.0), m[x], m[x] - b.get(x, 0.0)) for x in metrics]
            levels.append((level, int(m.get("queries", 0)), vals))
        rows = extra.get("rows") or {}
        out.append(
            TrainingLift(
                key=key,
                base=str(extra.get("base", "")),
                model_dir=str(extra.get("model_dir", "")),
                steps=int(extra.get("steps", 0)),
                rows=int(rows.get("total", 0)) if isinstance(rows, dict) else int(rows),
                split=dev.get("split"),
                note=str(dev.get("note", "")),
                metrics=metrics,
                rows_by_level=levels,
                prompted_ndcg=((dev.get("before_prompted") or {}).get("all") or {}).get("ndcg@10"),
            )
        )
    return out


def _charts(s: RunSummary) -> dict[str, Any]:
    levels = {lv: st for lv, st in s.levels.items() if st.queries or lv in LEVELS}
    origins: Counter[str] = Counter()
    for st in s.levels.values():
        origins.update(st.origins)
    usage = [(k, e["usage"]) for k, e in s.stages.items() if e.get("usage")]
    tokens = [(k, u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for k, u in usage]
    sizes = [len(c["doc_ids"]) for c in s.data.clusters]
    return {
        "lengths": {
            lv: histogram(st.lengths, title=f"{lv}: query length", x_label="characters")
            for lv, st in levels.items()
        },
        "positives": {
            lv: histogram(st.positives_per_query, title=f"{lv}: qrels per query", x_label="qrels")
            for lv, st in levels.items()
        },
        "origins": bar_chart(sorted(origins.items()), title="Label origins (positive qrels)"),
        "judges": {
            name: bar_chart([(str(k), v) for k, v in sorted(c.items())], title=f"{name}: scores")
            for name, c in s.judge_scores.items()
        },
        "cot": bar_chart(
            [(src, round(100 * r.passed / r.samples, 1)) for src, r in s.cot_sources.items()],
            title="CoT samples passing both rounds (%)",
        ),
        "tokens": bar_chart(tokens, title="Tokens per stage"),
        "cost": bar_chart([(k, u.get("cost", 0.0)) for k, u in usage], title="Cost per stage"),
        "cluster_sizes": histogram(sizes, title="Cluster sizes", x_label="documents"),
    }


def render_report(summary: RunSummary, *, max_queries: int = 40, max_items: int = 20) -> str:
    """The report page for ``summary`` as an HTML string (with samples of queries and items)."""
    m = summary.manifest
    template = _ENV.get_template("report.html.jinja")
    return template.render(
        s=summary,
        query_samples=sample_queries(summary.data, max_queries),
        item_samples=sample_items(summary.data, max_items),
        lifts=training_lifts(summary),
        m=m,
        title=m.get("pipeline") or summary.data.root.name,
        config=m.get("config", {}),
        charts=_charts(summary),
        count=count,
        pct=_pct,
        clip=_clip,
        esc=escape,
        usage_keys=("requests", "cached", "prompt_tokens", "completion_tokens", "cost"),
    )


def write_report(run_dir: str | Path, out: str = "report.html") -> Path:
    """Write the HTML report of ``run_dir`` to ``<run_dir>/<out>`` (atomically); returns it.

    Raises:
        InputError: ``run_dir`` is not a directory or ``out`` leaves it.
    """
    root = Path(run_dir).resolve()
    try:
        path = safe_join(root, out)
    except StoreError:
        raise InputError(
            f"report path '{out}' is outside the run directory", path=str(root)
        ) from None
    atomic_write_text(path, render_report(summarize(root)))
    return path
