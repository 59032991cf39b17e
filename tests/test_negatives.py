"""Hard negatives: window, margins, sampling and exclusions hold on random data; the stage
writes one group per query and prefers verified negatives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fingen.embed.index import ExactIndex
from fingen.records import HardNegatives, Qrel
from fingen.retrieval.negatives import (
    HardNegativeConfig,
    hard_negatives,
    hard_negatives_for_vectors,
    select_negatives,
)
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


def unit(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_case(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n, nq, dim = int(rng.integers(30, 120)), int(rng.integers(1, 12)), 16
    corpus, queries = unit(n, dim, rng), unit(nq, dim, rng)
    lo = int(rng.integers(0, 10))
    config = HardNegativeConfig(
        range_min=lo,
        range_max=lo + int(rng.integers(1, 60)),
        absolute_margin=[None, 0.0, 0.05, 0.2][seed % 4],
        relative_margin=[None, 0.1][seed % 2],
        max_score=[None, 0.5][seed % 3 == 0],
        num_negatives=int(rng.integers(1, 20)),
        sampling=["top", "random"][seed % 2],
        seed=seed,
        use_verified=bool(seed % 3),
    )
    positives = [set(rng.choice(n, size=int(rng.integers(1, 4)), replace=False)) for _ in range(nq)]
    verified = [set(rng.choice(n, size=int(rng.integers(0, 4)), replace=False)) for _ in range(nq)]
    exclude = [set(rng.choice(n, size=2, replace=False)) for _ in range(nq)]
    return dict(
        queries=queries,
        corpus=corpus,
        positives=positives,
        verified=verified,
        exclude=exclude,
        config=config,
    )


@pytest.mark.parametrize("seed", range(60))
def test_negatives_respect_window_margins_and_exclusions(seed: int) -> None:
    case = random_case(seed)
    cfg: HardNegativeConfig = case["config"]
    out = hard_negatives_for_vectors(
        case["queries"],
        case["corpus"],
        case["positives"],
        config=cfg,
        exclude=case["exclude"],
        verified=case["verified"],
    )
    corpus = case["corpus"]
    for qi, picked in enumerate(out):
        q = case["queries"][qi]
        sims = corpus @ q
        ranking = np.argsort(-sims, kind="stable")
        rank_of = {int(i): r for r, i in enumerate(ranking)}
        pos = case["positives"][qi]
        pos_score = float(sims[list(pos)].min())
        ids = [i for i, _, _ in picked]
        assert len(ids) == len(set(ids)) <= cfg.num_negatives
        assert not set(ids) & (pos | case["exclude"][qi])  # never a known positive
        sources = [s for _, _, s in picked]
        assert sources == sorted(sources, key=lambda s: s != "verified")  # verified first
        for i, score, source in picked:
            assert score == pytest.approx(float(sims[i]), abs=1e-5)
            if source == "verified":
                assert cfg.use_verified and i in case["verified"][qi]
                continue
            window = sims[ranking[cfg.range_min : cfg.range_max]]
            assert cfg.range_min <= rank_of[i] < cfg.range_max or np.isclose(window, score).any()
            if cfg.absolute_margin is not None:
                assert score <= pos_score - cfg.absolute_margin + 1e-6
            if cfg.relative_margin is not None:
                assert score <= pos_score - abs(pos_score) * cfg.relative_margin + 1e-6
            if cfg.max_score is not None:
                assert score <= cfg.max_score + 1e-6
        if cfg.sampling == "top":
            ranked = [s for _, s, src in picked if src == "ranked"]
            assert ranked == sorted(ranked, reverse=True)


def test_top_sampling_takes_the_first_eligible_ranks_in_order() -> None:
    cfg = HardNegativeConfig(range_min=2, range_max=8, num_negatives=3, relative_margin=None)
    ranked_idx = np.arange(10)
    scores = np.linspace(0.9, 0.0, 10)
    picked = select_negatives(
        ranked_idx, scores, positive_score=None, exclude={3}, config=cfg, verified=[(9, 0.1)]
    )
    assert [(i, s) for i, _, s in picked] == [(9, "verified"), (2, "ranked"), (4, "ranked")]
    margin = cfg.model_copy(update={"absolute_margin": 0.25, "use_verified": False})
    picked = select_negatives(ranked_idx, scores, positive_score=0.7, exclude=set(), config=margin)
    assert [i for i, _, _ in picked] == [5, 6, 7]  # ranks 2-4 score above 0.7 - 0.25


def test_random_sampling_is_seeded_and_stays_in_the_window() -> None:
    rng = np.random.default_rng(0)
    corpus, queries = unit(200, 8, rng), unit(5, 8, rng)
    positives = [{0}] * 5
    cfg = HardNegativeConfig(range_min=5, range_max=60, num_negatives=6, sampling="random")
    a = hard_negatives_for_vectors(queries, corpus, positives, config=cfg)
    b = hard_negatives_for_vectors(queries, corpus, positives, config=cfg, batch_size=2)
    c = hard_negatives_for_vectors(
        queries, corpus, positives, config=cfg.model_copy(update={"seed": 7})
    )
    assert a == b and a != c
    top = hard_negatives_for_vectors(
        queries, corpus, positives, config=cfg.model_copy(update={"sampling": "top"})
    )
    assert a != top


def test_config_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match="range_min"):
        HardNegativeConfig(range_min=10, range_max=10)


def test_index_can_be_passed_in_and_padding_is_ignored() -> None:
    rng = np.random.default_rng(1)
    corpus, queries = unit(12, 8, rng), unit(3, 8, rng)
    cfg = HardNegativeConfig(range_min=0, range_max=50, num_negatives=20, relative_margin=None)
    out = hard_negatives_for_vectors(
        queries, corpus, [{0}, {1}, {2}], config=cfg, index=ExactIndex(corpus)
    )
    assert all(len(p) == 11 for p in out)  # the whole corpus but the positive


def test_records_exclude_every_labeled_positive_and_prefer_verified() -> None:
    passages = make_passages()
    queries, direct = make_queries()
    q0 = queries[0].query_id
    labels = [
        *direct,
        Qrel(query_id=q0, passage_id=pid("acme", 1), score=2, kind="mined"),
        Qrel(query_id=q0, passage_id=pid("acme", 2), score=1, kind="mined"),  # partial
        Qrel(query_id=q0, passage_id=pid("gamma", 2), score=0, kind="mined"),  # verified
    ]
    cfg = HardNegativeConfig(range_min=0, range_max=20, num_negatives=4)
    out = list(
        hard_negatives(
            queries, passages, labels, embedder=BagEmbedder(), config=cfg, min_positive=2
        )
    )
    groups = {g.query_id: g for g in out if isinstance(g, HardNegatives)}
    g = groups[q0]
    # direct labels (grade 2) first, then mined ones from grade 2; grade 1 is no negative either
    assert g.positive_ids == [pid("acme", 0), pid("acme", 1)]
    assert len(g.positive_scores) == 2
    assert pid("acme", 2) not in g.positive_ids + g.negative_ids
    assert g.negative_ids[0] == pid("gamma", 2) and g.sources[0] == "verified"
    assert len(g.negative_ids) == len(g.sources) == len(g.scores) <= 4


def test_hard_negatives_stage_writes_groups_and_fails_queries_without_positive(
    tmp_path: Path, bag: BagEmbedder
) -> None:
    run_dir = tmp_path / "run"
    _, queries, qrels = write_upstream(run_dir)
    # one query loses its direct label: it has no positive
    write_records(run_dir / "bottom_up.qrels.jsonl", qrels[1:])
    write_records(
        run_dir / "extra.negatives.jsonl",
        [Qrel(query_id=qrels[1].query_id, passage_id=pid("beta", 2), score=0, kind="judged")],
    )
    params = {
        "passages": "chunk",
        "queries": EXPLICIT["queries"],
        "qrels": ["bottom_up.qrels", "extra.negatives"],
        "range_min": 0,
        "range_max": 8,
        "num_negatives": 3,
    }
    result = run(tmp_path, [{"stage": "hard_negatives", "params": params}])
    entry = result.stages["hard_negatives"]
    groups = read(run_dir, "hard_negatives", HardNegatives)
    assert entry["inputs"] == len(queries) == entry["succeeded"] + entry["failed"]
    assert len(groups) == len(queries) - 1
    assert {f["reason"] for f in read(run_dir, "hard_negatives.failures")} == {"no_positive"}
    by_q = {g.query_id: g for g in groups}
    assert by_q[qid(QUERIES[1][0])].negative_ids[0] == pid("beta", 2)
    for g in groups:
        assert not set(g.positive_ids) & set(g.negative_ids)
        assert 0 < len(g.negative_ids) <= 3
    assert entry["extra"]["negatives_by_source"]["verified"] == 1
