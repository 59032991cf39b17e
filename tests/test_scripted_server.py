"""The scripted OpenAI-compatible test server answers what it is told, and counts it."""

from __future__ import annotations

import asyncio
import json
import time
from enum import StrEnum
from typing import Any, Literal

import aiohttp
import pytest
from pydantic import BaseModel, Field

from tests.scripted_server import (
    MALFORMED_JSON,
    ScriptedServer,
    ServerProcess,
    fail_then,
    schema_instance,
)

try:
    import httpx
except ImportError:  # this venv ships the client as httpx2
    import httpx2 as httpx  # type: ignore[no-redef]

__all__: list[str] = []


class Sentiment(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Evidence(BaseModel):
    quote: str = Field(min_length=12)
    page: int = Field(ge=3)


class QA(BaseModel):
    question: str
    answer: str = Field(max_length=4)
    confidence: float = Field(gt=0, le=0.9)
    sentiment: Sentiment
    kind: Literal["numeric", "textual"]
    evidence: list[Evidence]
    parent: Evidence | None = None
    tags: list[str] = Field(min_length=2)
    ok: bool
    asof: str = Field(json_schema_extra={"format": "date"})


class Batch(BaseModel):
    items: list[QA]


def _body(content: str = "hello", schema: dict[str, Any] | None = None, **extra: Any) -> dict:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": content}]}
    if schema is not None:
        fmt = {"name": "out", "schema": schema}
        body["response_format"] = {"type": "json_schema", "json_schema": fmt}
    return body | extra


def _post(srv: ScriptedServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.base_url + "/chat/completions", json=body, timeout=10)


def _content(resp: httpx.Response) -> str:
    return resp.json()["choices"][0]["message"]["content"]


def test_schema_instance_of_nested_pydantic_model_validates() -> None:
    value = schema_instance(Batch.model_json_schema())
    batch = Batch.model_validate(value)
    assert len(batch.items) == 1 and len(batch.items[0].evidence) == 1
    assert len(batch.items[0].tags) == 2


@pytest.mark.parametrize("style", ["json_schema", "json_object"])
def test_schema_echo_answers_valid_json_for_both_response_formats(style: str) -> None:
    schema = Batch.model_json_schema()
    if style == "json_schema":
        fmt = {"type": "json_schema", "json_schema": {"name": "Batch", "schema": schema}}
    else:
        fmt = {"type": "json_object", "schema": schema}
    with ScriptedServer() as srv:
        resp = _post(srv, _body(response_format=fmt))
    assert resp.status_code == 200
    Batch.model_validate_json(_content(resp))


def test_answer_has_realistic_openai_shape_and_sdk_parses_it() -> None:
    import openai

    with ScriptedServer(actions=[{"content": '{"a": 1}', "reasoning": "let me think"}]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        out = client.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "hi"}], temperature=0
        )
        client.close()
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.model == "bench" and out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == '{"a": 1}'
    assert out.choices[0].message.model_extra["reasoning_content"] == "let me think"
    assert out.usage is not None and out.usage.total_tokens == (
        out.usage.prompt_tokens + out.usage.completion_tokens
    )


def test_each_action_kind_answers_as_scripted() -> None:
    actions = [
        {"json": {"x": 1}},
        {"malformed": True},
        {"content": '{"long": "abcdefghij"}', "truncate": True},
        {"content": "Sure, here is the answer."},
        {"status": 500, "error": "boom"},
        {"body": "<html>bad gateway</html>", "status": 502},
        {"json": {"y": 2}, "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    ]
    with ScriptedServer(actions=actions) as srv:
        got = [_post(srv, _body()) for _ in actions]
    assert json.loads(_content(got[0])) == {"x": 1}
    assert _content(got[1]) == MALFORMED_JSON
    with pytest.raises(ValueError):
        json.loads(_content(got[1]))
    assert got[2].json()["choices"][0]["finish_reason"] == "length"
    assert _content(got[2]) == '{"long": "a'  # the first half
    assert _content(got[3]) == "Sure, here is the answer."
    assert got[4].status_code == 500 and got[4].json()["error"]["message"] == "boom"
    assert got[5].status_code == 502 and got[5].text == "<html>bad gateway</html>"
    assert got[6].json()["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }


def test_rate_limit_answer_carries_retry_after_header() -> None:
    with ScriptedServer(actions=[{"status": 429, "retry_after": 0.25}, {"status": 429}]) as srv:
        first, second = _post(srv, _body()), _post(srv, _body())
    assert first.status_code == 429 and first.headers["Retry-After"] == "0.25"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert second.status_code == 429 and "Retry-After" not in second.headers


def test_slow_answer_waits_its_delay_plus_server_latency() -> None:
    with ScriptedServer(actions=[{"delay": 0.3}], latency=0.1) as srv:
        start = time.perf_counter()
        resp = _post(srv, _body(schema=QA.model_json_schema()))
        elapsed = time.perf_counter() - start
    assert resp.status_code == 200 and elapsed >= 0.4
    QA.model_validate_json(_content(resp))


def test_dropped_connection_gets_no_answer() -> None:
    with ScriptedServer(actions=[{"drop": True}]) as srv:
        with pytest.raises(httpx.TransportError):
            _post(srv, _body())
        assert _post(srv, _body()).status_code == 200
        assert srv.status_counts == {0: 1, 200: 1}


def test_queue_comes_first_then_rules_then_default() -> None:
    rules = [{"match": "ticker", "action": {"content": "rule"}}]
    with ScriptedServer(
        actions=[{"content": "queued"}], rules=rules, default={"content": "dflt"}
    ) as srv:
        texts = [_content(_post(srv, _body(m))) for m in ("ticker A", "ticker B", "other")]
        sources = [r["source"] for r in srv.requests]
    assert texts == ["queued", "rule", "dflt"]
    assert sources == ["queue", "rule0", "default"]


def test_rule_fails_n_times_then_succeeds() -> None:
    rules = [
        {"match": "flaky", "action": {"status": 500}, "times": 2},
        {"regex": r"fl\w+y", "action": {"content": "ok"}},
    ]
    with ScriptedServer(rules=rules) as srv:
        statuses = [_post(srv, _body("a flaky one")).status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]


def test_action_sequence_per_prompt_repeats_its_last_action() -> None:
    rules = [{"actions": fail_then(1, {"status": 503}, {"content": "fine"}), "per_prompt": True}]
    with ScriptedServer(rules=rules) as srv:
        codes = [_post(srv, _body(p)).status_code for p in ("a", "b", "a", "b", "a")]
    assert codes == [503, 503, 200, 200, 200]


def test_rule_can_match_any_message_not_only_last_user() -> None:
    rules = [{"match": "SYSTEM-KEY", "in": "any", "action": {"content": "matched"}}]
    body = _body("plain")
    body["messages"].insert(0, {"role": "system", "content": "SYSTEM-KEY here"})
    with ScriptedServer(rules=rules, default={"content": "no"}) as srv:
        assert _content(_post(srv, body)) == "matched"
        assert _content(_post(srv, _body("SYSTEM-KEY only in user"))) == "matched"
    rules[0]["in"] = "last_user"
    with ScriptedServer(rules=rules, default={"content": "no"}) as srv:
        assert _content(_post(srv, body)) == "no"


def test_requests_are_counted_and_recorded() -> None:
    schema = QA.model_json_schema()
    with ScriptedServer(actions=[{"status": 429}]) as srv:
        _post(srv, _body("one", schema, temperature=0.2, seed=7, max_tokens=99))
        _post(srv, _body("two", max_completion_tokens=5))
        assert srv.count == 2 and srv.status_counts == {429: 1, 200: 1}
        first, second = srv.requests
    assert first["messages"] == [{"role": "user", "content": "one"}]
    assert first["response_format"]["json_schema"]["schema"] == schema
    assert (first["temperature"], first["seed"], first["max_tokens"]) == (0.2, 7, 99)
    assert first["status"] == 429 and second["max_tokens"] == 5


def test_stats_reset_and_script_endpoints() -> None:
    with ScriptedServer() as srv:
        _post(srv, _body())
        stats = httpx.get(srv.url + "/stats").json()
        assert stats["count"] == 1 and stats["status_counts"] == {"200": 1}
        assert stats["requests"][0]["messages"][0]["content"] == "hello"
        assert "requests" not in httpx.get(srv.url + "/stats?requests=0").json()
        new = {"actions": [{"status": 500}], "default": {"content": "after"}}
        assert httpx.post(srv.url + "/script", json=new).json() == {"ok": True}
        assert _post(srv, _body()).status_code == 500
        assert _content(_post(srv, _body())) == "after"
        httpx.post(srv.url + "/reset")
        assert srv.count == 0 and srv.status_counts == {}
        srv.set_script(actions=[{"content": "again"}])
        assert _content(_post(srv, _body())) == "again"


def test_models_and_health_routes() -> None:
    with ScriptedServer(model="tiny") as srv:
        assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
        assert httpx.get(srv.base_url + "/models").json()["data"][0]["id"] == "tiny"


def test_two_hundred_concurrent_requests_are_all_answered() -> None:
    n = 200

    async def fire(url: str) -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)  # every request on its own connection
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> int:
                async with session.post(url, json=_body(f"q{i}")) as resp:
                    await resp.read()
                    return resp.status

            return await asyncio.gather(*(one(i) for i in range(n)))

    with ScriptedServer(default={"delay": 0.2}) as srv:
        statuses = asyncio.run(fire(srv.base_url + "/chat/completions"))
        assert srv.count == n
    assert statuses == [200] * n


def test_server_process_serves_its_script_file_and_outlives_clients() -> None:
    script = {"actions": [{"status": 429, "retry_after": 1}], "default": {"content": "x"}}
    with ServerProcess(script, latency=0.05) as proc:
        first = httpx.post(proc.base_url + "/chat/completions", json=_body())
        second = httpx.post(proc.base_url + "/chat/completions", json=_body())
        stats = proc.stats()
        proc.set_script(default={"content": "y"})
        third = httpx.post(proc.base_url + "/chat/completions", json=_body())
        pid = proc.proc.pid if proc.proc else None
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    assert _content(second) == "x" and _content(third) == "y"
    assert stats["count"] == 2 and stats["status_counts"] == {"200": 1, "429": 1}
    assert pid is not None
