"""Secrets never leave the process: a server that echoes the request's Authorization header
(and a hub token) in its error bodies, reached through a base_url with credentials in it
and an API key from the environment. Nothing fingen writes or prints holds them: failures,
manifest, report, cache, stdout, stderr."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_runtime import fingen, manifest, no_traceback, rows, write_pipeline

API_KEY = "sk-THISISSECRET12345"
PASSWORD = "s3cret"
HF_TOKEN = "hf_TESTTOKENabcdef123456"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
SECRETS = (API_KEY, "THISISSECRET", PASSWORD, BASIC, HF_TOKEN)


@contextmanager
def echo_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """Answers every request with ``status`` and a body that repeats the Authorization
    header (as a header line, as a JSON value, bare) and the hub token; yields the port and
    the Authorization headers it received."""
    received: list[str] = []

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            received.append(auth)
            message = f"denied: Authorization: {auth}; got {auth!r}; hub token {HF_TOKEN}"
            body = json.dumps({"error": {"message": message, "authorization": auth}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def leaks(run_dir: Path, *texts: str) -> list[str]:
    """Where any secret appears: files of the run directory (all of them) and ``texts``."""
    found = []
    places = {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    places |= {f"output {i}": t.encode() for i, t in enumerate(texts)}
    for where, data in places.items():
        found += [f"{secret} in {where}" for secret in SECRETS if secret.encode() in data]
    return found


def secret_run(tmp_path: Path, port: int, *, api_key: bool, report: bool = True):
    base_url = f"http://user:{PASSWORD}@127.0.0.1:{port}/v1"
    llm = "api_key_env: FINGEN_TEST_API_KEY" if api_key else ""
    stages = "  - stage: report\n" if report else ""
    yaml = write_pipeline(tmp_path, base_url, llm=llm, stages=stages)
    result = fingen(
        "run", yaml, "--out", tmp_path / "run",
        extra_env={"FINGEN_TEST_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN},
    )  # fmt: skip
    return result, tmp_path / "run"


@pytest.mark.parametrize("api_key", [True, False], ids=["bearer-key", "url-credentials"])
def test_server_errors_that_echo_credentials_are_redacted_everywhere(
    tmp_path: Path, api_key: bool
) -> None:
    """500s (transient failures) whose bodies hold the credentials: with an API key it is
    sent as a Bearer token, without one the URL's user:password goes as Basic auth."""
    with echo_server(500) as (port, received):
        result, run_dir = secret_run(tmp_path, port, api_key=api_key)
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    # the secrets really went out, and really came back in the error bodies
    assert set(received) == {f"Bearer {API_KEY}" if api_key else f"Basic {BASIC}"}
    m = manifest(run_dir)
    assert m["status"] == "complete_with_failures"
    failures = rows(run_dir / "bottom_up.failures.jsonl")
    assert failures and {f["reason"] for f in failures} == {"transport_error"}
    assert all("<redacted>" in f["detail"] and "HTTP 500" in f["detail"] for f in failures)
    assert m["config"]["llm"]["base_url"].startswith("http://<redacted>@127.0.0.1")
    assert (run_dir / "report.html").is_file()
    assert leaks(run_dir, result.stdout, result.stderr) == []


def test_a_rejected_key_is_one_redacted_line(tmp_path: Path) -> None:
    """401 stops the run (exit 2) with one line; neither it nor the manifest holds a secret."""
    with echo_server(401) as (port, received):
        result, run_dir = secret_run(tmp_path, port, api_key=True)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert received and set(received) == {f"Bearer {API_KEY}"}
    line = [x for x in result.stderr.splitlines() if x.startswith("error")]
    assert len(line) == 1 and "HTTP 401" in line[0] and "<redacted>" in line[0], result.stderr
    assert line[0] == result.stderr.strip().splitlines()[-1]
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["stages"]["bottom_up"]["status"] == "failed"
    assert "HTTP 401" in m["stages"]["bottom_up"]["reason"]
    assert leaks(run_dir, result.stdout, result.stderr) == []


def test_a_user_error_naming_the_url_hides_its_credentials(tmp_path: Path) -> None:
    """Nothing listens at the URL: the one-line error names the host, not the password."""
    with echo_server(500) as (port, _):
        pass  # a port that was free a moment ago and is closed now
    result, run_dir = secret_run(tmp_path, port, api_key=True, report=False)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    line = [x for x in result.stderr.splitlines() if x.startswith("error")]
    assert len(line) == 1 and line[0] == result.stderr.strip().splitlines()[-1], result.stderr
    assert "llm.base_url" in line[0] and "127.0.0.1" in line[0], line
    assert leaks(run_dir, result.stdout, result.stderr) == []
