"""The demo pipeline end to end: honest counts at every stage, exports, the final report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fingen.config import load_pipeline
from fingen.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fingen" / "_demo" / "demo.yaml"


def check_run(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for key, entry in manifest["stages"].items():
        assert entry["status"] == "done", key
        assert entry["inputs"] == entry["succeeded"] + entry["failed"], key
        assert (
            sum(entry["failures_by_reason"].values()) == entry["failed"] + entry["rejected_rows"]
        ), key
    for path in ("exports/beir/corpus.jsonl", "exports/beir/qrels/all.tsv", "report.html"):
        assert (run_dir / path).is_file(), path
    assert "<b>complete</b>" in (run_dir / "report.html").read_text(encoding="utf-8")
    failures = sum(1 for _ in run_dir.glob("*.failures.jsonl"))
    assert failures == sum(1 for e in manifest["stages"].values() if "failures" in e["outputs"])
    return manifest


def test_demo_pipeline_wiring_with_the_fake_backend(tmp_path: Path) -> None:
    result = run_pipeline(load_pipeline(DEMO, ["llm.backend=fake"]), tmp_path / "run")
    manifest = check_run(result.run_dir)
    assert manifest["stages"]["ingest"]["outputs"]["main"] == 7
    assert manifest["llm"]["backend"] == "fake"
    assert set(manifest["prompts"]) >= {"bottom_up.en.jinja", "distill.en.jinja"}


def test_rerun_resumes_every_stage_without_requests(tmp_path: Path) -> None:
    config = load_pipeline(DEMO, ["llm.backend=fake"])
    run_pipeline(config, tmp_path / "run")
    again = run_pipeline(config, tmp_path / "run")
    assert all(e.get("resumed") for e in again.manifest["stages"].values())
    assert again.manifest["totals"]["this_run"]["requests"] == 0
    assert again.manifest["totals"]["requests"] > 0  # what the outputs cost, all runs


@pytest.mark.llamacpp
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="'local' extra not installed"
)
def test_fingen_demo_on_the_embedded_model(tmp_path: Path) -> None:
    """`fingen demo` for real through llama.cpp (SmolLM2 here, to keep CI fast)."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fingen",
            "demo",
            "--out",
            str(out),
            "--set",
            "llm.local.model=smollm2",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = check_run(out)
    assert manifest["llm"]["backend"] == "local"
    assert manifest["totals"]["requests"] > 0 and manifest["totals"]["completion_tokens"] > 0
    assert "report:" in proc.stderr


def test_eval_audit_report_and_publish_commands_on_a_finished_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_pipeline(load_pipeline(DEMO, ["llm.backend=fake"]), run_dir)

    def fingen(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("HF_TOKEN", None)
        return subprocess.run(
            [sys.executable, "-m", "fingen", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    ev = fingen("eval", str(run_dir / "exports" / "beir"), "--model", "minilm")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((run_dir / "eval.json").read_text())
    assert {"bm25", "minilm"} <= set(metrics["results"])
    audit = fingen("audit", str(run_dir), "--sample", "3")
    assert audit.returncode == 0, audit.stderr
    assert {"levels", "pool", "judge"} <= set(json.loads((run_dir / "audit.json").read_text()))
    report = fingen("report", str(run_dir), "--out", "again.html")
    assert report.returncode == 0 and (run_dir / "again.html").is_file()
    dry = fingen("publish", str(run_dir), "--repo-id", "me/demo", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (run_dir / "hub" / "README.md").is_file()
    no_token = fingen("publish", str(run_dir), "--repo-id", "me/demo")
    assert no_token.returncode == 2 and "HF_TOKEN" in no_token.stderr
    assert "Traceback" not in no_token.stderr and (run_dir / "hub" / "README.md").is_file()
