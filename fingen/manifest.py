"""The run manifest's derived parts: package versions, usage totals, summary-table rows."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

__all__ = ["VERSIONED", "summary_rows", "totals", "versions"]

VERSIONED = [
    "fingen",
    "pydantic",
    "jinja2",
    "aiohttp",
    "tenacity",
    "datasets",
    "sentence-transformers",
    "torch",
    "llama_cpp_python",
    "bertopic",
    "vllm",
    "ray",
]
_USAGE = ("requests", "cached", "prompt_tokens", "completion_tokens", "cost")


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that shape a run's outputs."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def totals(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Usage and failures of all stages (what the outputs cost); ``this_run`` leaves out
    stages resumed from an earlier run (what this invocation spent)."""

    def add(entries: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(_USAGE[:-1], 0)
        out.update(cost=0.0, failed=0, rejected_rows=0)
        for entry in entries:
            usage = entry.get("usage", {})
            for k in _USAGE:
                out[k] += usage.get(k, 0)
            out["failed"] += entry.get("failed", 0)
            out["rejected_rows"] += entry.get("rejected_rows", 0)
        out["cost"] = round(out["cost"], 6)
        return out

    result = add(list(stages.values()))
    result["this_run"] = add([e for e in stages.values() if not e.get("resumed")])
    names = {n for e in stages.values() for n in e.get("usage_by_model", {})}
    result["by_model"] = {
        name: add([{"usage": e["usage_by_model"][name]} for e in stages.values()
                   if name in e.get("usage_by_model", {})])
        for name in sorted(names)
    }  # fmt: skip
    return result


def summary_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """End-of-run table rows: stage, in, ok, failed, rejected, outputs, cached, requests, tokens, time."""
    rows = []
    for key, e in manifest.get("stages", {}).items():
        u = e.get("usage", {})
        outs = "\n".join(f"{k}={v}" for k, v in e.get("outputs", {}).items() if k != "failures")
        rows.append(
            [
                key
                + (" (resumed)" if e.get("resumed") else "")
                + (f" [self-judged: {e['self_judged']}]" if e.get("self_judged") else ""),
                str(e.get("inputs", 0)),
                str(e.get("succeeded", 0)),
                str(e.get("failed", 0)),
                str(e.get("rejected_rows", 0)),
                outs,
                str(u.get("cached", 0)),
                str(u.get("requests", 0)),
                str(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)),
                f"{e.get('wall_s', 0):.1f}s",
            ]
        )
    return rows
