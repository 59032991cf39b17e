"""Clustering by industry x time x topic on real titles; taxonomies; title generation."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from fingen.llm.base import Completion
from fingen.llm.tasks import RowRejected
from fingen.records import Document
from fingen.retrieval.taxonomies import (
    GICS_SECTORS,
    SHENWAN_L1,
    IndustryTask,
    classify_by_embedding,
    default_taxonomy,
)
from fingen.retrieval.titles import TitleReply, TitleTask, clean_title, lead_title
from fingen.retrieval.topic_words import ZH_STOPWORDS, ctfidf_words, tokenizer
from fingen.retrieval.topics import build_clusters, cluster_quality, fit_topics, time_bucket

DONE = Completion(text="{}")
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def embedder():
    """The packaged multilingual e5 (loads in well under a second)."""
    from fingen.embed.models import load_embedder

    try:
        return load_embedder("e5")
    except Exception as exc:  # the embed package is optional for these tests
        pytest.skip(f"e5 embedder unavailable: {exc}")


@pytest.fixture(scope="module")
def en_titles(shared_data: Path) -> list[str]:
    """FinanceBench filing names that have pages, as titles ("3M 2018 10K"), in file order."""
    with gzip.open(shared_data / "financebench_pages" / "pages.jsonl.gz", "rt") as f:
        names = {json.loads(line)["doc_name"] for line in f}
    info = shared_data / "financebench_pages" / "financebench_document_information.jsonl"
    rows = [json.loads(line) for line in info.open()]
    return [r["doc_name"].replace("_", " ") for r in rows if r["doc_name"] in names]


@pytest.fixture(scope="module")
def zh_titles(shared_data: Path) -> list[str]:
    """CFBenchmark research-report headlines (first key point of each summary)."""
    rows = [json.loads(line) for line in (shared_data / "cfbenchmark_cn" / "summary.jsonl").open()]
    return [r["response"].split("｜")[0] for r in rows if r.get("response")]


@pytest.mark.parametrize(
    ("date", "quarter", "half", "year"),
    [
        ("2018-03-31", "2018Q1", "2018H1", "2018"),
        ("2018/9/30", "2018Q3", "2018H2", "2018"),
        ("20181231", "2018Q4", "2018H2", "2018"),
        ("2018年6月", "2018Q2", "2018H1", "2018"),
        ("Q3 2019", "2019Q3", "2019H2", "2019"),
        ("2019年三季度", "2019Q3", "2019H2", "2019"),
        ("2019年中报", "2019H1", "2019H1", "2019"),
        ("FY2020", "2020", "2020", "2020"),
        (None, "unknown", "unknown", "unknown"),
        ("n/a", "unknown", "unknown", "unknown"),
    ],
)
def test_time_bucket(date: str | None, quarter: str, half: str, year: str) -> None:
    assert time_bucket(date, "quarter") == quarter
    assert time_bucket(date, "half") == half
    assert time_bucket(date, "year") == year


def test_time_bucket_rejects_an_unknown_granularity() -> None:
    with pytest.raises(ValueError, match="quarter, half, year"):
        time_bucket("2018", "month")  # type: ignore[arg-type]


def test_fallback_groups_12_real_filings_by_company(en_titles: list[str], embedder) -> None:
    titles = en_titles[:12]  # 3M x2, Activision, Adobe x4, Amazon x2, Amcor x3
    emb = embedder.encode(titles, kind="query")
    labels, words, method = fit_topics(titles, emb, "en")
    assert method == "agglomerative"
    company = [t.split()[0] for t in titles]
    for i in range(len(titles)):
        for j in range(len(titles)):
            if labels[i] != -1 and labels[i] == labels[j]:
                assert company[i] == company[j], (titles[i], titles[j])
    adobe = {labels[i] for i, c in enumerate(company) if c == "ADOBE"}
    assert len(adobe) == 1 and adobe != {-1}
    assert "adobe" in words[adobe.pop()]
    quality = cluster_quality(emb, labels, words)
    assert quality["n_topics"] >= 3 and quality["silhouette"] > 0


def test_fallback_on_12_real_zh_headlines_gives_chinese_topic_words(
    zh_titles: list[str], embedder
) -> None:
    titles = zh_titles[:12]
    labels, words, method = fit_topics(titles, embedder.encode(titles, kind="query"), "zh")
    assert method == "agglomerative" and len(labels) == 12
    assert words, "expected at least one multi-title topic"
    for ws in words.values():
        assert ws and all(w not in ZH_STOPWORDS for w in ws)
        assert any(CJK.search(w) for w in ws)


def test_bertopic_on_60_real_titles(en_titles: list[str], zh_titles: list[str], embedder) -> None:
    pytest.importorskip("bertopic")
    t0 = time.perf_counter()
    for titles, lang in ((en_titles[:60], "en"), (zh_titles[:60], "zh")):
        emb = embedder.encode(titles, kind="query")
        labels, words, method = fit_topics(titles, emb, lang)
        assert method == "bertopic" and len(labels) == 60
        quality = cluster_quality(emb, labels, words)
        assert quality["n_topics"] >= 3 and quality["silhouette"] is not None
        assert 0 < quality["topic_diversity"] <= 1
        assert any(words.values())
        if lang == "zh":
            assert any(CJK.search(w) for ws in words.values() for w in ws)
        again, _, _ = fit_topics(titles, emb, lang)
        assert again == labels  # seeded UMAP: the same titles give the same topics
    assert time.perf_counter() - t0 < 60


def test_bertopic_is_an_error_only_when_asked_for_and_missing(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_bertopic(name: str, *args, **kwargs):
        if name == "bertopic":
            raise ImportError("no bertopic")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bertopic)
    import numpy as np

    emb = np.eye(50, dtype=np.float32)
    titles = [f"title {i}" for i in range(50)]
    assert fit_topics(titles, emb, "en", method="auto")[2] == "agglomerative"
    from fingen.errors import MissingExtraError

    with pytest.raises(MissingExtraError, match="topics"):
        fit_topics(titles, emb, "en", method="bertopic")


def test_ctfidf_words_skip_outliers_and_stopwords() -> None:
    texts = ["Bank loans grow", "bank deposits grow", "Oil output falls", "the and of"]
    words = ctfidf_words(texts, [0, 0, 1, -1], "en", n_words=3)
    assert set(words) == {0, 1}
    assert words[0][0] == "bank" and "the" not in words[0]
    assert tokenizer("zh")("公司2018年归母净利润同比增长") == ["归母", "净利润", "增长"]


def test_build_clusters_by_industry_period_and_topic() -> None:
    docs = [Document(doc_id=f"d{i}", title=f"t{i}", text="x") for i in range(6)]
    industries = ["银行", "银行", "银行", "钢铁", "钢铁", "银行"]
    periods = ["2018Q4", "2018Q4", "2019Q1", "2018Q4", "2018Q4", "2018Q4"]
    labels = [0, 0, 0, 0, 0, -1]
    clusters = build_clusters(docs, labels, {0: ["w"]}, industries, periods)
    got = [(c.industry, c.period, c.doc_ids) for c in clusters]
    assert got[2] == ("银行", "2019Q1", ["d2"])  # largest first
    assert sorted(got[:2]) == [("钢铁", "2018Q4", ["d3", "d4"]), ("银行", "2018Q4", ["d0", "d1"])]
    assert all(c.words == ["w"] and c.topic == 0 for c in clusters)
    assert "d5" not in {d for c in clusters for d in c.doc_ids}  # the outlier
    by_topic = build_clusters(docs, labels, {}, industries, periods, by=["topic"])
    assert [c.doc_ids for c in by_topic] == [["d0", "d1", "d2", "d3", "d4"]]
    assert by_topic[0].industry == "*" and by_topic[0].period == "*"
    again = build_clusters(docs, labels, {0: ["w"]}, industries, periods)
    assert [c.cluster_id for c in again] == [c.cluster_id for c in clusters]


# --- taxonomies ----------------------------------------------------------------------------


def test_default_taxonomies_have_31_shenwan_and_11_gics_labels() -> None:
    assert len(SHENWAN_L1) == 31 and len(GICS_SECTORS) == 11
    assert default_taxonomy("zh") == SHENWAN_L1 and default_taxonomy("en") == GICS_SECTORS
    default_taxonomy("en")["Crypto"] = "x"
    assert "Crypto" not in GICS_SECTORS


def test_embedding_zero_shot_industry(embedder) -> None:
    texts = [
        "JPMorgan Chase 2022 annual report: net interest income, loans and deposits",
        "Pfizer 2021 10-K: vaccine and drug sales",
        "ExxonMobil upstream oil production",
        "Microsoft cloud software revenue",
    ]
    assert classify_by_embedding(texts, GICS_SECTORS, embedder) == [
        "Financials",
        "Health Care",
        "Energy",
        "Information Technology",
    ]
    assert classify_by_embedding(texts[:1], GICS_SECTORS, embedder, min_similarity=1.01) == [
        "unknown"
    ]


def test_industry_task_only_admits_taxonomy_labels() -> None:
    task = IndustryTask(SHENWAN_L1, lang="zh")
    doc = Document(
        doc_id="d", title="招商银行2018年报点评", text="净息差回升，不良率下降。", lang="zh"
    )
    user = task.build(doc)[-1]["content"]
    assert "- 银行：" in user and "招商银行2018年报点评" in user
    reply = task.response_model.model_validate({"industry": "银行"})
    assert task.parse(doc, reply, DONE)[0].industry == "银行"
    with pytest.raises(ValidationError):
        task.response_model.model_validate({"industry": "Banks"})
    assert (
        task.response_model.model_json_schema()["properties"]["industry"]["enum"][0] == "农林牧渔"
    )


# --- titles --------------------------------------------------------------------------------


def test_title_task_builds_from_the_text_and_cleans_the_reply(shared_data: Path) -> None:
    row = json.loads((shared_data / "cfbenchmark_cn" / "risk.jsonl").open().readline())
    doc = Document(doc_id=row["id"], text=row["input"], lang="zh")
    task = TitleTask(lang="zh", model="m", max_chars=200)
    user = task.build(doc)[-1]["content"]
    assert row["input"].strip()[:50] in user and "30 个字" in user
    out = task.parse(doc, TitleReply(title="标题：《恒顺醋业提价点评：聚焦A类产品》。"), DONE)
    assert out[0].title == "恒顺醋业提价点评：聚焦A类产品"
    assert out[0].meta["title_origin"] == task.origin and out[0].text == doc.text
    with pytest.raises(RowRejected) as exc:
        task.parse(doc, TitleReply(title="Hengshun raises prices"), DONE)
    assert exc.value.reason == "wrong_language"
    with pytest.raises(RowRejected) as exc:
        task.parse(doc, TitleReply(title='  ""  '), DONE)
    assert exc.value.reason == "empty_title"


def test_title_helpers() -> None:
    assert clean_title('"3M Q4 2018: margins recover."\nmore') == "3M Q4 2018: margins recover"
    doc = Document(doc_id="d", text="　　事件：公司发布提价公告。提价幅度在6%以上。", lang="zh")
    assert lead_title(doc) == "事件：公司发布提价公告"


def test_fin_topicmodel_settings_reach_bertopic(
    en_titles: list[str], embedder, monkeypatch
) -> None:
    """UMAP/HDBSCAN settings of the topics params are the ones BERTopic gets, and outliers are
    reduced with the notebook's call: reduce_outliers(docs, topics, threshold=0.4)."""
    pytest.importorskip("bertopic")
    from bertopic import BERTopic

    from fingen.retrieval import topics as topics_module
    from fingen.retrieval.clusters import TopicOptions, cluster_documents
    from fingen.retrieval.topics import HdbscanSettings, UmapSettings

    built, reduce_calls = [], []
    real_build, real_reduce = topics_module.build_bertopic, BERTopic.reduce_outliers

    def spy_build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def spy_reduce(self, docs, topics, **kwargs):
        reduce_calls.append(kwargs)
        return real_reduce(self, docs, topics, **kwargs)

    monkeypatch.setattr(topics_module, "build_bertopic", spy_build)
    monkeypatch.setattr(BERTopic, "reduce_outliers", spy_reduce)
    docs = [Document(doc_id=f"d{i}", title=t, text=t) for i, t in enumerate(en_titles[:60])]
    options = TopicOptions(
        by=("topic",), method="bertopic", umap=UmapSettings(n_neighbors=7, n_components=5),
        hdbscan=HdbscanSettings(min_cluster_size=3, min_samples=2), outlier_threshold=0.4,
    )  # fmt: skip
    result = cluster_documents(docs, embedder=embedder, options=options)
    (model,) = built
    assert (model.umap_model.n_neighbors, model.umap_model.n_components) == (7, 5)
    assert model.umap_model.min_dist == 0.0 and model.umap_model.metric == "cosine"
    assert (model.hdbscan_model.min_cluster_size, model.hdbscan_model.min_samples) == (3, 2)
    assert reduce_calls and all(call == {"threshold": 0.4} for call in reduce_calls)
    assert result.stats["method"] == "bertopic"
