"""Splits by source document: nothing of one document (passages, queries) in two splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from fingen.export.retrieval import resolve_groups
from fingen.records import HardNegatives, Passage, Query
from fingen.splits import SplitConfig, assign_splits, key_split


def _corpus(n_docs: int = 20) -> list[Passage]:
    return [Passage(passage_id=f"d{d}p{i}", doc_id=f"d{d}", text=f"doc {d} part {i}", order=i)
            for d in range(n_docs) for i in range(3)]  # fmt: skip


def _queries(passages: list[Passage]) -> list[Query]:
    qs = [Query(query_id=f"q-{p.passage_id}", text="q?", level="sentence",
                source_passage_ids=[p.passage_id], source_doc_ids=[p.doc_id])
          for p in passages if p.order == 0]  # fmt: skip
    # topic queries tie documents together: 0+1, and 2+3+4
    qs.append(Query(query_id="t1", text="t?", level="topic", source_doc_ids=["d0", "d1"]))
    qs.append(Query(query_id="t2", text="t?", level="topic", source_doc_ids=["d2", "d3", "d4"]))
    return qs


def test_no_document_or_query_sits_in_two_splits() -> None:
    passages = _corpus()
    queries = _queries(passages)
    doc_split, query_split = assign_splits(queries, passages, SplitConfig(dev=0.3, test=0.2))
    assert set(doc_split.values()) == {"train", "dev", "test"}
    for q in queries:  # every document a query needs is in the query's split
        for d in q.source_doc_ids:
            assert doc_split[d] == query_split[q.query_id]
    assert (
        doc_split["d0"] == doc_split["d1"] and doc_split["d2"] == doc_split["d3"] == doc_split["d4"]
    )


def test_splits_are_stable_and_small_runs_still_get_a_dev_set() -> None:
    passages, cfg = _corpus(), SplitConfig(dev=0.1, seed=3)
    queries = _queries(passages)
    assert assign_splits(queries, passages, cfg) == assign_splits(queries, passages, cfg)
    tiny = _corpus(3)
    doc_split, _ = assign_splits(_queries(tiny)[:3], tiny, SplitConfig(dev=0.1))
    assert "dev" in doc_split.values() and "train" in doc_split.values()
    one, _ = assign_splits([], _corpus(1), SplitConfig(dev=0.1))
    assert set(one.values()) == {"train"}  # a single group stays in train
    assert key_split("x", SplitConfig(dev=0.0)) == "train"
    with pytest.raises(ValueError, match="dev \\+ test"):
        SplitConfig(dev=0.6, test=0.5)


def test_training_groups_never_use_a_passage_of_another_split() -> None:
    passages = {p.passage_id: p for p in _corpus(2)}
    queries = {"q": Query(query_id="q", text="q?", level="sentence", source_doc_ids=["d0"])}
    group = HardNegatives(query_id="q", positive_ids=["d0p0", "d1p0"],
                          negative_ids=["d0p1", "d1p1"], scores=[0.5, 0.4])  # fmt: skip
    doc_split = {"d0": "train", "d1": "dev"}
    (g,) = resolve_groups([group], queries, passages, query_split={"q": "train"},
                          doc_split=doc_split)  # fmt: skip
    assert g["pos"] == [passages["d0p0"].text] and g["neg"] == [passages["d0p1"].text]
    assert g["split"] == "train"


def test_the_export_stage_writes_split_files(tmp_path: Path, bag: object) -> None:
    from tests.mining_fixtures import EXPLICIT, run, write_upstream

    write_upstream(tmp_path / "run")
    params = {**EXPLICIT, "formats": ["beir"]}
    result = run(tmp_path, [{"stage": "export_retrieval", "params": params}],
                 split={"dev": 0.3, "seed": 1})  # fmt: skip
    beir = tmp_path / "run" / "exports" / "beir"
    assert (beir / "qrels" / "train.tsv").is_file() and (beir / "qrels" / "dev.tsv").is_file()
    splits = result.stages["export_retrieval"]["extra"]["splits"]
    assert set(splits["queries"]) <= {"train", "dev"} and sum(splits["queries"].values()) == 6
