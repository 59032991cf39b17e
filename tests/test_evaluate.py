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
