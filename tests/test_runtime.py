"""Runs hold under outages, budgets and user mistakes: failed rows are not finished (the
next run retries them and pays for nothing twice), budgets hold at high concurrency and
carry over between invocations, and user errors are one line with exit 2.

The helpers here (a small corpus, a pipeline against a scripted server, ``fingen`` as a
subprocess, request keys from the server's records) are shared with ``test_signals.py``
and ``test_secrets.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fingen.config import BudgetConfig, LLMConfig
from fingen.errors import BudgetExceeded
from fingen.llm import build_engine, run_task
from fingen.llm.budget import estimate_tokens
from tests.cache_keys import cached_keys, key_of
from tests.scripted_server import ScriptedServer, ServerProcess
from tests.test_llm_engine import EchoTask

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted; run the same command again to resume"

# One document (= one passage, = one request) per company; rules answer by company name.
COMPANIES = {
    "Acme Corp": "Acme Corp reported total revenue of $5.2 billion in fiscal 2023, up 8% on "
    "2022. Growth came from cloud subscriptions in North America.",
    "Beta Bank": "Beta Bank's net interest income rose to $3.1 billion in 2023 as rates "
    "increased. Loan loss provisions grew on weaker credit.",
    "Gamma Energy": "Gamma Energy produced 420,000 barrels of oil equivalent per day in 2023. "
    "Capital expenditure totaled $2.5 billion on offshore projects.",
    "Delta Retail": "Delta Retail opened 40 new stores in 2023 and same-store sales rose 3%. "
    "Inventory fell by 5% over the year as supply chains eased.",
    "Epsilon Motors": "Epsilon Motors delivered 310,000 vehicles in 2023, half of them "
    "electric. Its automotive gross margin was 18% for the year.",
}


def answer(company: str) -> dict[str, Any]:
    """A bottom_up reply that passes every check for ``company``'s passage."""
    question = {"question": f"How did {company} perform in 2023?", "answer": "well"}
    return {"json": {"sentence_queries": [], "passage_queries": [question]}}


def success_rules() -> list[dict[str, Any]]:
    return [{"match": company, "action": answer(company)} for company in COMPANIES]


def write_pipeline(
    tmp: Path,
    base_url: str,
    *,
    llm: str = "",
    stages: str = "",
    companies: dict[str, str] | None = None,
) -> Path:
    """ingest (one JSONL document per company) -> chunk -> bottom_up (one passage query per
    passage), ``concurrency: 1``, then ``stages`` (YAML list items) appended."""
    docs = tmp / "docs.jsonl"
    rows = [
        {"title": f"{name} 2023 Annual Report", "text": text}
        for name, text in (companies or COMPANIES).items()
    ]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp / "pipeline.yaml"
    path.write_text(
        f"""
name: runtime
llm: {{backend: openai, base_url: "{base_url}", model: m, backoff_s: 0.01, max_retries: 1,
       concurrency: 1{", " + llm if llm else ""}}}
stages:
  - stage: ingest
    params: {{paths: ["{docs}"]}}
  - stage: chunk
  - stage: bottom_up
    params: {{sentence_queries: 0, passage_queries: 1}}
{stages}""",
        encoding="utf-8",
    )
    return path


def env(**more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **more}


def start(*args: str | Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m fingen ARGS`` in the background, stdout and stderr captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "fingen", *map(str, args)],
        cwd=ROOT,
        env=env(**(extra_env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fingen(
    *args: str | Path, timeout: float = 120, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = start(*args, extra_env=extra_env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def no_traceback(result: subprocess.CompletedProcess[str] | str) -> None:
    text = result if isinstance(result, str) else result.stdout + result.stderr
    assert "Traceback" not in text, text


def error_line(stderr: str) -> str:
    """The one line a user error prints (stderr holds nothing else but blank lines)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))


def rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def queried(run_dir: Path) -> set[str]:
    """The companies that have a query in the run's bottom_up output."""
    texts = [q["text"] for q in rows(run_dir / "bottom_up.queries.jsonl")]
    return {c for c in COMPANIES if any(c in t for t in texts)}


def company_of(record: dict[str, Any]) -> str:
    """The company a request recorded by the scripted server asks about."""
    users = [m["content"] for m in record["messages"] if m["role"] == "user"]
    found = [c for c in COMPANIES if c in users[0]]
    assert len(found) == 1, users[0][:300]
    return found[0]


# --- failed is not finished ----------------------------------------------------------------


def test_failed_rows_are_retried_by_the_next_run_and_no_success_is_paid_twice(
    tmp_path: Path,
) -> None:
    """Beta Bank's requests answer 500 and Gamma Energy's connections drop (both past the
    one retry), Delta Retail's replies are broken JSON (past the re-asks), in the first run
    only (the rules retire after those uses)."""
    outage = [
        {"match": "Beta Bank", "action": {"status": 500}, "times": 2},
        {"match": "Gamma Energy", "action": {"drop": True}, "times": 2},
        {"match": "Delta Retail", "in": "any", "action": {"malformed": True}, "times": 3},
    ]
    with ServerProcess({"rules": outage + success_rules()}) as srv:
        yaml = write_pipeline(
            tmp_path,
            srv.base_url,
            stages="  - stage: export_retrieval\n    params: {formats: [beir]}\n",
        )
        out = tmp_path / "run"
        first = fingen("run", yaml, "--out", out)
        assert first.returncode == 0, first.stderr
        no_traceback(first)
        m = manifest(out)
        assert m["status"] == "complete_with_failures"
        bottom_up = m["stages"]["bottom_up"]
        assert bottom_up["failures_by_reason"] == {"transport_error": 2, "invalid_json": 1}
        assert bottom_up["transient_failures"] == 3 and bottom_up["succeeded"] == 2
        assert "3 rows failed for a transient reason" in first.stderr + first.stdout
        failures = rows(out / "bottom_up.failures.jsonl")
        assert sorted(f["reason"] for f in failures) == [
            "invalid_json", "transport_error", "transport_error",
        ]  # fmt: skip
        assert queried(out) == {"Acme Corp", "Epsilon Motors"}
        # the broken replies were forgotten: only the two good answers are cached
        run1 = srv.stats()["requests"]
        assert len(cached_keys(out)) == 2
        assert cached_keys(out) <= {key_of(r, srv.base_url) for r in run1}

        # (no srv.reset(): it would re-arm the outage rules)
        second = fingen("run", yaml, "--out", out)
        assert second.returncode == 0, second.stderr
        no_traceback(second)
        m = manifest(out)
        assert m["status"] == "complete"
        assert m["stages"]["ingest"].get("resumed") and m["stages"]["chunk"].get("resumed")
        bottom_up = m["stages"]["bottom_up"]
        assert bottom_up["transient_failures"] == 0 and bottom_up["succeeded"] == 5
        assert bottom_up["usage"]["cached"] == 2
        assert queried(out) == set(COMPANIES)
        assert rows(out / "bottom_up.failures.jsonl") == []
        # the stage after the recovered one ran again: the export has every query
        assert not m["stages"]["export_retrieval"].get("resumed")
        exported = (out / "exports" / "beir" / "queries.jsonl").read_text(encoding="utf-8")
        assert all(c in exported for c in COMPANIES)
        # only the failed passages were asked again, once each
        run2 = srv.stats()["requests"][len(run1) :]
        assert Counter(company_of(r) for r in run2) == {
            "Beta Bank": 1, "Gamma Energy": 1, "Delta Retail": 1,
        }  # fmt: skip
        assert all(r["status"] == 200 for r in run2)


# --- budgets -------------------------------------------------------------------------------


class PaddedEcho(EchoTask):
    """EchoTask with prompts of one length (so every request reserves the same)."""

    def build(self, item: int) -> list[dict[str, str]]:
        pad = "Revenue, margins and cash flow of the company in fiscal 2023. " * 3
        return [{"role": "user", "content": f"Write a question for item-{item:04d}. {pad}"}]


@pytest.mark.parametrize("extra", [0, 100], ids=["usage-as-reserved", "prompt-underestimated"])
def test_budget_holds_at_concurrency_16(tmp_path: Path, extra: int) -> None:
    """Each request reserves its estimated prompt + ``max_tokens`` (r) before it is sent, so
    with usage u <= r the tokens spent never pass ``llm.budget.max_tokens``: overshoot bound
    0 (tested at its tightest, u == r). When the server counts more prompt tokens than
    estimated (u > r) the overshoot is at most K * (u - r), K the requests holding a
    reservation at once (K * r <= the budget; here the budget fits 10)."""
    concurrency, max_tokens = 16, 60
    with ScriptedServer(latency=0.05) as srv:
        config = LLMConfig(
            backend="openai", base_url=srv.base_url, model="m", concurrency=concurrency,
            max_tokens=max_tokens,
        )  # fmt: skip
        with build_engine(config) as probe:  # what one request reserves
            list(run_task(PaddedEcho(), [9999], probe))
        estimate = sum(estimate_tokens(m["content"]) for m in srv.requests[0]["messages"])
        reservation = estimate + max_tokens
        used = reservation + extra
        limit = 10 * reservation + reservation // 2
        srv.reset()
        srv.set_script(default={
            "json": {"question": "q?", "score": 1},
            "usage": {"prompt_tokens": estimate + extra, "completion_tokens": max_tokens},
        })  # fmt: skip
        config = config.model_copy(update={"budget": BudgetConfig(max_tokens=limit)})
        with build_engine(config, cache_path=tmp_path / "cache.sqlite") as engine:
            done = []
            with pytest.raises(BudgetExceeded, match=r"llm\.budget\.max_tokens"):
                for result in run_task(PaddedEcho(), range(200), engine):
                    done.append(result)
            sent = srv.requests
            assert {sum(estimate_tokens(m["content"]) for m in r["messages"]) for r in sent} == {
                estimate
            }
            assert engine.budget.reserved_tokens == 0  # every reservation was settled
            spent = engine.budget.spent_tokens
            # 10 reservations fit: exactly 10 requests went out, at 16 connections
            assert len(sent) == limit // reservation == 10
            assert spent == len(sent) * used
            if extra == 0:
                assert spent <= limit
            else:
                assert spent <= limit + 10 * (used - reservation)
            # the results that finished are kept: yielded in order and cached
            assert sum(r.ok for r in done) == len(sent) and len(engine.cache) == len(sent)
            assert [r.item for r in done] == list(range(len(done)))


def test_the_live_column_never_sees_a_half_built_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress thread calls live_stats() at any moment, also while a stage builds its
    engine: an engine is listed only once it has every attribute live_stats reads."""
    from fingen.llm import engine as engine_module

    seen: list[dict[str, Any]] = []

    class Probe(weakref.WeakSet):  # live_stats runs the moment an engine is listed
        def add(self, item: Any) -> None:
            super().add(item)
            seen.append(engine_module.live_stats())

    monkeypatch.setattr(engine_module, "_ENGINES", Probe())
    with build_engine(LLMConfig(backend="fake")):
        pass
    assert seen == [{"in_flight": 0, "queued": 0, "tokens_per_s": 0.0, "warnings": []}]


def test_cli_budget_stop_exit_3_carries_over_and_raising_it_goes_on(tmp_path: Path) -> None:
    """A budget that fits one request: exit 3 with one line naming the setting; the same
    command again spends nothing (the spent tokens carried over); a higher budget goes on
    and pays for no request twice."""
    with ServerProcess({"rules": success_rules()}) as srv:
        yaml = write_pipeline(tmp_path, srv.base_url, llm="max_tokens: 200")
        probe = fingen("run", yaml, "--out", tmp_path / "probe")
        assert probe.returncode == 0, probe.stderr
        sizes = [
            sum(estimate_tokens(m["content"]) for m in r["messages"]) + 200
            for r in srv.stats()["requests"]
        ]
        used = manifest(tmp_path / "probe")["budget"]["spent_tokens"] // len(COMPANIES)
        # room for the largest request, not for a second one after any first
        budget = max(sizes)
        assert budget < used + min(sizes), (sizes, used)
        srv.reset()

        out = tmp_path / "run"
        limited = ["run", yaml, "--out", out, "--set", f"llm.budget.max_tokens={budget}"]
        first = fingen(*limited)
        assert first.returncode == 3, first.stderr
        no_traceback(first)
        lines = [line for line in first.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("stopped: budget reached")
        assert "llm.budget.max_tokens" in lines[-1]
        assert "--set llm.budget.max_tokens=" in lines[-1]
        assert sum("stopped:" in line for line in lines) == 1
        m = manifest(out)
        assert m["status"] == "stopped_budget"
        assert m["stages"]["bottom_up"]["status"] == "stopped"
        spent = m["budget"]["spent_tokens"]
        assert 0 < spent <= budget
        assert srv.stats(with_requests=False)["count"] == 1
        assert len(queried(out)) == 1  # what finished before the stop is kept

        again = fingen(*limited)
        assert again.returncode == 3, again.stderr
        assert manifest(out)["budget"]["spent_tokens"] == spent
        assert srv.stats(with_requests=False)["count"] == 1  # nothing more was sent

        raised = fingen(*limited[:-1], "llm.budget.max_tokens=1000000")
        assert raised.returncode == 0, raised.stderr
        m = manifest(out)
        assert m["status"] == "complete" and queried(out) == set(COMPANIES)
        requests = srv.stats()["requests"]
        assert len(requests) == len(COMPANIES)
        assert Counter(company_of(r) for r in requests) == dict.fromkeys(COMPANIES, 1)
        assert m["budget"]["spent_tokens"] > spent


# --- user errors: one line, exit 2 ---------------------------------------------------------


def fake_pipeline(tmp: Path, stages: str) -> Path:
    path = tmp / "fake.yaml"
    path.write_text(f"name: fake\nllm: {{backend: fake}}\nstages:\n{stages}", encoding="utf-8")
    return path


def ingest_chunk(tmp: Path) -> Path:
    docs = tmp / "docs.jsonl"
    docs.write_text(json.dumps({"title": "t", "text": COMPANIES["Acme Corp"]}) + "\n")
    return fake_pipeline(
        tmp, f'  - stage: ingest\n    params: {{paths: ["{docs}"]}}\n  - stage: chunk\n'
    )


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    yaml = ingest_chunk(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {
        a_file: "the run directory is a file",
        a_file / "run": "cannot create the run directory",
    }
    if Path("/proc").is_dir():  # a directory where nothing can be created, even by root
        cases[Path("/proc")] = "cannot write here"
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "read_only"
        locked.mkdir(mode=0o500)
        cases[locked] = "cannot write here"
        cases[locked / "run"] = "cannot create the run directory"
    for out, message in cases.items():
        result = fingen("run", yaml, "--out", out)
        assert result.returncode == 2, (out, result.stderr)
        line = error_line(result.stderr)
        assert line.startswith("error: ") and message in line and str(out) in line, line
        no_traceback(result)
    assert not list(Path("/proc").glob(".fingen*"))


def test_validate_names_a_missing_input_file(tmp_path: Path) -> None:
    yaml = fake_pipeline(
        tmp_path, '  - stage: ingest\n    params: {paths: ["missing-docs.jsonl"]}\n'
        "  - stage: chunk\n",
    )  # fmt: skip
    for command in (["validate", yaml], ["run", yaml, "--out", tmp_path / "run"]):
        result = fingen(*command)
        assert result.returncode == 2, result.stderr
        line = error_line(result.stderr)
        assert "missing-docs.jsonl" in line and "not found" in line, line
        no_traceback(result)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_validate_refuses_a_stage_whose_input_no_earlier_stage_produces(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"title": "t", "text": COMPANIES["Acme Corp"]}) + "\n")
    ingest = f'  - stage: ingest\n    params: {{paths: ["{docs}"]}}\n'
    cases = {
        # no stage produces passages before bottom_up
        ingest + "  - stage: bottom_up\n": "no earlier stage produces passage records",
        # named explicitly, but written after it
        ingest + "  - stage: bottom_up\n    params: {passages: chunk}\n  - stage: chunk\n": (
            "written by a later stage"
        ),
    }
    for i, (stages, message) in enumerate(cases.items()):
        yaml = fake_pipeline(tmp_path, stages)
        for command in (["validate", yaml], ["run", yaml, "--out", tmp_path / f"run{i}"]):
            result = fingen(*command)
            assert result.returncode == 2, result.stderr
            line = error_line(result.stderr)
            assert message in line and "bottom_up" in line, line
            no_traceback(result)
        assert not (tmp_path / f"run{i}" / "ingest.jsonl").exists()
    assert fingen("validate", ingest_chunk(tmp_path)).returncode == 0
