"""Retrieval metrics on a toy ranking computed by hand, and ``evaluate_beir`` end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from fingen.export.retrieval import write_beir
from fingen.records import Passage, Qrel, Query
from fingen.retrieval.evaluate import (
    evaluate_beir,
    evaluate_rankings,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    print_report,
    recall_at_k,
)
from tests.mining_fixtures import BagEmbedder, make_passages, make_queries

# q1: graded labels, the first relevant passage at rank 2 and the second at rank 4
# q2: its only relevant passage at rank 11 (outside @10, inside @100)
# q3: judged but nothing relevant: not counted
QRELS = {"q1": {"d1": 2, "d2": 1, "d5": 1}, "q2": {"d9": 1}, "q3": {"d7": 0}}
RUN = {
    "q1": ["d3", "d1", "d4", "d2"],
    "q2": [f"x{i}" for i in range(10)] + ["d9"],
    "q3": ["d7"],
}


def test_ndcg_uses_linear_gain_and_log2_discount() -> None:
    # DCG  = 2/log2(3) + 1/log2(5)            (ranks 2 and 4)
    # IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4) (ideal order 2, 1, 1)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 + 1 / math.log2(3) + 1 / 2
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(0.540586, abs=1e-6)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 1) == 0.0
    assert ndcg_at_k(["d1", "d2", "d5"], QRELS["q1"], 10) == pytest.approx(1.0)
    assert ndcg_at_k(RUN["q2"], QRELS["q2"], 10) == 0.0


def test_recall_and_mrr_on_the_toy_ranking() -> None:
    assert recall_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(2 / 3)
    assert recall_at_k(RUN["q1"], QRELS["q1"], 2) == pytest.approx(1 / 3)
    assert recall_at_k(RUN["q2"], QRELS["q2"], 10) == 0.0
    assert recall_at_k(RUN["q2"], QRELS["q2"], 100) == 1.0
    assert mrr_at_k(RUN["q1"], QRELS["q1"], 10) == 0.5
    assert mrr_at_k(RUN["q2"], QRELS["q2"], 10) == 0.0


def test_means_skip_queries_without_relevant_passages() -> None:
    m = evaluate_rankings(RUN, QRELS)
    assert m["queries"] == 2
    assert m["ndcg@10"] == pytest.approx(0.540586 / 2, abs=1e-5)
    assert m["recall@10"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["recall@100"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-5)
    assert m["mrr@10"] == pytest.approx(0.25)
    assert evaluate_rankings({}, QRELS)["ndcg@10"] == 0.0  # nothing retrieved scores 0


def beir_dir(tmp_path: Path) -> Path:
    passages = make_passages()
    queries, qrels = make_queries()
    write_beir(tmp_path / "beir", passages, queries, qrels)
    return tmp_path / "beir"


def test_evaluate_beir_reports_every_level_for_bm25_and_embedders(tmp_path: Path) -> None:
    root = beir_dir(tmp_path)
    report = evaluate_beir(root, [], bm25=True, lang="en", embedders={"bag": BagEmbedder()})
    assert set(report["results"]) == {"bm25", "bag"}
    assert report["levels"]["topic_level"] == 0
    for levels in report["results"].values():
        assert next(iter(levels)) == "all"
        assert {"sentence_level", "passage_level"} <= set(levels)
        assert "topic_level" not in levels  # no topic queries: nothing to score
        assert levels["all"]["queries"] == 6
        assert levels["all"]["ndcg@10"] > 0.6 and levels["all"]["recall@100"] == 1.0
    json.dumps(report)  # JSON-serializable as is
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=160))
    table = buf.getvalue()
    assert "ndcg@10" in table and "sentence_level" in table and "bm25" in table


def test_evaluate_beir_tokenizes_chinese_for_bm25(tmp_path: Path) -> None:
    passages = [
        Passage(
            passage_id="p1", doc_id="d", text="贵州茅台2023年营业收入为1505亿元，同比增长18%。"
        ),
        Passage(passage_id="p2", doc_id="d", text="招商银行不良贷款率保持在0.95%的较低水平。"),
    ]
    queries = [
        Query(query_id="q1", text="贵州茅台2023年营业收入是多少？", level="sentence", lang="zh"),
        Query(query_id="q2", text="招商银行的不良贷款率是多少？", level="sentence", lang="zh"),
    ]
    qrels = [Qrel(query_id="q1", passage_id="p1"), Qrel(query_id="q2", passage_id="p2")]
    write_beir(tmp_path / "beir", passages, queries, qrels)
    report = evaluate_beir(tmp_path / "beir", bm25=True, lang="zh")
    assert report["results"]["bm25"]["all"]["mrr@10"] == 1.0


def test_load_beir_rejects_a_folder_that_is_not_beir(tmp_path: Path) -> None:
    from fingen.errors import InputError

    with pytest.raises(InputError, match=r"corpus\.jsonl"):
        load_beir(tmp_path)


# -- comparisons: paired bootstrap and `fingen eval` with several models ------------------------
class CoarseBag(BagEmbedder):
    """A worse bag of words (few buckets: unrelated words collide)."""

    name = "coarse"
    dim = 8


def test_paired_bootstrap_is_seeded_and_holds_the_observed_difference() -> None:
    from fingen.retrieval.evaluate import paired_bootstrap

    ref = [(i * 37 % 101) / 100 for i in range(60)]  # spread-out values in [0, 1]
    other = [min(1.0, v + (0.3 if i % 3 else -0.2)) for i, v in enumerate(ref)]
    first = paired_bootstrap(ref, other, resamples=1000, seed=7)
    assert first == paired_bootstrap(ref, other, resamples=1000, seed=7)  # deterministic
    assert first["diff"] == pytest.approx(sum(other) / 60 - sum(ref) / 60, abs=1e-5)
    low, high = first["ci95"]
    assert low <= first["diff"] <= high and low < high
    assert first["queries"] == 60 and first["resamples"] == 1000 and first["seed"] == 7
    assert paired_bootstrap(ref, other, seed=8)["ci95"] != first["ci95"]  # the seed matters
    same = paired_bootstrap(ref, ref)
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_compare_to_reference_pairs_queries_per_level(tmp_path: Path) -> None:
    from fingen.retrieval.evaluate import compare_to_reference

    root = beir_dir(tmp_path)
    report = evaluate_beir(
        root, [], bm25=True, embedders={"bag": BagEmbedder(), "coarse": CoarseBag()},
        per_query=True,
    )  # fmt: skip
    comparison = compare_to_reference(report, "bag", resamples=500, seed=1)
    assert comparison["reference"] == "bag" and set(comparison["retrievers"]) == {"bm25", "coarse"}
    for name, levels in comparison["retrievers"].items():
        for level, metrics in levels.items():
            for metric, entry in metrics.items():
                observed = report["results"][name][level][metric]
                observed -= report["results"]["bag"][level][metric]
                assert entry["diff"] == pytest.approx(observed, abs=1e-4), (name, level, metric)
                assert entry["ci95"][0] <= entry["diff"] <= entry["ci95"][1]
                assert entry["queries"] == report["results"]["bag"][level]["queries"]
    assert compare_to_reference(report, "bag", resamples=500, seed=1) == comparison


def test_eval_cli_compares_two_models_with_an_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from fingen.cli import app
    from fingen.embed.models import EMBEDDERS

    monkeypatch.setitem(EMBEDDERS, "bag", lambda **kw: BagEmbedder())
    monkeypatch.setitem(EMBEDDERS, "coarse", lambda **kw: CoarseBag())
    root = beir_dir(tmp_path)
    out = tmp_path / "eval.json"
    args = ["eval", str(root), "--model", "bag", "--model", "coarse", "--no-bm25"]
    result = CliRunner().invoke(app, [*args, "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["results"]) == ["bag", "coarse"]
    entry = report["comparison"]["retrievers"]["coarse"]["all"]["ndcg@10"]
    assert report["comparison"]["reference"] == "bag" and report["comparison"]["seed"] == 3
    assert entry["ci95"][0] <= entry["diff"] <= entry["ci95"][1]
    text = result.output
    assert "bag" in text and "coarse" in text and "[95% CI]" in text and "reference" in text
    assert f"{entry['diff']:+.4f}" in text and f"{entry['ci95'][0]:+.4f}" in text
    CliRunner().invoke(app, [*args, "--seed", "3", "--out", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text())["comparison"] == report["comparison"]


def test_eval_cli_scores_one_split_and_names_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from fingen.cli import app

    root = beir_dir(tmp_path)
    rows = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["split"] = "dev" if i % 2 else "train"
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(root), "--split", "dev", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["split"] == "dev" and "comparison" not in report  # one retriever
    assert report["results"]["bm25"]["all"]["queries"] == 3
    missing = CliRunner().invoke(app, ["eval", str(root), "--split", "test"])
    assert missing.exit_code != 0 and "split 'test'" in str(missing.exception)
