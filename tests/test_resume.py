"""A run killed with SIGKILL mid-way and re-run pays for nothing twice and ends identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cache_keys import cached_keys, key_of
from tests.scripted_server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS = 40
TEACHER = {"content": "Revenue grew from 100 to 110, so the change is 10.\n\\boxed{10}"}


def finqa_file(path: Path) -> Path:
    items = [
        {
            "id": f"T/{2000 + i}/page_{i}.pdf-1",
            "pre_text": [f"Revenue was {100 + i} million in {2000 + i}."],
            "post_text": ["All figures are audited."],
            "table": [["item", "2019", "2020"], ["revenue", "100", "110"]],
            "qa": {
                "question": f"What is the change in revenue for item {i}?",
                "program": "subtract(110, 100)",
                "exe_ans": 10.0,
            },
        }
        for i in range(N_ITEMS)
    ]
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def pipeline(tmp_path: Path, base_url: str) -> Path:
    data = finqa_file(tmp_path / "finqa.json")
    text = f"""
name: resume
llm: {{backend: openai, base_url: "{base_url}", model: teacher, concurrency: 2, backoff_s: 0.01}}
stages:
  - stage: qa_source
    params: {{source: finqa, path: "{data}"}}
  - stage: distill
    params: {{n: 1, temperature: 0.6, max_tokens: 256}}
"""
    path = tmp_path / "resume.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run(yaml: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "fingen", "run", str(yaml), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def samples(run_dir: Path) -> list[dict]:
    lines = (run_dir / "distill.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_resume_after_sigkill_repeats_no_request_and_matches_a_clean_run(tmp_path: Path) -> None:
    with ServerProcess({"default": TEACHER}, latency=0.05) as srv:
        yaml = pipeline(tmp_path, srv.base_url)
        out = tmp_path / "killed"
        proc = run(yaml, out)
        deadline = time.monotonic() + 120
        while srv.stats(with_requests=False)["count"] < N_ITEMS // 3:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (out / "distill.jsonl").exists()  # no half-written stage file
        paid = cached_keys(out)
        assert 0 < len(paid) < N_ITEMS

        srv.reset()
        resumed = run(yaml, out)
        assert resumed.wait(timeout=300) == 0, (
            resumed.stderr.read().decode() if resumed.stderr else ""
        )
        second = srv.stats()["requests"]
        sent = {key_of(r, srv.base_url) for r in second}
        assert len(sent) == len(second)
        assert not paid & sent, "a request that had succeeded was sent again"
        assert paid | sent == cached_keys(out)  # the keys really are the engine's keys
        assert len(paid) + len(second) == N_ITEMS

        srv.reset()
        clean = run(yaml, tmp_path / "clean")
        assert clean.wait(timeout=300) == 0

    assert samples(out) == samples(tmp_path / "clean")
    assert len(samples(out)) == N_ITEMS
    manifest = json.loads((out / "manifest.json").read_text())
    distill = manifest["stages"]["distill"]
    assert distill["inputs"] == distill["succeeded"] + distill["failed"] == N_ITEMS
    assert distill["usage"]["cached"] == len(paid)
    assert manifest["status"] == "complete"
