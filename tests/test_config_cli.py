"""Configuration errors name the key; the CLI prints one line and exits 2 for user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fingen.config import load_pipeline
from fingen.errors import ConfigError
from fingen.pipeline import validate_pipeline

GOOD = """
name: t
llm: {backend: fake}
stages:
  - stage: ingest
    params: {paths: [docs]}
  - stage: chunk
    params: {max_chars: 300}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def fingen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fingen", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'stagez'"):
        load_pipeline(write(tmp_path, GOOD + "stagez: []\n"))


def test_typo_in_llm_block_is_named_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm: unknown key 'temprature'"):
        load_pipeline(
            write(tmp_path, GOOD.replace("{backend: fake}", "{backend: fake, temprature: 0.2}"))
        )


def test_typo_in_stage_params_is_named_with_the_stage(tmp_path: Path) -> None:
    config = load_pipeline(write(tmp_path, GOOD.replace("max_chars: 300", "max_char: 300")))
    with pytest.raises(ConfigError, match=r"stages\[1\] \(chunk\)\.params: unknown key 'max_char'"):
        validate_pipeline(config)


def test_bad_value_and_unknown_stage_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm\.backend"):
        load_pipeline(write(tmp_path, GOOD.replace("backend: fake", "backend: gpt")))
    config = load_pipeline(write(tmp_path, GOOD.replace("stage: chunk", "stage: chunky")))
    with pytest.raises(ConfigError, match="unknown stage 'chunky'"):
        validate_pipeline(config)


def test_set_overrides_reach_nested_keys_and_stages_by_id(tmp_path: Path) -> None:
    config = load_pipeline(
        write(tmp_path, GOOD),
        ["llm.temperature=0.6", "stages.chunk.params.max_chars=500", "name=x"],
    )
    assert config.llm.temperature == 0.6
    assert config.stages[1].params == {"max_chars": 500}
    assert config.name == "x"


def test_openai_backend_requires_base_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        load_pipeline(write(tmp_path, GOOD.replace("backend: fake", "backend: openai")))


def test_cli_user_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("{backend: fake}", "{backend: fake, modle: x}"))
    result = fingen("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unknown key 'modle'" in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    missing = fingen("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = fingen("validate", str(write(tmp_path, "name: [unclosed\n")), cwd=tmp_path)
    assert bad.returncode == 2 and "invalid YAML" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_help_explains_every_command(tmp_path: Path) -> None:
    result = fingen("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "validate", "ingest"):
        assert command in result.stdout
    run_help = fingen("run", "--help", cwd=tmp_path)
    assert "resume" in run_help.stdout.lower() and "--set" in run_help.stdout


def test_cli_run_ingest_and_chunk_writes_manifest(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(
        "Revenue rose 8% in 2022. Margins fell slightly. " * 20, encoding="utf-8"
    )
    (docs / "empty.txt").write_text("", encoding="utf-8")
    (docs / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    result = fingen("run", str(write(tmp_path, GOOD)), "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    ingest = manifest["stages"]["ingest"]
    assert ingest["inputs"] == ingest["succeeded"] + ingest["failed"] == 3
    assert set(ingest["failures_by_reason"]) == {"empty", "binary"}
    assert manifest["stages"]["chunk"]["outputs"]["main"] >= 2
    assert manifest["status"] == "complete"
    assert (tmp_path / "run" / "ingest.failures.jsonl").is_file()


def test_manifest_redacts_secrets_but_keeps_limits(tmp_path: Path) -> None:
    from fingen.pipeline import redacted_config

    config = load_pipeline(
        write(tmp_path, GOOD),
        [
            "llm.max_tokens=77",
            "llm.api_key_env=MY_KEY",
            "llm.extra_body={api_key: sk-secret, hf_token: hf_x}",
            "llm.budget.max_tokens=1000",
        ],
    )
    dumped = redacted_config(config)
    assert dumped["llm"]["max_tokens"] == 77 and dumped["llm"]["budget"]["max_tokens"] == 1000
    assert dumped["llm"]["api_key_env"] == "MY_KEY"
    assert dumped["llm"]["extra_body"] == {"api_key": "<redacted>", "hf_token": "<redacted>"}
    assert "sk-secret" not in str(dumped)


def test_run_names_and_stage_ids_cannot_leave_the_outputs_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name"):
        load_pipeline(write(tmp_path, GOOD.replace("name: t", "name: ..")))
    with pytest.raises(ConfigError, match="id"):
        load_pipeline(
            write(tmp_path, GOOD.replace("- stage: chunk", "- stage: chunk\n    id: ../x"))
        )


def test_changed_llm_settings_or_prompts_rerun_stages(tmp_path: Path) -> None:
    from fingen.pipeline import run_pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Revenue rose 8% in 2022. Margins fell. " * 10, encoding="utf-8")
    path = write(tmp_path, GOOD)
    run_pipeline(load_pipeline(path), tmp_path / "run")
    same = run_pipeline(load_pipeline(path), tmp_path / "run")
    assert all(e.get("resumed") for e in same.manifest["stages"].values())
    changed = run_pipeline(load_pipeline(path, ["llm.max_reasks=0"]), tmp_path / "run")
    assert not any(e.get("resumed") for e in changed.manifest["stages"].values())
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "bottom_up.en.jinja").write_text("{% block user %}x{% endblock %}", encoding="utf-8")
    edited = run_pipeline(
        load_pipeline(path, ["llm.max_reasks=0", f"prompts_dir={prompts}"]), tmp_path / "run"
    )
    assert not any(e.get("resumed") for e in edited.manifest["stages"].values())
    (docs / "a.txt").write_text("Revenue fell 3% in 2023. " * 10, encoding="utf-8")
    touched = run_pipeline(
        load_pipeline(path, ["llm.max_reasks=0", f"prompts_dir={prompts}"]), tmp_path / "run"
    )
    assert not touched.manifest["stages"]["ingest"].get("resumed")


def test_a_rerun_leaves_no_stale_stage_files(tmp_path: Path) -> None:
    from fingen.pipeline import run_pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Revenue rose 8% in 2022. Margins fell. " * 10, encoding="utf-8")
    (docs / "empty.txt").write_text("", encoding="utf-8")
    run_pipeline(load_pipeline(write(tmp_path, GOOD)), tmp_path / "run")
    assert (tmp_path / "run" / "ingest.failures.jsonl").is_file()
    (docs / "empty.txt").unlink()
    run_pipeline(load_pipeline(write(tmp_path, GOOD)), tmp_path / "run")
    assert not (tmp_path / "run" / "ingest.failures.jsonl").exists()


def test_zero_documents_give_empty_outputs_not_a_crash(tmp_path: Path) -> None:
    from fingen.pipeline import run_pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_text("", encoding="utf-8")
    result = run_pipeline(load_pipeline(write(tmp_path, GOOD)), tmp_path / "run")
    assert result.status == "complete"
    assert result.manifest["stages"]["chunk"]["inputs"] == 0


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    text = GOOD.replace(
        "{backend: fake}", f"{{backend: openai, base_url: 'http://127.0.0.1:{port}/v1'}}"
    )
    text += (
        "  - stage: qa_source\n    params: {source: jsonl, path: qa.jsonl}\n  - stage: distill\n"
    )
    (tmp_path / "qa.jsonl").write_text('{"question": "q?", "answer": "1"}\n', encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Revenue rose 8% in 2022. " * 5, encoding="utf-8")
    result = fingen("run", str(write(tmp_path, text)), "--out", "run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr
