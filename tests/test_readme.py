"""The README's promises: its tested Python block runs, its set-up block matches CI, and
docs/stages.md matches the params models."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_code_block_holds_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    first = re.search(r"```\w*\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_stage_reference_is_current() -> None:
    from fingen.console import stage_reference

    assert stage_reference() in (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")


@pytest.mark.llamacpp
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="'local' extra not installed"
)
def test_python_api_example_runs_on_the_embedded_model() -> None:
    code = re.search(r"```python tested\n(.*?)```", README, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip(), "the example printed nothing"
