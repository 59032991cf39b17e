"""Query filters: near-duplicates (normalized text, embedding cosine) and the round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fingen.embed.index import ExactIndex
from fingen.records import Qrel, Query, content_id
from fingen.retrieval.filters import filter_queries, near_duplicates, round_trip
from tests.mining_fixtures import (
    EXPLICIT,
    QUERIES,
    BagEmbedder,
    make_passages,
    make_queries,
    pid,
    qid,
    read,
    run,
    write_records,
    write_upstream,
)


def q(text: str, level: str = "sentence", sources: list[str] | None = None) -> Query:
    return Query(
        query_id=content_id(text, level, prefix="q-"),
        text=text,
        level=level,  # type: ignore[arg-type]
        source_passage_ids=sources or [],
    )


def test_exact_duplicates_after_normalization_keep_the_first() -> None:
    qs = [q("What was Acme's revenue?"), q("what was ACME's  revenue ？"), q("Other question?")]
    dropped = near_duplicates(qs)
    assert dropped == {qs[1].query_id: (qs[0].query_id, "exact")}


def test_cosine_duplicates_are_dropped_above_the_threshold_only() -> None:
    qs = [q("a1?"), q("a2?"), q("b?"), q("a3?")]
    v = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0.9, 0.436, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    dropped = near_duplicates(qs, vectors=v, threshold=0.95)
    assert set(dropped) == {qs[1].query_id}
    kept_id, how = dropped[qs[1].query_id]
    assert kept_id == qs[0].query_id and how.startswith("cosine=0.99")
    assert set(near_duplicates(qs, vectors=v, threshold=0.85)) == {qs[1].query_id, qs[3].query_id}


def test_round_trip_checks_source_passages_in_the_top_k() -> None:
    passages = make_passages()
    bag_emb = BagEmbedder()
    pv = bag_emb.encode([p.text for p in passages])
    good = q("What was Acme Corp's total revenue in fiscal 2023?", sources=[pid("acme", 0)])
    bad = q("What was Acme Corp's total revenue in fiscal 2023 again?", sources=[pid("gamma", 1)])
    topic = q("How do energy and banking results compare in 2023?", level="topic")
    judged = Qrel(query_id=topic.query_id, passage_id=pid("beta", 0), score=2, kind="judged")
    qs = [good, bad, topic]
    out = round_trip(
        qs,
        passages,
        query_vectors=bag_emb.encode([x.text for x in qs], kind="query"),
        index=ExactIndex(pv),
        top_k=2,
        qrels=[judged],
    )
    assert out[good.query_id] is True and out[bad.query_id] is False
    assert out[topic.query_id] is not None  # checked through its judged label
    orphan = q("Is anything here?")
    assert (
        round_trip([orphan], passages, query_vectors=pv[:1], index=ExactIndex(pv))[orphan.query_id]
        is None
    )


def test_filter_queries_reports_failures_and_counts(bag: BagEmbedder) -> None:
    passages = make_passages()
    queries, qrels = make_queries()
    result = filter_queries(
        queries, passages, qrels, embedder=bag, dedup_threshold=0.9, round_trip_k=1
    )
    kept = {x.query_id for x in result.kept}
    assert qid(QUERIES[4][0]) not in kept  # "...for 2023?" duplicates "...in 2023?"
    assert result.counts["near_duplicate"] == 1
    reasons = {f.item_id: f.reason for f in result.failures}
    assert reasons[qid(QUERIES[4][0])] == "near_duplicate"
    assert len(kept) + len(result.failures) == len(queries)
    assert all(f.raw for f in result.failures)


def test_filter_stage_keeps_queries_and_their_labels_only(tmp_path: Path, bag: BagEmbedder) -> None:
    run_dir = tmp_path / "run"
    _, queries, qrels = write_upstream(run_dir)
    dup = qid(QUERIES[4][0])
    # the near-duplicate also has mined labels of grade 2 and 1: both leave with it
    write_records(
        run_dir / "mine.qrels.jsonl",
        [
            Qrel(query_id=dup, passage_id=pid("beta", 1), score=2, kind="mined"),
            Qrel(query_id=dup, passage_id=pid("beta", 2), score=1, kind="mined"),
        ],
    )
    # a query whose source passage cannot be found by the embedder fails the round trip
    lost = Query(
        query_id="q-lost",
        text="Which zebra crossings were repainted?",
        level="sentence",
        source_passage_ids=[pid("gamma", 2)],
    )
    write_records(run_dir / "bottom_up.queries.jsonl", [*queries, lost])
    params = {
        "passages": "chunk",
        "queries": EXPLICIT["queries"],
        "qrels": ["bottom_up.qrels", "mine.qrels"],
        "dedup_threshold": 0.9,
        "round_trip": True,
        "round_trip_k": 3,
    }
    result = run(tmp_path, [{"stage": "filter", "params": params}])
    entry = result.stages["filter"]
    kept = read(run_dir, "filter", Query)
    assert {x.query_id for x in kept} == {x.query_id for x in queries} - {dup}
    assert entry["extra"]["filters"] == {"near_duplicate": 1, "round_trip_failed": 1}
    assert entry["inputs"] == len(queries) + 1 == entry["succeeded"] + entry["failed"]
    failures = {f["item_id"]: f["reason"] for f in read(run_dir, "filter.failures")}
    assert failures == {dup: "near_duplicate", "q-lost": "round_trip_failed"}
    labels = read(run_dir, "filter.qrels", Qrel)
    assert {r.query_id for r in labels} == {x.query_id for x in kept}
    assert len(labels) == len(qrels) - 1
    assert entry["extra"]["labels_dropped"] == 3  # the duplicate's direct and two mined labels
    assert entry["extra"]["round_trip_pass_rate"] == round(1 - 1 / len(queries), 4)


def test_filter_without_embedding_test_uses_exact_text_only(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    passages = make_passages()
    write_records(run_dir / "chunk.jsonl", passages)
    qs = [q("What is Acme's margin?"), q("what is acme's margin"), q("What is Beta's CET1?")]
    write_records(run_dir / "bottom_up.queries.jsonl", qs)
    write_records(run_dir / "bottom_up.qrels.jsonl", [])
    params = {**EXPLICIT, "dedup_embedding": False}
    result = run(tmp_path, [{"stage": "filter", "params": params}], embedder="no-such-model")
    assert [x.text for x in read(run_dir, "filter", Query)] == [qs[0].text, qs[2].text]
    assert result.stages["filter"]["failed"] == 1


def test_stage_inputs_follow_the_pipeline_order(tmp_path: Path) -> None:
    from fingen.config import PipelineConfig
    from fingen.errors import ConfigError
    from fingen.pipeline import _context, resolve_stage, validate_pipeline
    from fingen.resources import Resources
    from fingen.stages.base import output_files, spec_of
    from fingen.store import RunStore

    def view_of(key: str, stages: list[str]) -> dict[str, list[str]]:
        config = PipelineConfig.model_validate(
            {"name": "t", "stages": [{"stage": s} for s in stages]}
        )
        specs = [spec_of(resolve_stage(s)) for s in stages]
        store = RunStore(tmp_path / "-".join(stages))
        for sc, spec in zip(config.stages, specs, strict=True):  # every output exists
            for f in output_files(store.root, sc.key, sc.stage, spec):
                f.path.write_text("")
        ctx = _context(config, stages.index(key), store, Resources(config, store), specs)
        view = ctx.view()
        return {k: [f.ref for f in view.files_of(k)] for k in ("query", "qrel")}

    order = ["chunk", "bottom_up", "top_down", "filter", "mine", "hard_negatives"]
    got = view_of("hard_negatives", order)
    assert got["query"] == ["filter"]
    assert got["qrel"] == ["filter.qrels", "mine.qrels"]  # a filter replaces what came before
    got = view_of("mine", ["chunk", "bottom_up", "top_down", "mine", "filter"])
    assert got["query"] == ["bottom_up.queries", "top_down.queries"]
    assert got["qrel"] == ["bottom_up.qrels", "top_down.qrels"]
    config = PipelineConfig.model_validate({"name": "t", "stages": [{"stage": "chunk"},
                                                                   {"stage": "mine"}]})  # fmt: skip
    with pytest.raises(ConfigError, match="no earlier stage produces"):
        validate_pipeline(config)
