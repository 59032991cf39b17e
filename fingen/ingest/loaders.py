"""Stream `Document` records out of files, directories and Hugging Face datasets.

Everything is lazy: one file (or one row) is read at a time. A bad file or row becomes a
`Failure(stage="ingest", ...)` in the same stream; only a missing input path raises
(`InputError`). IDs are content hashes of (relative path or dataset name, position, text).

Example::

    from fingen.ingest import FINANCEBENCH_FIELDS, IngestOptions, load_documents

    docs, failures = load_documents(
        "../shared/data/financebench_pages/pages.jsonl.gz",
        options=IngestOptions(fields=FINANCEBENCH_FIELDS, limit=100),
    )
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fingen.errors import DocumentError, InputError, MissingExtraError
from fingen.ingest.formats import READERS, Source, reader_for
from fingen.ingest.options import FieldMap, IngestOptions
from fingen.ingest.rows import row_to_document
from fingen.records import Document, Failure

__all__ = ["PathLike", "iter_documents", "iter_files", "load_documents", "load_hf"]

PathLike = str | os.PathLike[str]


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_files(root: Path) -> Iterator[Path]:
    """Files under `root`, recursively, in sorted order; hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _sources(roots: list[Path], options: IngestOptions) -> Iterator[Source | Failure]:
    for root in roots:
        if not root.is_dir():
            yield Source(path=root, key=root.name, options=options)
            continue
        for path in iter_files(root):
            if reader_for(path) is None:
                yield Failure(
                    stage="ingest",
                    item_id=str(path),
                    reason="unsupported_format",
                    detail=f"supported: {', '.join(sorted(READERS))}",
                )
            else:
                key = path.relative_to(root).as_posix()
                yield Source(path=path, key=key, options=options)


def _read(src: Source) -> Iterator[Document | Failure]:
    reader = reader_for(src.path)
    assert reader is not None
    try:
        yield from reader(src)
    except DocumentError as exc:
        yield Failure(stage="ingest", item_id=src.name, reason=exc.reason, detail=exc.detail)
    except OSError as exc:
        yield Failure(stage="ingest", item_id=src.name, reason="unreadable", detail=str(exc))


def _limited(
    items: Iterator[Document | Failure], limit: int | None
) -> Iterator[Document | Failure]:
    count = 0
    try:
        for item in items:
            yield item
            if isinstance(item, Document):
                count += 1
                if limit is not None and count >= limit:
                    return
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _iter_sources(roots: list[Path], options: IngestOptions) -> Iterator[Document | Failure]:
    for src in _sources(roots, options):
        if isinstance(src, Failure):
            yield src
        else:
            yield from _read(src)


def iter_documents(
    paths: PathLike | Iterable[PathLike], *, options: IngestOptions | None = None
) -> Iterator[Document | Failure]:
    """Stream documents (and failures) from files and directories.

    Formats by suffix: .txt, .md, .html/.htm, .pdf, .jsonl/.jsonl.gz/.ndjson, .csv.
    Directories are walked recursively in sorted order; other files there become
    `Failure(reason="unsupported_format")`.

    Args:
        paths: one path or several (files or directories).
        options: field mapping, forced language, `max_bytes`, `limit`.

    Returns:
        A lazy iterator of `Document` and `Failure` records, in input order.

    Raises:
        InputError: a path does not exist, or a file given by name has an unsupported suffix
            (raised at call time, before iteration).
    """
    opts = options or IngestOptions()
    roots = _as_paths(paths)
    if not roots:
        raise InputError("no input paths given")
    for root in roots:
        if not root.exists():
            raise InputError("no such file or directory", path=str(root))
        if root.is_file() and reader_for(root) is None:
            raise InputError(
                f"unsupported file type; supported: {', '.join(sorted(READERS))}", path=str(root)
            )
    return _limited(_iter_sources(roots, opts), opts.limit)


def load_documents(
    paths: PathLike | Iterable[PathLike], *, options: IngestOptions | None = None
) -> tuple[list[Document], list[Failure]]:
    """Read everything `iter_documents` yields into (documents, failures)."""
    docs: list[Document] = []
    failures: list[Failure] = []
    for item in iter_documents(paths, options=options):
        (docs if isinstance(item, Document) else failures).append(item)  # type: ignore[arg-type]
    return docs, failures


_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def load_hf(
    name_or_path: PathLike,
    split: str = "train",
    fields: FieldMap | None = None,
    *,
    options: IngestOptions | None = None,
) -> Iterator[Document | Failure]:
    """Stream documents from a Hugging Face dataset, hub name or local (offline-friendly).

    A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is opened with
    `datasets.load_from_disk`; anything else (a folder of data files, or a hub name) goes to
    `datasets.load_dataset(..., streaming=True)`.

    Args:
        name_or_path: hub dataset name, saved dataset folder or data-files folder.
        split: which split to read.
        fields: column mapping (default: `options.fields`).
        options: forced language and `limit`.

    Raises:
        MissingExtraError: `datasets` is not installed.
        InputError: the dataset or split cannot be opened (at call time).
    """
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError("datasets", "hf", "Loading a Hugging Face dataset") from exc
    opts = options or IngestOptions()
    fmap = fields or opts.fields
    path = Path(name_or_path)
    key = path.name if path.exists() else str(name_or_path)
    if path.is_dir() and any((path / marker).exists() for marker in _SAVED_MARKERS):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise InputError(f"no split {split!r}; has {sorted(ds)}", path=str(path))
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(str(name_or_path), split=split, streaming=True)
        except Exception as exc:  # datasets raises many types (offline, not found, bad split)
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise InputError(f"cannot open dataset: {detail}", path=str(name_or_path)) from exc
    rows = _hf_rows(ds, fmap, source=str(name_or_path), key=f"{key}:{split}", lang=opts.lang)
    return _limited(rows, opts.limit)


def _hf_rows(
    ds: Iterable[dict], fields: FieldMap, *, source: str, key: str, lang: str | None
) -> Iterator[Document | Failure]:
    i = -1
    try:
        for i, row in enumerate(ds):
            item_id = f"{key}:{i}"
            yield row_to_document(
                row, fields, source=source, id_key=key, position=i, item_id=item_id, lang=lang
            )
    except Exception as exc:  # a corrupt shard ends this dataset, not the run
        detail = f"{type(exc).__name__}: {exc}"[:300]
        yield Failure(stage="ingest", item_id=f"{key}:{i + 1}", reason="unreadable", detail=detail)
