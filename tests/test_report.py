"""The run report: collecting a run directory, rendering the HTML page, the ``report`` stage.

The run directory comes from ``tests/report_fixtures.py`` (shared with the publish and
browser tests).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fingen.report import load_run, summarize, write_report
from fingen.report.charts import bar_chart, histogram, integer_bins
from fingen.report.html import sample_items, sample_queries
from tests.report_fixtures import INJECTION, Counts, make_fixture_run, manifest_value


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_fixture_run(tmp_path / "run")


def test_load_run_applies_filter_and_renamed_stages(run_dir: Path) -> None:
    data = load_run(run_dir)
    stage_of = {f.path.name: f.stage_type for f in data.files}
    assert stage_of["gen.queries.jsonl"] == "bottom_up"
    assert "filter.rejected.jsonl" not in stage_of and "gen.failures.jsonl" not in stage_of
    assert set(data.queries) == {"qs1", "qs2", "qs3", "qp1", "qt1"}  # qdrop filtered out
    assert all(r.query_id != "qdrop" for r in data.qrels)
    assert sorted(r.kind for r in data.positives).count("mined") == 1  # qt1-p4, grade 2
    assert {(r.query_id, r.passage_id) for r in data.partial} == {("qs1", "p2"), ("qt1", "p3")}
    assert [r.passage_id for r in data.negatives] == ["p1"]
    assert data.cot["s1"].quality is True and data.cot["s2"].correct is False  # latest stage wins
    assert len(data.sft) == len(data.dpo) == len(data.rl) == 1
    assert {p.passage_id for p in data.passages()} == {"p1", "p2", "p3", "p4"}


def test_summary_counts_levels_origins_and_cot_rates(run_dir: Path) -> None:
    s = summarize(run_dir)
    # grade-1 labels (qs1-p2 mined, qt1-p3 judged) are partial, not positives (min_positive 2)
    assert s.counts["queries"] == 5 and s.counts["qrels"] == 6 and s.counts["negatives"] == 1
    assert s.counts["partial"] == 2
    assert s.levels["sentence"].queries == 3 and s.levels["topic"].queries == 1
    assert s.levels["sentence"].origins == {"direct": 3}
    assert s.levels["topic"].origins == {"judged": 1, "mined": 1}
    assert sorted(s.levels["sentence"].positives_per_query) == [1, 1, 1]
    assert s.judge_scores["mined · fake-judge"] == {0: 1, 1: 1, 2: 1}
    assert s.judge_scores["judged · fake-judge"] == {2: 1, 1: 1}
    finqa = s.cot_sources["finqa"]
    assert (finqa.items, finqa.samples, finqa.correct, finqa.quality, finqa.passed) == (
        1,
        2,
        1,
        1,
        1,
    )
    assert s.cot_sources["tatqa"].passed == 0
    assert s.totals["prompt_tokens"] == 1200 + 900 + 3000 + 300 + 500  # computed: no totals
    evidence = {qs.query.query_id: qs.evidence for qs in sample_queries(s.data)}
    assert {r.passage_id for r, _ in evidence["qs1"]} == {"p1", "p2"}
    assert all(p is not None for r, p in evidence["qs1"])
    items = sample_items(s.data)
    assert [(i.qa_id, len(samples)) for i, samples in items] == [("a1", 2), ("a2", 1)]


def test_report_counts_match_the_manifest_and_the_data(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir.resolve() / "report.html"
    parser = Counts()
    parser.feed(path.read_text(encoding="utf-8"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["totals"] = summarize(run_dir).totals
    seen = set()
    for key, value, text in parser.counts:
        assert float(value) == pytest.approx(float(text.replace(",", ""))), key
        expected = manifest_value(manifest, key)
        if expected is not None:
            assert float(value) == pytest.approx(expected), key
            seen.add(key)
    assert {
        "stage.gen.inputs",
        "stage.gen.failures_by_reason.bad_span",
        "stage.filter.failed",
        "stage.mine.outputs.negatives",
        "stage.distill.usage.completion_tokens",
        "totals.cost",
    } <= seen
    data_counts = {k: v for k, v, _ in parser.counts if k.startswith(("data.", "level."))}
    assert data_counts["data.queries"] == "5" and data_counts["data.sft"] == "1"
    assert data_counts["level.topic.origin.mined"] == "1"


def test_report_is_self_contained_and_escapes_document_text(run_dir: Path) -> None:
    html = write_report(run_dir, out="sub/r.html").read_text(encoding="utf-8")
    parser = Counts()
    parser.feed(html)
    assert len(parser.scripts) == 1 and "src" not in parser.scripts[0]  # only the inline filter
    assert "<script>alert" not in html and "<img" not in html
    assert "&lt;script&gt;alert(" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no network loads
    assert "<svg" in html and "<details" in html
    for needle in (
        "How did industrials and banks fare in 2023?",
        "revenue, income",
        "Acme 2023 annual report",
        "mentions 2023 results",
        "repetitive",
        "bad_span",
        "fake-gen",
    ):
        assert needle in html


def test_report_refuses_a_path_outside_the_run(run_dir: Path) -> None:
    from fingen.errors import InputError

    with pytest.raises(InputError):
        write_report(run_dir, out="../evil.html")


def test_report_of_an_empty_run_dir_renders(tmp_path: Path) -> None:
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No queries in this run." in html and "The manifest lists no stages." in html


def test_charts_escape_labels_and_handle_empty_data() -> None:
    svg = bar_chart([(INJECTION, 3), ("b", 1.5)], title="<t>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;t&gt;" in svg
    assert "no data" in histogram([], title="x")
    assert integer_bins([1, 1, 2, 5], bins=12) == [
        (1, 1, 2),
        (2, 2, 1),
        (3, 3, 0),
        (4, 4, 0),
        (5, 5, 1),
    ]
    assert sum(c for *_, c in integer_bins(list(range(1000)), bins=10)) == 1000
    assert histogram([3, 4, 4], title="len").count("<rect") == 2


def test_report_stage_in_a_fake_pipeline(tmp_path: Path) -> None:
    from fingen.config import PipelineConfig
    from fingen.pipeline import run_pipeline

    demo = Path(__file__).resolve().parents[1] / "fingen" / "_demo"
    stages = [
        {"stage": "ingest", "params": {"paths": [str(demo / "filings.jsonl")], "limit": 3}},
        {"stage": "chunk"},
        {"stage": "bottom_up", "id": "gen", "params": {"passages": "chunk", "limit": 4}},
        {
            "stage": "qa_source",
            "params": {"source": "finqa", "path": str(demo / "finqa_items.json"), "limit": 2},
        },
        {"stage": "distill", "params": {"n": 2}},
        {"stage": "verify"},
        {"stage": "judge_reasoning"},
        {"stage": "route"},
        {"stage": "preference"},
        {"stage": "report", "id": "html", "params": {"out": "reports/run.html"}},
    ]
    config = PipelineConfig.model_validate(
        {"name": "t", "llm": {"backend": "fake"}, "stages": stages}
    )
    result = run_pipeline(config, tmp_path / "run")
    assert result.status == "complete", result.manifest
    page = tmp_path / "run" / "reports" / "run.html"
    assert page.is_file() and result.stages["html"]["extra"]["bytes"] > 0
    assert "<b>complete</b>" in page.read_text(
        encoding="utf-8"
    )  # re-rendered on the final manifest
    parser = Counts()
    parser.feed(page.read_text(encoding="utf-8"))
    keys = {k: v for k, v, _ in parser.counts}
    assert keys["stage.gen.inputs"] == str(result.stages["gen"]["inputs"])
    assert keys["stage.distill.usage.requests"] == str(
        result.stages["distill"]["usage"]["requests"]
    )
    assert keys["data.cot_samples"] == str(result.stages["distill"]["outputs"]["main"])
