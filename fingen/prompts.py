"""Prompt templates: Jinja files rendered in a sandbox, one per task and language.

A template defines ``{% block system %}`` (optional) and ``{% block user %}``; each block
becomes one chat message. Rendering happens in a ``SandboxedEnvironment`` with
``StrictUndefined``: document text is untrusted, and a missing variable is an error.

Search order for ``<task>.<lang>.jinja``: the directory given to ``set_prompt_dir`` (or
``FINGEN_PROMPTS``), ``./prompts``, then the copies packaged with fingen.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from fingen.errors import ConfigError

__all__ = [
    "PromptTemplate",
    "load_prompt",
    "localize_schema",
    "set_prompt_dir",
    "templates_digest",
]

_PACKAGED = [
    Path(__file__).resolve().parent / "_prompts",  # wheel install (force-included)
    Path(__file__).resolve().parents[1] / "prompts",  # source checkout / editable install
]
_env = SandboxedEnvironment(
    undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False
)
_lock = threading.Lock()
_cache: dict[Path, PromptTemplate] = {}
_compiled: dict[str, Any] = {}
_user_dir: Path | None = None


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template: its name, path, sha256 of the file and the compiled Jinja object."""

    name: str
    path: Path
    sha256: str
    source: str

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Render to chat messages (system if the block exists and is non-empty, then user)."""
        template = _compiled.get(self.sha256)
        if template is None:
            template = _compiled.setdefault(self.sha256, _env.from_string(self.source))
        ctx = template.new_context(variables)
        messages = []
        try:
            for role in ("system", "user"):
                block = template.blocks.get(role)
                if block is None:
                    continue
                text = "".join(block(ctx)).strip()
                if text:
                    messages.append({"role": role, "content": text})
        except TemplateError as exc:
            raise ConfigError(f"cannot render: {exc}", where=f"prompt {self.path}") from exc
        if not messages or messages[-1]["role"] != "user":
            raise ConfigError("template has no non-empty 'user' block", where=str(self.path))
        return messages

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def set_prompt_dir(path: str | Path | None) -> None:
    """Use templates from ``path`` first (user-edited copies); None resets."""
    global _user_dir
    with _lock:
        _user_dir = Path(path) if path else None
        _cache.clear()


def _search_dirs() -> list[Path]:
    dirs: list[Path] = []
    if _user_dir is not None:
        dirs.append(_user_dir)
    if env := os.environ.get("FINGEN_PROMPTS"):
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "prompts")
    dirs.extend(_PACKAGED)
    return dirs


def load_prompt(task: str, lang: str = "en") -> PromptTemplate:
    """Find and load ``<task>.<lang>.jinja`` (falls back to ``en``); tasks load their
    template once, at construction, and report its sha256 to the run manifest."""
    candidates = [f"{task}.{lang}.jinja"] + ([f"{task}.en.jinja"] if lang != "en" else [])
    for name in candidates:
        for d in _search_dirs():
            path = d / name
            if path.is_file():
                with _lock:
                    tpl = _cache.get(path)
                    if tpl is None:
                        data = path.read_bytes()
                        source = data.decode("utf-8")
                        try:
                            _env.parse(source)
                        except TemplateError as exc:
                            raise ConfigError(f"template syntax: {exc}", where=str(path)) from exc
                        tpl = PromptTemplate(name, path, hashlib.sha256(data).hexdigest(), source)
                        _cache[path] = tpl
                return tpl
    raise ConfigError(f"no template {candidates[0]} in {[str(d) for d in _search_dirs()]}")


def templates_digest() -> str:
    """sha256 over every template that ``load_prompt`` would pick now (search order applied)
    and every ``schema.<lang>.json`` (all are merged): editing any of them changes it, so
    stages that may use it re-run."""
    chosen: dict[str, str] = {}
    for index, d in enumerate(reversed(_search_dirs())):  # later dirs first: earlier ones win
        if d.is_dir():
            for path in d.glob("*.jinja"):
                chosen[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
            for path in d.glob(_SCHEMA_TABLE.format(lang="*")):
                chosen[f"{index}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    blob = "\n".join(f"{name} {digest}" for name, digest in sorted(chosen.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


_SCHEMA_TABLE = "schema.{lang}.json"
_tables: dict[tuple[Path, int, int], dict[str, str]] = {}


def _plain(text: str) -> str:
    return " ".join(text.split())


def _read_table(path: Path) -> dict[str, str]:
    """One ``schema.<lang>.json`` (English description -> translation), cached per file
    version (path, mtime, size)."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _lock:
        table = _tables.get(key)
    if table is not None:
        return table
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read schema translations: {exc}", where=str(path)) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError("expected a JSON object of strings (English -> translation)",
                          where=str(path))  # fmt: skip
    table = {_plain(k): v for k, v in data.items()}
    with _lock:
        _tables[key] = table
    return table


def _base_lang(lang: str) -> str:
    return lang.lower().replace("_", "-").split("-")[0] or "en"


def _schema_table(lang: str) -> dict[str, str]:
    """Description translations for ``lang`` ({} for English): every ``schema.<lang>.json``
    on the template search path, merged so that earlier directories win entry by entry (a
    user's file needs only the entries it changes)."""
    base = _base_lang(lang)
    if base == "en":
        return {}
    merged: dict[str, str] = {}
    for d in reversed(_search_dirs()):
        path = d / _SCHEMA_TABLE.format(lang=base)
        if path.is_file():
            merged.update(_read_table(path))
    return merged


def localize_schema(schema: dict[str, Any], lang: str) -> dict[str, Any]:
    """The JSON schema a model is shown for ``lang``: pydantic's auto-generated ``title`` keys
    dropped (noise in a prompt); for other languages than English, every ``description``
    replaced by its translation from ``schema.<lang>.json`` (found like the templates; a
    description without one stays as is), and ``$ref``s to ``$defs`` inlined so the model sees
    no English class names (recursive definitions keep their ``$ref``)."""
    localized = _base_lang(lang) != "en"
    table = _schema_table(lang)
    defs = schema.get("$defs") if localized else None
    defs = defs if isinstance(defs, dict) else {}
    kept_refs = False

    def walk(node: Any, inlining: tuple[str, ...] = ()) -> Any:  # a schema node
        nonlocal kept_refs
        if isinstance(node, list):
            return [walk(v, inlining) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if defs and isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref[len("#/$defs/") :]
            if name in defs and name not in inlining:
                target = walk(defs[name], (*inlining, name))
                rest = walk({k: v for k, v in node.items() if k != "$ref"}, inlining)
                return {**target, **rest}
            kept_refs = True
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if key == "description" and isinstance(value, str) and localized:
                out[key] = table.get(_plain(value), value)
            elif key == "$defs" and value is defs:  # kept only for recursive definitions
                out[key] = {name: walk(sub, (name,)) for name, sub in value.items()}
            elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                out[key] = {name: walk(sub, inlining) for name, sub in value.items()}
            else:
                out[key] = walk(value, inlining)
        return out

    result: dict[str, Any] = walk(schema)
    if defs and not kept_refs:
        result.pop("$defs", None)
    return result
