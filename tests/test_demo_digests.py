"""The demo's outputs are a fixed function of fingen's code: refactors must not change them.

The demo pipeline runs on the fake backend with a deterministic handler
(``tests.fake_handlers.demo``) and every data file it writes is reduced to a digest of its
canonical content (JSON keys sorted, floats rounded to 4 places, lines sorted). The digests
must equal the stored list. A deliberate change of outputs regenerates the list with
``python -m tests.test_demo_digests --update`` and says why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fingen.config import load_pipeline
from fingen.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fingen" / "_demo" / "demo.yaml"
STORED = ROOT / "tests" / "data" / "demo_digests.json"
OVERRIDES = ["llm.backend=fake", "llm.fake.handler=tests.fake_handlers:demo"]


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def canonical_digest(path: Path, run_dir: Path) -> str:
    """sha256 of a data file's content, independent of row order, float noise and of where
    the run directory and the checkout are (``source`` holds the input file's absolute path)."""
    text = path.read_text(encoding="utf-8").replace(str(run_dir.resolve()), "<run>")
    text = text.replace(str(run_dir), "<run>").replace(str(ROOT), "<root>")
    if path.suffix == ".jsonl":
        lines = sorted(
            json.dumps(_round(json.loads(ln)), sort_keys=True, ensure_ascii=False)
            for ln in text.splitlines()
            if ln.strip()
        )
    elif path.suffix == ".json":
        lines = [json.dumps(_round(json.loads(text)), sort_keys=True, ensure_ascii=False)]
    else:
        head, *rows = text.splitlines() or [""]
        lines = [head, *sorted(rows)]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def output_digests(run_dir: Path) -> dict[str, str]:
    """Digests of every data file of a run (stage files, failures, text exports)."""
    files = [*run_dir.glob("*.jsonl"), *run_dir.glob("exports/**/*.jsonl")]
    files += [*run_dir.glob("exports/**/*.tsv"), *run_dir.glob("*.report.json")]
    return {str(p.relative_to(run_dir)): canonical_digest(p, run_dir) for p in sorted(files)}


def demo_digests(run_dir: Path) -> dict[str, str]:
    run_pipeline(load_pipeline(DEMO, OVERRIDES), run_dir)
    return output_digests(run_dir)


def test_demo_outputs_match_the_stored_digests(tmp_path: Path) -> None:
    stored = json.loads(STORED.read_text(encoding="utf-8"))
    got = demo_digests(tmp_path / "run")
    assert sorted(got) == sorted(stored), "the demo writes other files than before"
    changed = [name for name in stored if got[name] != stored[name]]
    assert not changed, f"outputs changed: {changed}"
    assert len(got) > 30


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        digests = demo_digests(Path(tmp) / "run")
    if "--update" in sys.argv:
        STORED.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(digests, indent=1, sort_keys=True))
