"""The public API is explicit: ``__all__`` lists exactly the public names."""

from __future__ import annotations

import importlib
import pkgutil

import fingen


def test_all_matches_public_names() -> None:
    public = {n for n in dir(fingen) if not n.startswith("_")} - {"annotations"}
    submodules = {m.name for m in pkgutil.iter_modules(fingen.__path__)}
    assert set(fingen.__all__) - {"__version__"} >= public - submodules
    for name in fingen.__all__:
        assert getattr(fingen, name) is not None


def test_every_module_declares_all() -> None:
    missing = []
    for mod in pkgutil.walk_packages(fingen.__path__, "fingen."):
        if mod.name.endswith("__main__") or ".vllm_engine" in mod.name:
            continue
        module = importlib.import_module(mod.name)
        if not hasattr(module, "__all__"):
            missing.append(mod.name)
    assert not missing, f"modules without __all__: {missing}"


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, fingen; print(any(m in sys.modules for m in ('torch', 'sentence_transformers', 'datasets', 'aiohttp')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
