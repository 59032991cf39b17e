"""A fleet: ``llm.base_url`` as a list of OpenAI-compatible endpoints serving one model,
balanced by requests in flight (local executor); one URL works as before."""

from __future__ import annotations

import pytest

from fingen.config import LLMConfig
from fingen.errors import ConfigError
from fingen.llm.engine import build_engine
from fingen.llm.registry import FleetBackend
from fingen.llm.tasks import LLMTask, run_task
from tests.scripted_server import ScriptedServer


class EchoTask(LLMTask[str, str]):
    name = "echo"

    def item_id(self, item: str) -> str:
        return item

    def build(self, item: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"say {item}"}]

    def parse(self, item: str, reply: str, completion: object) -> list[str]:
        return [reply]


def _config(*urls: str, **extra: object) -> LLMConfig:
    base = list(urls) if len(urls) > 1 else urls[0]
    return LLMConfig(backend="openai", base_url=base, model="m", **extra)  # type: ignore[arg-type]


def test_a_list_of_urls_is_a_fleet_and_one_url_is_unchanged() -> None:
    fleet = LLMConfig(backend="openai", base_url=["http://a:1/v1", "http://b:2/v1"])
    assert fleet.base_urls == ["http://a:1/v1", "http://b:2/v1"]
    assert LLMConfig(backend="openai", base_url="http://a:1/v1").base_urls == ["http://a:1/v1"]
    assert LLMConfig(backend="openai", base_url="http://a:1/v1, http://b:2/v1").base_urls == [
        "http://a:1/v1",
        "http://b:2/v1",
    ]
    with pytest.raises(ValueError, match="twice"):
        LLMConfig(backend="openai", base_url=["http://a:1/v1", "http://a:1/v1"])
    with ScriptedServer() as srv:
        engine = build_engine(_config(srv.base_url))
        try:
            assert not isinstance(engine.backend, FleetBackend)
            assert engine.identity == f"openai:{srv.base_url}:m"  # cache keys as before
        finally:
            engine.close()


def test_requests_are_balanced_across_both_endpoints() -> None:
    with ScriptedServer(latency=0.05) as a, ScriptedServer(latency=0.05) as b:
        engine = build_engine(_config(a.base_url, b.base_url, concurrency=8))
        try:
            assert isinstance(engine.backend, FleetBackend)
            assert engine.identity == "openai:fleet:m"
            results = list(run_task(EchoTask(), [f"x{i}" for i in range(40)], engine))
        finally:
            engine.close()
    assert all(r.ok for r in results)
    assert a.count + b.count == 40
    assert abs(a.count - b.count) <= 4, (a.count, b.count)


def test_the_faster_endpoint_takes_more_and_a_failing_one_hands_over() -> None:
    with ScriptedServer(latency=0.2) as slow, ScriptedServer(latency=0.01) as fast:
        engine = build_engine(_config(slow.base_url, fast.base_url, concurrency=4))
        try:
            results = list(run_task(EchoTask(), [f"y{i}" for i in range(40)], engine))
        finally:
            engine.close()
        assert all(r.ok for r in results)
        assert fast.count > 2 * slow.count, (fast.count, slow.count)
    with ScriptedServer(default={"status": 503}) as down, ScriptedServer() as up:
        engine = build_engine(
            _config(down.base_url, up.base_url, concurrency=2, max_retries=1, backoff_s=0)
        )
        try:
            results = list(run_task(EchoTask(), [f"z{i}" for i in range(6)], engine))
        finally:
            engine.close()
        assert all(r.ok for r in results)
        assert up.status_counts == {200: 6}
        assert engine.backend.failed_over >= 1  # type: ignore[attr-defined]


def test_unreachable_endpoints_are_dropped_with_a_warning_or_fail_in_one_line() -> None:
    with ScriptedServer() as up:
        engine = build_engine(_config("http://127.0.0.1:9/v1", up.base_url))
        try:
            assert isinstance(engine.backend, FleetBackend)
            assert len(engine.backend.members) == 1
            assert "1 of 2 endpoints unreachable" in (engine.backend.warning or "")
        finally:
            engine.close()
    with pytest.raises(ConfigError, match="no endpoint of the fleet answers"):
        build_engine(_config("http://127.0.0.1:9/v1", "http://127.0.0.1:11/v1"))


def test_a_pipeline_on_a_fleet_sends_to_both_endpoints(tmp_path: object) -> None:
    from pathlib import Path

    from fingen.config import load_pipeline
    from fingen.pipeline import run_pipeline

    root = Path(str(tmp_path))
    docs = root / "docs.jsonl"
    docs.write_text(
        "\n".join(
            f'{{"doc_id": "d{i}", "title": "Filing {i}", "text": "Revenue grew {i} percent in '
            f'2023 because of strong demand. Costs fell {i} percent after the plant closed."}}'
            for i in range(12)
        ),
        encoding="utf-8",
    )
    yaml = root / "p.yaml"
    yaml.write_text(
        "name: fleet\nllm: {backend: openai, model: m, concurrency: 4}\n"
        f"stages:\n  - stage: ingest\n    params: {{paths: [{docs}]}}\n"
        "  - stage: chunk\n  - stage: bottom_up\n    params: {min_chars: 0}\n",
        encoding="utf-8",
    )
    with ScriptedServer(latency=0.02) as a, ScriptedServer(latency=0.02) as b:
        config = load_pipeline(yaml, [f"llm.base_url=[{a.base_url}, {b.base_url}]"])
        result = run_pipeline(config, root / "run")
        assert result.status in ("complete", "complete_with_failures")
        assert a.count > 0 and b.count > 0 and a.count + b.count == 12
    entry = result.manifest["stages"]["bottom_up"]
    assert entry["usage"]["requests"] == 12
    assert "," in result.manifest["models"]["default"]["base_url"]
