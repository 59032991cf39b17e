"""The LLM layer against a real HTTP server on loopback (tests/scripted_server.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from fingen.config import BudgetConfig, LLMConfig, PricesConfig
from fingen.errors import BudgetExceeded, StructuredOutputError, TransportError
from fingen.llm import ChatRequest, LLMTask, build_engine, run_task
from fingen.records import Failure
from tests.scripted_server import MALFORMED_JSON, ScriptedServer, fail_then


class Answer(BaseModel):
    question: str
    score: int


class EchoTask(LLMTask):
    """A minimal structured task: one request per item, one record per reply."""

    name = "echo"
    response_model = Answer

    def item_id(self, item: int) -> str:
        return f"item-{item}"

    def build(self, item: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Write a question for item-{item}."}]

    def parse(self, item: int, reply: Answer, completion) -> list:
        if reply.score < 0:
            return [Failure(stage=self.name, item_id=f"item-{item}", reason="negative_score")]
        return [reply]


def engine_for(srv: ScriptedServer, tmp_path: Path, **overrides):
    cfg = LLMConfig(backend="openai", base_url=srv.base_url, model="m", backoff_s=0.01, **overrides)
    return build_engine(cfg, cache_path=tmp_path / "cache.sqlite")


def ask(engine, text: str = "hello") -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=64)


def test_retries_recover_from_500_and_429_with_retry_after(tmp_path: Path) -> None:
    actions = [
        {"status": 500},
        {"status": 429, "retry_after": 0.3},
        {"json": {"question": "q?", "score": 1}},
    ]
    with ScriptedServer(actions=actions) as srv, engine_for(srv, tmp_path) as engine:
        t0 = time.perf_counter()
        result = engine.run(engine.structured(ask(engine), Answer))
        elapsed = time.perf_counter() - t0
        assert result.value == Answer(question="q?", score=1)
        assert srv.count == 3
        assert srv.status_counts == {500: 1, 429: 1, 200: 1}
        assert elapsed >= 0.3  # Retry-After was honoured over the 0.02 s backoff
        assert engine.meter.transport_retries == 2


def test_retries_are_capped_and_raise_transport_error(tmp_path: Path) -> None:
    with (
        ScriptedServer(default={"status": 503}) as srv,
        engine_for(srv, tmp_path, max_retries=2) as engine,
    ):
        with pytest.raises(TransportError) as info:
            engine.run(engine.chat(ask(engine)))
        assert info.value.attempts == 3 and info.value.status == 503
        assert srv.count == 3


def test_client_error_is_not_retried(tmp_path: Path) -> None:
    with (
        ScriptedServer(default={"status": 400, "error": "bad"}) as srv,
        engine_for(srv, tmp_path) as engine,
    ):
        with pytest.raises(TransportError):
            engine.run(engine.chat(ask(engine)))
        assert srv.count == 1


def test_malformed_json_is_reasked_with_the_error(tmp_path: Path) -> None:
    actions = [{"malformed": True}, {"json": {"question": "q?", "score": 2}}]
    with ScriptedServer(actions=actions) as srv, engine_for(srv, tmp_path) as engine:
        result = engine.run(engine.structured(ask(engine), Answer))
        assert result.reasks == 1 and result.value.score == 2
        second = srv.requests[1]["messages"]
        assert second[-2] == {"role": "assistant", "content": MALFORMED_JSON}
        assert "invalid_json" in second[-1]["content"]
        assert engine.meter.reasks == 1 and engine.meter.transport_retries == 0


def test_schema_mismatch_after_reasks_keeps_raw_text(tmp_path: Path) -> None:
    with (
        ScriptedServer(default={"json": {"question": "q?"}}) as srv,
        engine_for(srv, tmp_path, max_reasks=1) as engine,
    ):
        with pytest.raises(StructuredOutputError) as info:
            engine.run(engine.structured(ask(engine), Answer))
        assert info.value.reason == "schema_mismatch"
        assert info.value.raw == '{"question": "q?"}'
        assert srv.count == 2


def test_truncated_output_is_its_own_failure(tmp_path: Path) -> None:
    with ScriptedServer(
        default={"json": {"question": "q" * 50, "score": 1}, "truncate": True}
    ) as srv:
        with engine_for(srv, tmp_path) as engine:
            with pytest.raises(StructuredOutputError) as info:
                engine.run(engine.structured(ask(engine), Answer))
            assert info.value.reason == "truncated"
            assert srv.count == 1  # no re-ask: the same budget would truncate again


def test_llama_cpp_style_sends_json_object_with_schema(tmp_path: Path) -> None:
    with (
        ScriptedServer() as srv,
        engine_for(srv, tmp_path, schema_style="json_object_schema") as engine,
    ):
        engine.run(engine.structured(ask(engine), Answer))
        fmt = srv.requests[0]["response_format"]
        assert fmt["type"] == "json_object" and set(fmt["schema"]["properties"]) == set(
            Answer.model_fields
        )


def test_cache_answers_repeated_requests_without_http(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        with engine_for(srv, tmp_path) as engine:
            engine.run(engine.structured(ask(engine, "a"), Answer))
        with engine_for(srv, tmp_path) as engine:  # a new process would see the same file
            result = engine.run(engine.structured(ask(engine, "a"), Answer))
            assert result.completion.cached
            engine.run(engine.structured(ask(engine, "b"), Answer))
        assert srv.count == 2


def test_run_task_counts_every_item_and_keeps_failures(tmp_path: Path) -> None:
    rules = [
        {"match": "item-3", "in": "any", "action": {"malformed": True}},
        {"match": "item-5", "action": {"status": 500}},
        {"match": "item-7", "action": {"json": {"question": "q?", "score": -1}}},
        {"match": "item-1", "actions": fail_then(2, {"status": 429, "retry_after": 0})},
    ]
    with ScriptedServer(rules=rules, default={"json": {"question": "q?", "score": 1}}) as srv:
        with engine_for(srv, tmp_path, max_retries=2, max_reasks=1, concurrency=4) as engine:
            results = list(run_task(EchoTask(), range(10), engine.for_stage("echo")))
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(10)]  # input order
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    assert len(ok) + len(failed) == 10
    reasons = {r.item_id: r.failures[0].reason for r in failed}
    assert reasons == {"item-3": "invalid_json", "item-5": "transport_error"}
    assert failed[0].failures[0].raw == MALFORMED_JSON
    rejected = [f for r in ok for f in r.failures]
    assert [f.reason for f in rejected] == ["negative_score"]
    assert sum(len(r.records) for r in ok) == 7


def test_budget_stops_cleanly_and_keeps_finished_results(tmp_path: Path) -> None:
    body = {
        "json": {"question": "q?", "score": 1},
        "usage": {"prompt_tokens": 60, "completion_tokens": 40},
    }
    with ScriptedServer(default=body) as srv:
        cfg = {
            "budget": BudgetConfig(max_tokens=350),
            "concurrency": 1,
            "max_tokens": 40,
            "prices": PricesConfig(input_per_mtok=1.0, output_per_mtok=2.0),
        }
        with engine_for(srv, tmp_path, **cfg) as engine:
            done = []
            with pytest.raises(BudgetExceeded, match=r"llm\.budget\.max_tokens"):
                for r in run_task(EchoTask(), range(10), engine, window=1):
                    done.append(r)
            # each request holds its worst case (~60 prompt + 40) before it is sent: the 4th
            # would pass 350, so it is never sent
            assert len(done) == 3 and srv.count == 3
            assert engine.budget.spent_tokens == 300 <= 350
            assert engine.meter.cost == pytest.approx(3 * (60 * 1.0 + 40 * 2.0) / 1e6)


def test_rpm_limit_spaces_requests(tmp_path: Path) -> None:
    with ScriptedServer() as srv, engine_for(srv, tmp_path, rpm=600, concurrency=8) as engine:
        engine.limiter_probe = True
        engine.backend.limiter.requests.level = 1  # start with one token in the bucket
        t0 = time.perf_counter()
        list(run_task(EchoTask(), range(4), engine))
        assert time.perf_counter() - t0 >= 0.25  # 3 more tokens at 10/s


def test_bad_key_or_model_stops_the_task_instead_of_failing_every_row(tmp_path: Path) -> None:
    from fingen.errors import BackendRejected

    with ScriptedServer(default={"status": 404, "error": "model not found"}) as srv:
        with engine_for(srv, tmp_path, concurrency=4) as engine:
            with pytest.raises(BackendRejected, match="404"):
                list(run_task(EchoTask(), range(50), engine))
        assert srv.count < 50


def test_cache_key_names_the_backend_not_just_the_model(tmp_path: Path) -> None:
    with ScriptedServer() as a, ScriptedServer() as b:
        with engine_for(a, tmp_path) as engine:
            engine.run(engine.structured(ask(engine), Answer))
        with engine_for(b, tmp_path) as engine:  # same model name, another server
            assert not engine.run(engine.structured(ask(engine), Answer)).completion.cached
        assert a.count == 1 and b.count == 1


def test_fake_backend_answers_are_never_cached(tmp_path: Path) -> None:
    engine = build_engine(LLMConfig(backend="fake"), cache_path=tmp_path / "cache.sqlite")
    with engine:
        engine.run(engine.structured(ask(engine), Answer))
    assert engine.cache is None and not (tmp_path / "cache.sqlite").exists()
