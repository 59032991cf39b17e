"""Ctrl-C, SIGTERM and concurrent use of one run directory, with ``fingen run`` as a real
process against a slow scripted server (one connection, every answer delayed).

A first SIGINT/SIGTERM stops the run cleanly (exit 130/143, one line saying how to resume,
status ``interrupted``); a second exits at once; the same command again finishes and sends
no request that had already succeeded. Two runs on one ``--out``: one writes, the other
exits 2 naming the writer's PID.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from fingen import cli
from fingen.config import LLMConfig, PipelineConfig
from fingen.errors import Interrupted, RunLocked
from fingen.llm import build_engine, run_task
from fingen.pipeline import run_pipeline
from fingen.store import RunStore
from tests.fake_handlers import last_user
from tests.llm_handlers import fake_llm, installed
from tests.scripted_server import ScriptedServer, ServerProcess
from tests.test_llm_engine import EchoTask
from tests.test_runtime import (
    COMPANIES,
    INTERRUPTED,
    answer,
    cached_keys,
    company_of,
    key_of,
    manifest,
    no_traceback,
    queried,
    start,
    success_rules,
    write_pipeline,
)

LATENCY = 0.5  # seconds per answer; with concurrency 1 a run takes >= 5 * LATENCY
DATA_FILES = ("ingest.jsonl", "chunk.jsonl", "bottom_up.queries.jsonl", "bottom_up.qrels.jsonl")


def wait_for_requests(srv: ServerProcess, proc: subprocess.Popen[str], n: int) -> None:
    """Until the server has seen ``n`` requests (the run is inside its LLM stage)."""
    deadline = time.monotonic() + 60
    while srv.stats(with_requests=False)["count"] < n:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"fingen ended early ({proc.returncode}): {out}\n{err}")
        assert time.monotonic() < deadline, "the run never reached the LLM stage"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_cleanly_and_the_rerun_pays_for_nothing_twice(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with ServerProcess({"rules": success_rules()}, latency=LATENCY) as srv:
        yaml = write_pipeline(tmp_path, srv.base_url)
        out = tmp_path / "run"
        proc = start("run", yaml, "--out", out)
        wait_for_requests(srv, proc, 2)  # the first answer is in, the second on its way
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)

        assert proc.returncode == 128 + signum, stderr
        no_traceback(stdout + stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines[-1] == INTERRUPTED, stderr
        assert sum("interrupted" in line for line in lines) == 1, stderr
        m = manifest(out)
        assert m["status"] == "interrupted"
        assert m["stages"]["bottom_up"]["status"] == "interrupted"
        assert m["stages"]["ingest"]["status"] == m["stages"]["chunk"]["status"] == "done"
        assert not (out / "bottom_up.queries.jsonl").exists()  # no half-written output
        assert not list(out.glob("*.tmp"))
        paid = cached_keys(out)
        run1 = srv.stats()["requests"]
        assert 1 <= len(paid) < len(COMPANIES)
        assert paid <= {key_of(r, srv.base_url) for r in run1}
        paid_companies = {company_of(r) for r in run1 if key_of(r, srv.base_url) in paid}

        srv.reset()
        again = start("run", yaml, "--out", out)
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        no_traceback(stdout + stderr)
        m = manifest(out)
        assert m["status"] == "complete" and m["stages"]["bottom_up"]["status"] == "done"
        assert m["stages"]["bottom_up"]["usage"]["cached"] == len(paid)
        assert queried(out) == set(COMPANIES)
        run2 = srv.stats()["requests"]
        assert not paid & {key_of(r, srv.base_url) for r in run2}, "a paid request was re-sent"
        # every other passage was asked exactly once (the interrupted request included)
        assert Counter(company_of(r) for r in run2) == {
            c: 1 for c in COMPANIES if c not in paid_companies
        }


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """Best effort from outside: two Ctrl-C 0.2 s apart end the process within seconds.

    Exit 130 when the handler sees the second signal; once Python is finalizing (after the
    one line is printed) its default SIGINT action ends the process, which a shell also
    reports as 130 (Popen: -2)."""
    with ServerProcess({"rules": success_rules()}, latency=LATENCY) as srv:
        yaml = write_pipeline(tmp_path, srv.base_url)
        proc = start("run", yaml, "--out", tmp_path / "run")
        wait_for_requests(srv, proc, 1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
        assert proc.returncode in (130, -signal.SIGINT), stderr
        no_traceback(stdout + stderr)


def test_the_second_signal_handler_call_exits_without_cleanup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler itself: the first signal raises Interrupted (clean stop), the second
    calls os._exit with 128 + its number (no cleanup that could hang)."""
    exits: list[int] = []

    class Exited(BaseException):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(cli, "_SIGNALS_SEEN", [])
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(Interrupted) as first:
        cli._interrupt(signal.SIGTERM, None)
    assert first.value.signum == signal.SIGTERM and first.value.exit_code == 143
    with pytest.raises(Exited):
        cli._interrupt(signal.SIGINT, None)
    assert exits == [130]


def test_closing_the_engine_unwinds_a_stage_stopped_mid_task() -> None:
    """Ctrl-C leaves run_task's requests on the engine's loop (the stage's generator is not
    closed yet): closing the engine cancels and finishes them, so none is destroyed pending
    at exit ("Task was destroyed but it is pending!", tracebacks after the one line)."""
    with ScriptedServer(latency=0.2) as srv:
        config = LLMConfig(backend="openai", base_url=srv.base_url, model="m", concurrency=1)
        engine = build_engine(config)
        results = run_task(EchoTask(), range(10), engine)
        assert next(results).ok  # one answer in, the next on its way: then the signal
        loop = engine._loop.loop
        engine.close()
        assert not loop.is_running()
        assert not asyncio.all_tasks(loop)
        del results


def test_one_writer_per_run_directory(tmp_path: Path) -> None:
    """Two ``fingen run`` on one --out 0.3 s apart: one exits 2 naming the PID that holds
    the lock, the other finishes with the same data files as an undisturbed run."""
    with ServerProcess({"rules": success_rules()}, latency=LATENCY) as srv:
        yaml = write_pipeline(tmp_path, srv.base_url)
        out = tmp_path / "run"
        first = start("run", yaml, "--out", out)
        time.sleep(0.3)
        second = start("run", yaml, "--out", out)
        clean = start("run", yaml, "--out", tmp_path / "clean")  # undisturbed, meanwhile
        results = {p: p.communicate(timeout=120) for p in (first, second)}
        _, err = clean.communicate(timeout=120)
        assert clean.returncode == 0, err
        codes = sorted(p.returncode for p in results)
        assert codes == [0, 2], {p.returncode: err for p, (_, err) in results.items()}
        winner = next(p for p in results if p.returncode == 0)
        loser = next(p for p in results if p.returncode == 2)
        loser_out, loser_err = results[loser]
        lines = [line for line in loser_err.splitlines() if line.strip()]
        assert len(lines) == 1, loser_err
        assert f"in use by fingen process {winner.pid}" in lines[0] and str(out) in lines[0]
        no_traceback(loser_out + loser_err)
        assert manifest(out)["status"] == "complete"
        # the winner and the clean run sent each request once: the loser sent nothing
        assert Counter(company_of(r) for r in srv.stats()["requests"]) == dict.fromkeys(
            COMPANIES, 2
        )
    for name in DATA_FILES:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert not list(out.glob("*.tmp"))
    assert (out / "bottom_up.queries.jsonl").read_text().count("\n") == len(COMPANIES)


def test_a_run_reads_the_run_directory_only_while_it_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run on the same --out that finishes just after this one read the manifest
    (and before this one locked) must not be lost: either it could not start (the
    directory was locked) or this run resumes its stages and carries what it spent."""

    def handler(request: object) -> dict:
        company = next(c for c in COMPANIES if c in last_user(request))
        return answer(company)["json"]

    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"title": c, "text": t}) + "\n" for c, t in COMPANIES.items())
    )
    out = tmp_path / "run"
    real_load = RunStore.load_manifest
    other: list[str] = []

    def load_then_race(store: RunStore) -> dict:
        data = real_load(store)
        if not other:  # the other process runs from start to end right now
            other.append("started")
            try:
                other.append(run_pipeline(config, out).status)
            except RunLocked:
                other.append("locked out")
        return data

    monkeypatch.setattr(RunStore, "load_manifest", load_then_race)
    with installed(handler) as path:
        config = PipelineConfig.model_validate({
            "name": "race", "llm": fake_llm(path, budget={"max_tokens": 10**9}),
            "stages": [
                {"stage": "ingest", "params": {"paths": [str(docs)]}},
                {"stage": "chunk"},
                {"stage": "bottom_up", "params": {"sentence_queries": 0, "passage_queries": 1}},
            ],
        })  # fmt: skip
        result = run_pipeline(config, out)
    assert result.status == "complete" and queried(out) == set(COMPANIES)
    if other[-1] == "locked out":
        return
    assert other[-1] == "complete"
    stages = result.manifest["stages"]
    assert all(e.get("resumed") for e in stages.values()), stages
    spent = stages["bottom_up"]["usage"]["prompt_tokens"]
    spent += stages["bottom_up"]["usage"]["completion_tokens"]
    assert result.manifest["budget"]["spent_tokens"] == spent > 0
