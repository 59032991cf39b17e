"""The layering rules of docs/architecture.md, enforced by parsing every import in fingen/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fingen"
METHODS = ("ingest", "retrieval", "reasoning", "export", "report", "train")
RUNNER = ("fingen.stages", "fingen.pipeline", "fingen.cli", "fingen.console", "fingen.executors")
BACKEND_PACKAGES = ("openai", "llama_cpp", "vllm", "ray.data.llm")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (top level and inside functions), absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(*packages: str) -> list[Path]:
    out: list[Path] = []
    for pkg in packages:
        target = PACKAGE / pkg
        out += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return out


def _offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return sorted(bad)


def test_methods_never_import_the_stages_or_the_runner() -> None:
    files = _modules(*METHODS, "llm", "embed", "records.py", "run.py", "store.py")
    assert _offenders(files, RUNNER) == []


def test_exporters_take_records_call_no_model_and_do_not_import_the_report() -> None:
    forbidden = ("fingen.report", "fingen.retrieval", "fingen.reasoning", "fingen.llm")
    forbidden += ("fingen.embed", "fingen.ingest")
    assert _offenders(_modules("export"), forbidden) == []


def test_only_the_llm_layer_knows_a_backend() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if "llm" not in p.relative_to(PACKAGE).parts]
    assert _offenders(outside, BACKEND_PACKAGES) == []


@pytest.mark.parametrize("layer", ["llm", "embed"])
def test_the_model_layers_know_no_method(layer: str) -> None:
    forbidden = tuple(f"fingen.{m}" for m in METHODS) + RUNNER
    assert _offenders(_modules(layer), forbidden) == []


def test_records_errors_and_prompts_are_the_bottom_layer() -> None:
    files = _modules("records.py", "errors.py", "prompts.py")
    bottom = {"fingen.errors", "fingen.records", "fingen.prompts"}
    bad = [
        f"{p.name} imports {name}"
        for p in files
        for name in _imports(p)
        if name.startswith("fingen.") and not any(name.startswith(b) for b in bottom)
    ]
    assert bad == []
