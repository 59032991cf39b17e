"""Publish a run to the Hugging Face Hub: a hub-ready folder, then ``upload_folder``.

``<run>/hub/`` holds one parquet table per config (``data/<config>/train-*.parquet``, written
with ``datasets`` and explicit Features) and ``README.md``, a dataset card whose YAML lists
the configs, so ``datasets.load_dataset(folder, config)`` loads every table back unchanged.

Configs (empty tables are left out), with the label files of the BEIR export
(``fingen.labels``): ``corpus``, ``queries`` (with their split), and per label file (``all``,
``<level>_level``, ``<level>_level_extended``, ``train``/``dev``/``test``) a binary table
``qrels_<file>`` (the positives under ``relevance.min_positive``, score 1) and a graded table
``qrels_<file>_graded`` (every label with its 0-2 grade); each with kind, judge and
rationale. ``negatives`` (verified negatives, grade 0), ``sft``, ``dpo``, ``rl``. Labels whose
passage is not in the corpus are left out.

Example::

    result = publish_run("outputs/demo/run1", "my-org/fin-retrieval", dry_run=True)
    result.folder, result.configs        # Path(.../hub), {"corpus": 120, "queries": 80, ...}
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fingen.errors import PublishError
from fingen.export.card import render_card
from fingen.labels import label_files
from fingen.run import RunData, load_run
from fingen.splits import SplitConfig, assign_splits

__all__ = [
    "REPO_ID_RE",
    "PublishResult",
    "build_hub_folder",
    "hub_features",
    "hub_tables",
    "publish_run",
    "render_card",
]

log = logging.getLogger(__name__)
REPO_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
SHARD_ROWS = 100_000
# column -> record attribute, per kind of table
_CORPUS = {"_id": "passage_id", "doc_id": "doc_id", "title": "title", "text": "text"}
_QUERY = {"_id": "query_id", "text": "text", "level": "level", "lang": "lang", "origin": "origin"}
_QUERY_MORE = ("answer", "evidence", "source_passage_ids", "source_doc_ids")
_QREL = {"query-id": "query_id", "corpus-id": "passage_id", "score": "score", "kind": "kind"}
_QREL_MORE = ("judge", "rationale")
_INTS, _LISTS = {"order", "score"}, {"source_passage_ids", "source_doc_ids"}


@dataclass
class PublishResult:
    """What ``publish_run`` did: the folder, rows per config, and the upload (if any)."""

    folder: Path
    repo_id: str
    configs: dict[str, int] = field(default_factory=dict)
    uploaded: bool = False
    url: str | None = None


def _columns(name: str) -> list[str]:
    if name == "corpus":
        return [*_CORPUS, "order"]
    if name == "queries":
        return [*_QUERY, *_QUERY_MORE, "split"]
    if name == "sft":
        return ["messages", "source", "qa_id"]
    if name == "dpo":
        return ["prompt", "chosen", "rejected", "rejected_reason", "qa_id"]
    if name == "rl":
        return ["prompt", "answer", "source", "qa_id"]
    return [*_QREL, *_QREL_MORE]  # qrels_* and negatives


def hub_features(name: str) -> Any:
    """The explicit ``datasets.Features`` of config ``name``."""
    from datasets import Features, Value

    s = Value("string")

    def kind(col: str) -> Any:
        if col == "messages":
            return [{"role": s, "content": s}]
        return Value("int32") if col in _INTS else [s] if col in _LISTS else s

    return Features({col: kind(col) for col in _columns(name)})


def _row(rec: BaseModel, names: dict[str, str], more: tuple[str, ...] = ()) -> dict[str, Any]:
    return {col: getattr(rec, attr) for col, attr in {**names, **{m: m for m in more}}.items()}


def hub_tables(data: RunData, titles: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Rows of every non-empty config, in a stable order (see the module doc)."""
    titles = titles if titles is not None else {d.doc_id: d.title for d in data.documents()}
    corpus = sorted(data.passages(), key=lambda p: (p.doc_id, p.order, p.passage_id))
    tables: dict[str, list[dict[str, Any]]] = {
        "corpus": [
            {**_row(p, _CORPUS), "title": p.title or titles.get(p.doc_id, ""), "order": p.order}
            for p in corpus
        ],
        "queries": [_row(q, _QUERY, _QUERY_MORE) for q in data.queries.values()],
    }
    queries = list(data.queries.values())
    config = SplitConfig.model_validate(data.manifest.get("config", {}).get("split", {}))
    _, split_of = assign_splits(queries, corpus, config)
    for row in tables["queries"]:
        row["split"] = split_of.get(row["_id"], "train")
    ids = {p["_id"] for p in tables["corpus"]}
    in_corpus = [r for r in data.qrels if r.passage_id in ids]
    for name, labels in label_files(queries, in_corpus, splits=split_of).items():
        tables[f"qrels_{name}"] = [
            {**_row(r, _QREL, _QREL_MORE), "score": 1} for r in labels if data.rule.is_positive(r)
        ]
        tables[f"qrels_{name}_graded"] = [_row(r, _QREL, _QREL_MORE) for r in labels]
    tables["negatives"] = [
        _row(r, _QREL, _QREL_MORE) for r in data.negatives if r.passage_id in ids
    ]
    tables["sft"] = [
        {
            "messages": [
                {"role": m.get("role", ""), "content": m.get("content", "")} for m in r.messages
            ],
            "source": r.source,
            "qa_id": r.qa_id,
        }
        for r in data.sft
    ]
    tables["dpo"] = [r.model_dump() for r in data.dpo]
    tables["rl"] = [r.model_dump() for r in data.rl]
    return {name: t for name, t in tables.items() if t}


def _write_table(folder: Path, name: str, rows: list[dict[str, Any]]) -> None:
    import datasets

    ds = datasets.Dataset.from_list(rows, features=hub_features(name))
    n = max(1, math.ceil(len(rows) / SHARD_ROWS))
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per tiny shard is noise
    try:
        for k in range(n):
            path = folder / "data" / name / f"train-{k:05d}-of-{n:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.shard(n, k, contiguous=True).to_parquet(str(path))
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def build_hub_folder(run_dir: str | Path, repo_id: str) -> tuple[Path, dict[str, int]]:
    """Write ``<run>/hub/`` (parquet tables + README.md); returns it and rows per config."""
    data = load_run(run_dir)
    titles: dict[str, str] = {}
    langs: set[str] = set()
    licences: Counter[str] = Counter()
    for d in data.documents():
        titles[d.doc_id] = d.title
        langs.add(d.lang)
        if lic := d.meta.get("license") or d.meta.get("licence"):
            licences[str(lic)] += 1
    langs |= {q.lang for q in data.queries.values()}
    tables = hub_tables(data, titles)
    if not tables:
        raise PublishError(f"{data.root}: nothing to publish (no passages, queries or records)")
    # the temporary folder is not named "*.tmp": RunStore unlinks those files at start
    final, tmp = data.root / "hub", data.root / ".hub-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, rows in tables.items():
        _write_table(tmp, name, rows)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "README.md").write_text(render_card(data, repo_id, tables, langs, licences), "utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, {name: len(rows) for name, rows in tables.items()}


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(constants.HF_HUB_OFFLINE)


def publish_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token_env: str = "HF_TOKEN",
) -> PublishResult:
    """Build ``<run>/hub/`` and upload it as dataset ``repo_id`` (token from ``$token_env``).

    Raises:
        PublishError: bad repo id (checked first), no token, offline, or the upload failed;
            the folder is kept. The token never appears in messages, logs or files.
    """
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id):
        raise PublishError(f"bad repo id {repo_id!r}: expected ORG/NAME (letters, digits, _ . -)")
    if not Path(run_dir).is_dir():
        raise PublishError(f"{run_dir}: not a run directory")
    folder, configs = build_hub_folder(run_dir, repo_id)
    result = PublishResult(folder, repo_id, configs)
    log.info("hub folder ready: %s (%s)", folder, ", ".join(f"{k}={v}" for k, v in configs.items()))
    if dry_run:
        return result
    token = os.environ.get(token_env, "").strip()
    kept = f"the folder is kept at {folder}"
    if not token:
        raise PublishError(f"no token: set the environment variable {token_env}; {kept}")
    if _offline():
        raise PublishError(f"cannot upload: offline mode (HF_HUB_OFFLINE) is on; {kept}")
    try:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        message = "Upload dataset generated with fingen"
        api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(folder), commit_message=message
        )
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}".replace(token, "***")[:300]
        what = "offline mode" if type(exc).__name__ == "OfflineModeIsEnabled" else "upload failed"
        raise PublishError(f"cannot publish {repo_id}: {what} ({detail}); {kept}") from None
    result.uploaded, result.url = True, str(getattr(repo, "url", repo))
    log.info("published %s", result.url)
    return result
