"""Publishing a run: the hub folder round trip (every config and split), the MTEB/BEIR layout
(no nulls where MTEB reads), the dataset card (licence fields, grades, splits), dry runs and
error paths."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from fingen.errors import InputError, PublishError
from fingen.export.hub import hub_tables, mteb_task, publish_run
from fingen.report import load_run
from tests.report_fixtures import make_fixture_run

TOKEN = "hf_FAKEtoken_0123456789abcdefSECRET"
LABEL_FILES = [
    "all", "sentence_level", "sentence_level_extended", "passage_level",
    "passage_level_extended", "topic_level", "topic_level_extended", "train",
]  # fmt: skip
ALL_CONFIGS = {"default", "corpus", "queries", "queries_meta", "negatives", "sft", "dpo", "rl"} | {
    f"qrels_{name}{graded}" for name in LABEL_FILES for graded in ("", "_graded")
}
#: the columns MTEB and BEIR read; none may be null
MTEB_COLUMNS = {
    "default": ["query-id", "corpus-id", "score"],
    "corpus": ["_id", "title", "text", "doc_id", "order"],
    "queries": ["_id", "text", "level", "lang", "origin", "split"],
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_fixture_run(tmp_path / "run")


def _card(folder: Path) -> tuple[dict[str, Any], str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _assert_round_trip(
    run: Path, folder: Path, splits: dict[str, dict[str, int]], cache: Path
) -> None:
    """Every config and split loads back row-identical with ``load_dataset(folder, name,
    split=...)``; the MTEB/BEIR configs have exactly their columns and no nulls."""
    from datasets import load_dataset

    expected = hub_tables(load_run(run))
    assert {n: set(t) for n, t in splits.items()} == {n: set(t) for n, t in expected.items()}
    for name, tables in expected.items():
        for split, rows in tables.items():
            ds = load_dataset(str(folder), name, split=split, cache_dir=str(cache))
            assert ds.num_rows == splits[name][split] == len(rows), (name, split)
            assert ds.to_list() == rows, (name, split)
            if name in MTEB_COLUMNS:
                assert ds.column_names == MTEB_COLUMNS[name], name
                assert all(v is not None for r in rows for v in r.values()), name
    if "default" in expected:  # the config datasets and MTEB load without a name
        split = next(iter(expected["default"]))
        ds = load_dataset(str(folder), split=split, cache_dir=str(cache))
        assert ds.to_list() == expected["default"][split]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dry_run_folder_loads_back_identically_for_every_config(
    run_dir: Path, tmp_path: Path
) -> None:
    result = publish_run(run_dir, "my-org/fin.data_v1", dry_run=True)
    assert result.folder == run_dir / "hub" and not result.uploaded and result.url is None
    assert set(result.configs) == ALL_CONFIGS
    assert result.splits["corpus"] == {"corpus": 4} and result.splits["queries"] == {"queries": 5}
    assert result.splits["queries_meta"] == {"queries": 5}
    # MTEB qrels: the positives per split (one document group, so all of them are train)
    assert result.splits["default"] == {"train": result.configs["qrels_train"]}
    others = ALL_CONFIGS - {"default", "corpus", "queries", "queries_meta"}
    assert all(set(result.splits[n]) == {"train"} for n in others)
    # binary tables hold the positives (grade >= 2); graded ones every label with its grade
    assert result.configs["qrels_sentence_level"] == 3
    assert result.configs["qrels_sentence_level_extended"] == 3
    assert result.configs["qrels_sentence_level_extended_graded"] == 5  # + grade-1, grade-0
    assert result.configs["qrels_topic_level"] == 1 and result.configs["qrels_all"] == 5
    assert result.configs["qrels_topic_level_graded"] == 2
    assert result.configs["qrels_topic_level_extended"] == 2 and result.configs["negatives"] == 1
    assert result.configs["qrels_train"] == result.configs["qrels_all"]  # one document group
    assert list((result.folder / "data" / "corpus").glob("*.parquet")) == [
        result.folder / "data" / "corpus" / "corpus-00000-of-00001.parquet"
    ]
    _assert_round_trip(run_dir, result.folder, result.splits, tmp_path / "cache")
    meta = hub_tables(load_run(run_dir))["queries_meta"]["queries"]
    assert meta[0]["answer"] == "12%" and meta[1]["answer"] is None  # nulls stay in _meta


def test_default_config_has_a_qrels_split_per_document_split(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    path = run / "filter.queries.jsonl"  # without the topic query, d1 and d2 are two groups
    kept = [ln for ln in path.read_text(encoding="utf-8").splitlines() if '"qt1"' not in ln]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = publish_run(run, "org/x", dry_run=True)
    default, queries = result.splits["default"], hub_tables(load_run(run))["queries"]["queries"]
    assert set(default) == {"train", "dev"} and sum(default.values()) == result.configs["qrels_all"]
    for split, n in default.items():
        assert n == result.configs[f"qrels_{split}"]
        assert n == sum(r["split"] == split for r in queries)  # one positive per query here
    _assert_round_trip(run, result.folder, result.splits, tmp_path / "cache")
    meta, body = _card(result.folder)
    assert next(c for c in meta["configs"] if c["config_name"] == "default")["data_files"] == [
        {"split": s, "path": f"data/default/{s}-*.parquet"} for s in ("train", "dev")
    ]
    assert "| `dev` | 1 |" in body and 'eval_splits=["dev"]' in body


def test_card_front_matter_and_body(run_dir: Path) -> None:
    folder = publish_run(run_dir, "my-org/fin-data", dry_run=True).folder
    meta, body = _card(folder)
    tables = hub_tables(load_run(run_dir))
    assert [c["config_name"] for c in meta["configs"]] == list(tables)
    for c in meta["configs"]:
        name = c["config_name"]
        assert c["data_files"] == [
            {"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in tables[name]
        ]
    assert meta["language"] == ["en"] and meta["license"] == "cc-by-4.0"
    assert "license_name" not in meta and "license_link" not in meta
    assert meta["task_categories"] == ["text-retrieval", "question-answering", "text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert "| sentence | 3 | 3 | 0 | 0 |" in body and "| topic | 1 | 0 | 1 | 1 |" in body
    assert "## Relevance grades" in body and "at least **2**" in body
    # every qrels config says binary vs graded and what a positive is
    binary, graded = "binary: score 1 = positive = grade ≥ 2", "graded 0-2: 2 answers the query"
    rows = {ln.split(" | ")[0].strip("| `"): ln for ln in body.splitlines() if ln.startswith("| `")}
    for name in ALL_CONFIGS:
        if name == "default" or name.startswith("qrels_"):
            assert (graded if name.endswith("_graded") else binary) in rows[name], name
    assert "`train` (5)" in rows["default"] and "`corpus` (4)" in rows["corpus"]
    # splits: by source document, counts per split
    assert "## Splits" in body and "**by source document**" in body
    assert "| `train` | 2 | 5 | 5 | 5 | 6 |" in body and "dev 0.1, test 0 (seed 0)" in body
    assert "| `dev` | 0 | 0 | 0 | 0 | 0 |" in body  # asked for, but one document group
    assert "## Use with MTEB" in body and 'eval_splits=["train"]' in body
    assert "| mined | 1 | 1 | 1 |" in body and "| judged | 1 | 1 | 0 |" in body
    assert "`fake` / `fake-gen`" in body and "`fake-judge` (5)" in body
    assert "abc123def456@fake-gen" in body and "a" * 64 in body and "b" * 64 in body
    assert "| filter | filter | 6 | 5 | 1 | 0 | **83.3%** | too_short: 1 |" in body
    assert "licensed `cc-by-4.0`" in body
    assert "### sft" in body and "10% of 50" in body


def _set_meta(run: Path, *metas: dict[str, Any]) -> None:
    """Give the fixture's documents (d1, d2) these ``meta``."""
    path = run / "ingest.jsonl"
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for doc, meta in zip(docs, metas, strict=True):
        doc["meta"] = meta
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


def test_unknown_licence_is_other_with_a_name_and_a_link_to_the_card(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run", licence=None)
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license"] == "other" and "not recorded in this run" in body
    assert meta["license_name"] == "unrecorded-sources"
    assert meta["license_link"] == "https://huggingface.co/datasets/org/x#licence"
    assert "## Licence" in body and "| (not recorded) | 2 | – |" in body


def test_one_custom_licence_names_it_and_links_its_terms(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    sec = {"license": "SEC EDGAR terms (public)", "license_link": "https://www.sec.gov/privacy"}
    _set_meta(run, sec, {**sec, "license_link": None, "source_url": "https://www.sec.gov/x"})
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license"] == "other" and meta["license_name"] == "sec-edgar-terms-public"
    assert meta["license_link"] == "https://huggingface.co/datasets/org/x#licence"  # two links
    assert "https://www.sec.gov/privacy, https://www.sec.gov/x" in body
    _set_meta(run, sec, {"license": sec["license"], "licence_link": "ftp://x.org/l"})
    meta, _ = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license_link"] == "https://www.sec.gov/privacy"


def test_source_url_is_the_link_when_no_licence_link_is_given(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    _set_meta(
        run,
        {"licence": "FinQA MIT"},
        {"licence": "FinQA MIT", "source_url": "https://github.com/czyssrs/FinQA"},
    )
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license_name"] == "finqa-mit"
    assert meta["license_link"] == "https://github.com/czyssrs/FinQA"
    assert "Source documents are licensed `FinQA MIT`." in body


def test_mixed_licences_are_mixed_sources_linking_the_card(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run")
    _set_meta(run, {"license": "CC BY 4.0"}, {})
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license"] == "cc-by-4.0" and "1 document records no licence" in body
    assert "license_name" not in meta and "| (not recorded) | 1 | – |" in body
    _set_meta(run, {"license": "cc-by-4.0"}, {"license": "MIT"})
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license"] == "other" and meta["license_name"] == "mixed-sources"
    assert meta["license_link"] == "https://huggingface.co/datasets/org/x#licence"
    assert "| `MIT` | 1 | – |" in body and "| `cc-by-4.0` | 1 | – |" in body


def test_mteb_task_checks_the_folder_and_split_before_needing_mteb(run_dir: Path) -> None:
    with pytest.raises(InputError, match="not a hub folder"):
        mteb_task(run_dir)
    publish_run(run_dir, "org/x", dry_run=True)
    with pytest.raises(InputError, match="no qrels for split dev: the folder's splits are train"):
        mteb_task(run_dir)  # the fixture's one document group is all train
    with pytest.raises(InputError, match="no qrels for split test"):
        mteb_task(run_dir / "hub", split=["train", "test"])


def test_republish_replaces_the_folder(run_dir: Path) -> None:
    folder = publish_run(run_dir, "org/x", dry_run=True).folder
    (run_dir / "route.sft.jsonl").unlink()
    (run_dir / "preference.jsonl").unlink()
    result = publish_run(run_dir, "org/x", dry_run=True)
    assert "sft" not in result.configs and not (folder / "data" / "sft").exists()
    assert not (run_dir / ".hub-partial").exists()
    meta, _ = _card(folder)
    assert meta["task_categories"] == ["text-retrieval", "question-answering"]


def test_an_empty_run_has_nothing_to_publish(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="nothing to publish"):
        publish_run(tmp_path, "org/x", dry_run=True)
    with pytest.raises(PublishError, match="not a run directory"):
        publish_run(tmp_path / "missing", "org/x", dry_run=True)


@pytest.mark.parametrize(
    "repo_id", ["noslash", "a/b/c", "org/na me", "/name", "org/", "", "o/n;rm"]
)
def test_bad_repo_id_fails_before_anything(run_dir: Path, repo_id: str) -> None:
    with pytest.raises(PublishError, match="bad repo id"):
        publish_run(run_dir, repo_id, dry_run=True)
    assert not (run_dir / "hub").exists()


def test_missing_token_fails_and_keeps_the_folder(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match="MY_HF_TOKEN"):
        publish_run(run_dir, "org/x", token_env="MY_HF_TOKEN")
    assert (run_dir / "hub" / "README.md").is_file()


def test_offline_with_token_fails_with_offline(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="offline") as err:
        publish_run(run_dir, "org/x")
    assert TOKEN not in str(err.value)
    assert (run_dir / "hub" / "README.md").is_file()


def test_network_failure_is_one_publish_error_and_never_leaks_the_token(
    run_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("FINGEN_TEST_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PublishError, match="upload failed") as err:
        publish_run(run_dir, "org/x", private=True, token_env="FINGEN_TEST_TOKEN")
    assert (run_dir / "hub" / "README.md").is_file()
    out, errs = capfd.readouterr()
    for text in (str(err.value), repr(err.value), caplog.text, out, errs):
        assert TOKEN not in text
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_upload_creates_the_dataset_repo_and_uploads_the_folder(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[tuple[str, dict[str, Any]]] = []

    class FakeApi:
        def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
            calls.append(("init", {"endpoint": endpoint, "token": token}))

        def create_repo(self, repo_id: str, **kw: Any) -> str:
            calls.append(("create_repo", {"repo_id": repo_id, **kw}))
            return f"https://hub.example/datasets/{repo_id}"

        def upload_folder(self, **kw: Any) -> None:
            calls.append(("upload_folder", kw))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = publish_run(run_dir, "org/x", private=True)
    assert result.uploaded and result.url == "https://hub.example/datasets/org/x"
    assert calls[0] == ("init", {"endpoint": None, "token": TOKEN})
    assert calls[1] == (
        "create_repo",
        {"repo_id": "org/x", "repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert calls[2][1]["folder_path"] == str(run_dir / "hub")
    assert calls[2][1]["repo_type"] == "dataset" and calls[2][1]["repo_id"] == "org/x"


def test_publish_a_real_fake_backend_run(tmp_path: Path) -> None:
    from fingen.config import PipelineConfig
    from fingen.pipeline import run_pipeline

    demo = Path(__file__).resolve().parents[1] / "fingen" / "_demo"
    stages = [
        {"stage": "ingest", "params": {"paths": [str(demo / "filings.jsonl")], "limit": 3}},
        {"stage": "chunk"},
        {"stage": "bottom_up", "params": {"limit": 4}},
        {
            "stage": "qa_source",
            "params": {"source": "finqa", "path": str(demo / "finqa_items.json"), "limit": 3},
        },
        {"stage": "distill", "params": {"n": 2}},
        {"stage": "verify"},
        {"stage": "judge_reasoning"},
        {"stage": "route"},
        {"stage": "preference"},
    ]
    config = PipelineConfig.model_validate(
        {"name": "t", "llm": {"backend": "fake"}, "stages": stages}
    )
    run = run_pipeline(config, tmp_path / "run").run_dir
    result = publish_run(run, "org/fake-run", dry_run=True)
    assert result.configs["corpus"] > 0 and "rl" in result.configs
    _assert_round_trip(run, result.folder, result.splits, tmp_path / "cache")
