"""Publish a run to the Hugging Face Hub: a hub-ready folder, then ``upload_folder``.

``<run>/hub/`` holds parquet tables per config and split (``data/<config>/<split>-*.parquet``,
written with ``datasets`` and explicit Features) and ``README.md``, a dataset card whose YAML
lists the configs, so ``datasets.load_dataset(folder, config, split=...)`` loads every table
back unchanged.

The folder is also an MTEB / BEIR-on-the-Hub retrieval dataset (``mteb_task``):

=================  ===========  ================================================================
config             splits       rows
=================  ===========  ================================================================
``default``        ``train``,   qrels ``query-id``, ``corpus-id``, ``score``: the positives
                   ``dev``,     (``relevance.min_positive``, score 1) of each split's queries;
                   ``test``     splits by source document (``fingen.splits``), empty ones left out
``corpus``         ``corpus``   ``_id``, ``title``, ``text``, ``doc_id``, ``order`` (no nulls)
``queries``        ``queries``  ``_id``, ``text``, ``level``, ``lang``, ``origin``, ``split``
                                (no nulls)
``queries_meta``   ``queries``  the queries with ``answer``, ``evidence`` (null when none) and
                                their source passage and document ids
=================  ===========  ================================================================

Every other config has one ``train`` split: per label file of the BEIR export
(``fingen.labels``: ``all``, ``<level>_level``, ``<level>_level_extended``,
``train``/``dev``/``test``) a binary table ``qrels_<file>`` (positives, score 1) and a graded
table ``qrels_<file>_graded`` (every label with its 0-2 grade), each with kind, judge and
rationale; ``negatives`` (verified negatives, grade 0), ``sft``, ``dpo``, ``rl``. Empty tables
are left out, and so are labels whose passage is not in the corpus.

Example::

    result = publish_run("outputs/demo/run1", "my-org/fin-retrieval", dry_run=True)
    result.folder, result.configs        # Path(.../hub), {"default": 90, "corpus": 120, ...}
    result.splits["default"]             # {"train": 80, "dev": 10}
    task = mteb_task(result.folder, split="dev")   # needs the optional package mteb
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fingen.errors import InputError, MissingExtraError, PublishError
from fingen.export.card import MTEB_LANGS, Licences, render_card
from fingen.labels import label_files
from fingen.run import RunData, load_run
from fingen.splits import SPLITS, SplitConfig, assign_splits

__all__ = [
    "REPO_ID_RE",
    "PublishResult",
    "build_hub_folder",
    "hub_features",
    "hub_tables",
    "mteb_task",
    "publish_run",
    "render_card",
]

log = logging.getLogger(__name__)
REPO_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
SHARD_ROWS = 100_000
# column -> record attribute, per kind of table
_CORPUS = {"_id": "passage_id", "title": "title", "text": "text", "doc_id": "doc_id"}
_QUERY = {"_id": "query_id", "text": "text", "level": "level", "lang": "lang", "origin": "origin"}
_QUERY_MORE = ("answer", "evidence", "source_passage_ids", "source_doc_ids")
_QREL = {"query-id": "query_id", "corpus-id": "passage_id", "score": "score", "kind": "kind"}
_QREL_MORE = ("judge", "rationale")
_INTS, _LISTS = {"order", "score"}, {"source_passage_ids", "source_doc_ids"}
#: the split of each single-split config (every other config: "train")
CONFIG_SPLIT = {"corpus": "corpus", "queries": "queries", "queries_meta": "queries"}
Tables = dict[str, dict[str, list[dict[str, Any]]]]  # config -> split -> rows


@dataclass
class PublishResult:
    """What ``publish_run`` did: the folder, rows per config, and the upload (if any)."""

    folder: Path
    repo_id: str
    configs: dict[str, int] = field(default_factory=dict)  # rows per config (all splits)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    uploaded: bool = False
    url: str | None = None


def _columns(name: str) -> list[str]:
    if name == "corpus":
        return [*_CORPUS, "order"]
    if name == "queries":
        return [*_QUERY, "split"]
    if name == "queries_meta":
        return [*_QUERY, *_QUERY_MORE, "split"]
    if name == "default":
        return ["query-id", "corpus-id", "score"]
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


def _tables(data: RunData, titles: dict[str, str] | None) -> tuple[Tables, dict[str, str]]:
    """(config -> split -> rows of every non-empty table, document -> split)."""
    titles = titles if titles is not None else {d.doc_id: d.title for d in data.documents()}
    corpus = sorted(data.passages(), key=lambda p: (p.doc_id, p.order, p.passage_id))
    queries = list(data.queries.values())
    config = SplitConfig.model_validate(data.manifest.get("config", {}).get("split", {}))
    doc_split, split_of = assign_splits(queries, corpus, config)
    meta = [_row(q, _QUERY, _QUERY_MORE) for q in queries]
    for row in meta:
        row["split"] = split_of.get(row["_id"], "train")
    flat: dict[str, list[dict[str, Any]]] = {
        "corpus": [
            {**_row(p, _CORPUS), "title": p.title or titles.get(p.doc_id) or "", "order": p.order}
            for p in corpus
        ],
        "queries": [{c: r[c] for c in _columns("queries")} for r in meta],
        "queries_meta": meta,
    }
    ids = {p["_id"] for p in flat["corpus"]}
    in_corpus = [r for r in data.qrels if r.passage_id in ids]
    default: dict[str, list[dict[str, Any]]] = {}
    for name, labels in label_files(queries, in_corpus, splits=split_of).items():
        positives = [r for r in labels if data.rule.is_positive(r)]
        flat[f"qrels_{name}"] = [{**_row(r, _QREL, _QREL_MORE), "score": 1} for r in positives]
        flat[f"qrels_{name}_graded"] = [_row(r, _QREL, _QREL_MORE) for r in labels]
        if name in SPLITS:
            default[name] = [
                {"query-id": r.query_id, "corpus-id": r.passage_id, "score": 1} for r in positives
            ]
    flat["negatives"] = [_row(r, _QREL, _QREL_MORE) for r in data.negatives if r.passage_id in ids]
    flat["sft"] = [
        {
            "messages": [
                {"role": m.get("role", ""), "content": m.get("content", "")} for m in r.messages
            ],
            "source": r.source,
            "qa_id": r.qa_id,
        }
        for r in data.sft
    ]
    flat["dpo"] = [r.model_dump() for r in data.dpo]
    flat["rl"] = [r.model_dump() for r in data.rl]
    tables: Tables = {"default": {s: default[s] for s in SPLITS if default.get(s)}}
    tables.update({name: {CONFIG_SPLIT.get(name, "train"): rows} for name, rows in flat.items()})
    tables = {n: {s: rows for s, rows in t.items() if rows} for n, t in tables.items()}
    return {n: t for n, t in tables.items() if t}, doc_split


def hub_tables(data: RunData, titles: dict[str, str] | None = None) -> Tables:
    """Rows of every non-empty config per split, in a stable order (see the module doc)."""
    return _tables(data, titles)[0]


def _write_table(folder: Path, name: str, split: str, rows: list[dict[str, Any]]) -> None:
    import datasets

    ds = datasets.Dataset.from_list(rows, features=hub_features(name))
    n = max(1, math.ceil(len(rows) / SHARD_ROWS))
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per tiny shard is noise
    try:
        for k in range(n):
            path = folder / "data" / name / f"{split}-{k:05d}-of-{n:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.shard(n, k, contiguous=True).to_parquet(str(path))
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def build_hub_folder(run_dir: str | Path, repo_id: str) -> tuple[Path, dict[str, dict[str, int]]]:
    """Write ``<run>/hub/`` (parquet tables + README.md); returns it and rows per config and
    split."""
    data = load_run(run_dir)
    titles: dict[str, str] = {}
    langs: set[str] = set()
    licences = Licences()
    for d in data.documents():
        titles[d.doc_id] = d.title
        langs.add(d.lang)
        licences.add(d.meta)
    langs |= {q.lang for q in data.queries.values()}
    tables, doc_split = _tables(data, titles)
    if not tables:
        raise PublishError(f"{data.root}: nothing to publish (no passages, queries or records)")
    # the temporary folder is not named "*.tmp": RunStore unlinks those files at start
    final, tmp = data.root / "hub", data.root / ".hub-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, splits in tables.items():
        for split, rows in splits.items():
            _write_table(tmp, name, split, rows)
    tmp.mkdir(parents=True, exist_ok=True)
    card = render_card(data, repo_id, tables, langs, licences, doc_split=doc_split)
    (tmp / "README.md").write_text(card, "utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, {n: {s: len(rows) for s, rows in t.items()} for n, t in tables.items()}


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
    folder, splits = build_hub_folder(run_dir, repo_id)
    configs = {name: sum(counts.values()) for name, counts in splits.items()}
    result = PublishResult(folder, repo_id, configs, splits)
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


# --- MTEB -----------------------------------------------------------------------------------


def _mteb_lang(code: str) -> str:
    if code in MTEB_LANGS:
        return MTEB_LANGS[code]
    try:  # a private helper of mteb; a missing one only means the code must be given
        from mteb.languages.iso_mappings import _hf_lang_to_iso_lang_script

        found = _hf_lang_to_iso_lang_script(code)
    except (ImportError, AttributeError):
        found = None
    if not found:
        raise InputError(f"no MTEB language code for {code!r}: pass eval_langs=['xxx-Xxxx']")
    return str(found)


def _read_card_meta(folder: Path) -> dict[str, Any]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    return meta if isinstance(meta, dict) else {}


def mteb_task(
    folder: str | Path,
    name: str = "FingenRetrieval",
    split: str | Sequence[str] = "dev",
    *,
    eval_langs: Sequence[str] | None = None,
    description: str | None = None,
) -> Any:
    """An MTEB retrieval task (an ``AbsTaskRetrieval`` subclass instance) over a hub folder.

    ``folder`` is a hub folder (``publish_run(..., dry_run=True).folder``) or a run directory
    holding one (``<run>/hub``). The task reads the ``default`` (qrels of ``split``),
    ``corpus`` and ``queries`` configs; its languages come from the card (``eval_langs``
    overrides them), its main score is ``ndcg_at_10``. Needs the optional package ``mteb``.

    Example::

        import mteb
        results = mteb.evaluate(model, [mteb_task("outputs/demo/run1/hub")], cache=None)

    Raises:
        InputError: no hub folder there, or it has no qrels for ``split``.
        MissingExtraError: mteb is not installed.
    """
    root = Path(folder)
    if not (root / "README.md").is_file() and (root / "hub" / "README.md").is_file():
        root = root / "hub"
    if not (root / "README.md").is_file():
        raise InputError("not a hub folder (no README.md; run `fingen publish --dry-run`)",
                         path=str(root))  # fmt: skip
    meta = _read_card_meta(root)
    have = [
        f["split"]
        for c in meta.get("configs", [])
        if c.get("config_name") == "default"
        for f in c.get("data_files", [])
    ]
    wanted = [split] if isinstance(split, str) else list(split)
    missing = [s for s in wanted if s not in have]
    if not wanted or missing:
        raise InputError(
            f"no qrels for split {', '.join(missing) or '(none asked)'}: the folder's splits "
            f"are {', '.join(have) or 'none'} (empty splits are left out)",
            path=str(root),
        )
    try:
        from mteb.abstasks.retrieval import AbsTaskRetrieval
        from mteb.abstasks.task_metadata import TaskMetadata
    except ImportError as exc:
        raise MissingExtraError("mteb", "train", "fingen.export.hub.mteb_task") from exc
    langs = list(eval_langs or [_mteb_lang(str(c)) for c in meta.get("language") or ["en"]])
    about = description or (
        f"fingen retrieval dataset {meta.get('pretty_name') or root.parent.name}: synthetic "
        "financial queries, passages of the source documents as corpus, binary qrels."
    )
    metadata = TaskMetadata(
        name=name,
        description=about,
        dataset={"path": str(root.resolve()), "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=wanted,
        eval_langs=langs,
        main_score="ndcg_at_10",
        domains=["Financial", "Written"],
        annotations_creators="LM-generated",
        sample_creation="LM-generated and verified",
    )
    cls_name = re.sub(r"\W", "", name) or "FingenRetrieval"
    task_class = type(cls_name, (AbsTaskRetrieval,), {"metadata": metadata, "__module__": __name__})
    return task_class()
