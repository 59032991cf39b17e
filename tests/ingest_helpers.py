"""Shared helpers of the loader tests (tests/test_ingest*.py): sample texts, file writers."""

from __future__ import annotations

import json
from pathlib import Path

from fingen.ingest import IngestOptions, load_documents
from fingen.records import Document, Failure

__all__ = [
    "EN_TEXT",
    "ZH_TEXT",
    "only_doc",
    "only_failure",
    "write",
    "write_bytes",
    "write_jsonl",
]

ZH_TEXT = "公司发布提价公告，提价幅度在6.45%-15.04%之间。我们维持增持评级。"
EN_TEXT = "Revenue rose 5% in 2023. Operating margin improved to 21.4%."


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def only_doc(path: Path, **opts: object) -> Document:
    docs, failures = load_documents(path, options=IngestOptions(**opts))
    assert failures == [] and len(docs) == 1
    return docs[0]


def only_failure(path: Path, **opts: object) -> Failure:
    docs, failures = load_documents(path, options=IngestOptions(**opts))
    assert docs == [] and len(failures) == 1
    assert failures[0].stage == "ingest"
    return failures[0]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return path
