"""The report in a real headless Chromium, driven over the DevTools protocol (CDP).

Chromium comes from Debian (``bash tests/setup_browser.sh``); without it the test skips. The
CDP client is a few lines over ``aiohttp``'s websocket: no extra package. Checks: no console
errors or exceptions, no network request, every ``data-count`` equals the manifest, the
filter script works; a screenshot goes to ``tests/artifacts/report.png`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fingen.report import summarize, write_report
from tests.report_fixtures import make_fixture_run, manifest_value

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1280,900",
]
COLLECT = """JSON.stringify(Array.from(document.querySelectorAll('[data-count]'))
  .map(e => [e.dataset.count, e.dataset.value, e.textContent]))"""
OPEN_FIRST = """document.querySelectorAll('details.query')[0].querySelectorAll('details')
  .forEach(d => { d.open = true; }); document.querySelector('details.query').open = true;"""
FILTER = """(() => { const s = document.getElementById('level-filter'); s.value = 'topic';
  s.dispatchEvent(new Event('change'));
  return [Array.from(document.querySelectorAll('details.query'))
    .filter(d => d.style.display !== 'none').length, document.getElementById('shown').textContent];
})()"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("chromium is not installed (run `bash tests/setup_browser.sh` as root)")


class CDP:
    """A minimal DevTools client: numbered commands, events kept in a list."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e.get("method") == method:
                    return e
            await asyncio.sleep(0.05)
        raise TimeoutError(method)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if marker.is_file() and (lines := marker.read_text().split()):
            return int(lines[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open a DevTools port")


async def _inspect(port: int, url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = CDP(ws)
            for domain in ("Runtime", "Log", "Page", "Network"):
                await cdp.send(f"{domain}.enable")
            await cdp.send("Page.navigate", url=url)
            await cdp.wait_for("Page.loadEventFired")
            await asyncio.sleep(0.3)  # let late console messages arrive
            counts = json.loads(await cdp.evaluate(COLLECT))
            filtered = await cdp.evaluate(FILTER)
            await cdp.evaluate(
                "document.getElementById('level-filter').value = ''; document.getElementById('level-filter').dispatchEvent(new Event('change'))"
            )
            await cdp.evaluate(OPEN_FIRST)
            size = (await cdp.send("Page.getLayoutMetrics"))["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": 1280, "height": min(size["height"], 8000), "scale": 1}
            shot = await cdp.send(
                "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
            )
            cdp.reader.cancel()
            return {
                "counts": counts,
                "filtered": filtered,
                "png": shot["data"],
                "events": cdp.events,
            }


def _problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(f"console.{p['type']}: {p.get('args')}")
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                out.append(f"network request: {url}")
    return out


def test_report_renders_in_chromium_without_errors_and_counts_match(tmp_path: Path) -> None:
    binary = _chromium()
    run = make_fixture_run(tmp_path / "run")
    page = write_report(run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["totals"] = summarize(run).totals
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile, proc)
        seen = asyncio.run(asyncio.wait_for(_inspect(port, page.as_uri()), 90))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(base64.b64decode(seen["png"]))
    assert _problems(seen["events"]) == []
    compared = 0
    for key, value, text in seen["counts"]:
        assert float(value) == pytest.approx(float(text.replace(",", ""))), key
        expected = manifest_value(manifest, key)
        if expected is not None:
            assert float(value) == pytest.approx(expected), key
            compared += 1
    stage_numbers = sum(
        len(e.get("outputs", {})) + len(e.get("failures_by_reason", {})) + 4
        for e in manifest["stages"].values()
    )
    assert compared >= stage_numbers
    assert seen["filtered"] == [1, "1 shown"]  # one topic query in the sample
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
