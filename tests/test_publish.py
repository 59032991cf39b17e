"""Publishing a run: the hub folder round trip, the dataset card, dry runs and error paths."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from fingen.errors import PublishError
from fingen.export.hub import hub_tables, publish_run
from fingen.report import load_run
from tests.report_fixtures import make_fixture_run

TOKEN = "hf_FAKEtoken_0123456789abcdefSECRET"
LABEL_FILES = [
    "all", "sentence_level", "sentence_level_extended", "passage_level",
    "passage_level_extended", "topic_level", "topic_level_extended", "train",
]  # fmt: skip
ALL_CONFIGS = {"corpus", "queries", "negatives", "sft", "dpo", "rl"} | {
    f"qrels_{name}{graded}" for name in LABEL_FILES for graded in ("", "_graded")
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_fixture_run(tmp_path / "run")


def _card(folder: Path) -> tuple[dict[str, Any], str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _assert_round_trip(run: Path, folder: Path, configs: dict[str, int], cache: Path) -> None:
    from datasets import load_dataset

    expected = hub_tables(load_run(run))
    assert set(configs) == set(expected)
    for name, rows in expected.items():
        ds = load_dataset(str(folder), name, split="train", cache_dir=str(cache))
        assert ds.num_rows == configs[name] == len(rows), name
        assert ds.to_list() == rows, name


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
    # binary tables hold the positives (grade >= 2); graded ones every label with its grade
    assert result.configs["qrels_sentence_level"] == 3
    assert result.configs["qrels_sentence_level_extended"] == 3
    assert result.configs["qrels_sentence_level_extended_graded"] == 5  # + grade-1, grade-0
    assert result.configs["qrels_topic_level"] == 1 and result.configs["qrels_all"] == 5
    assert result.configs["qrels_topic_level_graded"] == 2
    assert result.configs["qrels_topic_level_extended"] == 2 and result.configs["negatives"] == 1
    assert result.configs["qrels_train"] == result.configs["qrels_all"]  # one document group
    assert list((result.folder / "data" / "corpus").glob("*.parquet")) == [
        result.folder / "data" / "corpus" / "train-00000-of-00001.parquet"
    ]
    _assert_round_trip(run_dir, result.folder, result.configs, tmp_path / "cache")


def test_card_front_matter_and_body(run_dir: Path) -> None:
    folder = publish_run(run_dir, "my-org/fin-data", dry_run=True).folder
    meta, body = _card(folder)
    assert [c["config_name"] for c in meta["configs"]] == list(hub_tables(load_run(run_dir)))
    for c in meta["configs"]:
        assert c["data_files"] == [
            {"split": "train", "path": f"data/{c['config_name']}/train-*.parquet"}
        ]
    assert meta["language"] == ["en"] and meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["text-retrieval", "question-answering", "text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert "| sentence | 3 | 3 | 0 | 0 |" in body and "| topic | 1 | 0 | 1 | 1 |" in body
    assert "## Relevance grades" in body and "at least **2**" in body
    assert "| mined | 1 | 1 | 1 |" in body and "| judged | 1 | 1 | 0 |" in body
    assert "`fake` / `fake-gen`" in body and "`fake-judge` (5)" in body
    assert "abc123def456@fake-gen" in body and "a" * 64 in body and "b" * 64 in body
    assert "| filter | filter | 6 | 5 | 1 | 0 | **83.3%** | too_short: 1 |" in body
    assert "licensed `cc-by-4.0`" in body
    assert "### sft" in body and "10% of 50" in body


def test_unknown_licence_is_other_and_said_so(tmp_path: Path) -> None:
    run = make_fixture_run(tmp_path / "run", licence=None)
    meta, body = _card(publish_run(run, "org/x", dry_run=True).folder)
    assert meta["license"] == "other" and "not recorded in this run" in body


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
    _assert_round_trip(run, result.folder, result.configs, tmp_path / "cache")
