"""One reader per file format: `reader(source) -> Iterator[Document | Failure]`.

Single-document formats (txt, md, html, pdf) read one file into one `Document`; row formats
(jsonl, jsonl.gz, csv) stream one row at a time. A reader raises `DocumentError` for a bad
file; `fingen.ingest.loaders` turns that into a `Failure`.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fingen.errors import DocumentError, MissingExtraError
from fingen.ingest.decoding import decode_bytes, detect_lang
from fingen.ingest.markup import html_to_text, markdown_title, split_front_matter
from fingen.ingest.options import IngestOptions
from fingen.ingest.rows import row_to_document
from fingen.records import Document, Failure, content_id

__all__ = ["READERS", "Reader", "Source", "reader_for"]

_DOC_KEYS = ("title", "date", "industry", "company", "doc_type", "lang")


@dataclass(frozen=True)
class Source:
    """One input file: `path` to open, `key` (stable, relative) hashed into IDs."""

    path: Path
    key: str
    options: IngestOptions

    @property
    def name(self) -> str:
        return str(self.path)


Reader = Callable[[Source], Iterator[Document | Failure]]


def _read_small(src: Source) -> str:
    size = src.path.stat().st_size
    if size > src.options.max_bytes:
        raise DocumentError(
            "too_large", source=src.name, detail=f"{size} bytes > max_bytes {src.options.max_bytes}"
        )
    return decode_bytes(src.path.read_bytes(), source=src.name)


def _document(src: Source, text: str, *, title: str | None, **extra: Any) -> Document:
    if not text.strip():
        raise DocumentError("empty", source=src.name, detail="no text after extraction")
    lang = src.options.lang or extra.pop("lang", None) or detect_lang(text)
    return Document(
        doc_id=content_id(src.key, 0, text),
        title=title or src.path.stem,
        text=text,
        lang=str(lang),
        source=src.name,
        **extra,
    )


def read_text(src: Source) -> Iterator[Document | Failure]:
    """A plain-text file; title = file stem."""
    yield _document(src, _read_small(src).strip(), title=None)


def read_markdown(src: Source) -> Iterator[Document | Failure]:
    """Markdown; YAML front matter fills title/date/industry/company/doc_type/lang.

    Title: front matter, else the first "# " heading, else the file stem. Other front matter
    keys go to `meta`.
    """
    front, body, error = split_front_matter(_read_small(src))
    fields = {k: str(front.pop(k)) for k in _DOC_KEYS if front.get(k) is not None}
    meta: dict[str, Any] = {
        k: v if isinstance(v, int | float | bool) else str(v) for k, v in front.items()
    }
    if error:
        meta["front_matter_error"] = error
    body = body.strip()
    title = fields.pop("title", None) or markdown_title(body)
    yield _document(src, body, title=title, meta=meta, **fields)


def read_html(src: Source) -> Iterator[Document | Failure]:
    """HTML: visible text (scripts and styles dropped); title from <title>."""
    text, title = html_to_text(_read_small(src))
    yield _document(src, text, title=title)


def read_pdf(src: Source) -> Iterator[Document | Failure]:
    """PDF via pypdf: one Document, pages joined with a blank line.

    `meta["page_starts"]` holds the character offset of each page in the text.
    """
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise MissingExtraError("pypdf", "pdf", "Reading PDF files") from exc
    size = src.path.stat().st_size
    if size > src.options.max_bytes:
        raise DocumentError("too_large", source=src.name, detail=f"{size} bytes")
    try:
        reader = PdfReader(src.path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("malformed_pdf", source=src.name, detail="encrypted")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many exception types on broken files
        raise DocumentError(
            "malformed_pdf", source=src.name, detail=f"{type(exc).__name__}: {exc}"[:300]
        ) from None
    starts, offset = [], 0
    for text in pages:
        starts.append(offset)
        offset += len(text) + 2
    meta = {"pages": len(pages), "page_starts": starts}
    yield _document(src, "\n\n".join(pages), title=str(meta_title or "") or None, meta=meta)


def _gzip_or_plain(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def read_jsonl(src: Source) -> Iterator[Document | Failure]:
    """JSON Lines (optionally gzipped), one object per line, mapped by `options.fields`.

    Bad lines become failures named "<path>:<line>" ("malformed_json", "missing_field",
    "empty", "too_large", "undecodable"); the rest of the file is still read.
    """
    opts, rows, lineno = src.options, 0, 0
    try:
        with _gzip_or_plain(src.path) as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                rows += 1
                item_id = f"{src.name}:{lineno}"
                if len(raw) > opts.max_bytes:
                    yield _fail(item_id, "too_large", f"line of {len(raw)} bytes")
                    continue
                try:
                    row = json.loads(decode_bytes(raw, source=item_id))
                except DocumentError as exc:
                    yield _fail(item_id, exc.reason, exc.detail)
                    continue
                except json.JSONDecodeError as exc:
                    yield _fail(item_id, "malformed_json", str(exc), raw[:200])
                    continue
                if not isinstance(row, dict):
                    detail = f"a JSON {type(row).__name__}, not an object"
                    yield _fail(item_id, "malformed_json", detail, raw[:200])
                    continue
                yield row_to_document(
                    row,
                    opts.fields,
                    source=src.name,
                    id_key=src.key,
                    position=lineno,
                    item_id=item_id,
                    lang=opts.lang,
                )
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        yield _fail(f"{src.name}:{lineno + 1}", "malformed_gzip", f"{type(exc).__name__}: {exc}")
        return
    if not rows:
        yield _fail(src.name, "empty", "no JSON lines")


def _csv_encoding(src: Source) -> str:
    with src.path.open("rb") as fh:
        sample = fh.read(1 << 16)
    if not sample.strip():
        raise DocumentError("empty", source=src.name)
    if b"\x00" in sample:
        raise DocumentError("binary", source=src.name, detail="contains NUL bytes")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8-sig" or detect_lang(text) == "zh":
            return encoding
    raise DocumentError("undecodable", source=src.name, detail="not UTF-8 or GB18030")


def read_csv(src: Source) -> Iterator[Document | Failure]:
    """CSV with a header row, mapped by `options.fields`; failures are "<path>:<line>"."""
    opts = src.options
    encoding = _csv_encoding(src)
    csv.field_size_limit(max(csv.field_size_limit(), min(opts.max_bytes, sys.maxsize)))
    rows, line = 0, 0
    with src.path.open(newline="", encoding=encoding) as fh:
        reader = csv.DictReader(fh, restkey="_extra")
        try:
            for row in reader:
                rows, line = rows + 1, reader.line_num
                yield row_to_document(
                    row,
                    opts.fields,
                    source=src.name,
                    id_key=src.key,
                    position=rows,
                    item_id=f"{src.name}:{line}",
                    lang=opts.lang,
                )
        except csv.Error as exc:
            yield _fail(f"{src.name}:{reader.line_num}", "malformed_csv", str(exc))
            return
        except UnicodeDecodeError as exc:
            yield _fail(f"{src.name}:{line + 1}", "undecodable", str(exc)[:200])
            return
    if not rows:
        yield _fail(src.name, "empty", "no data rows")


def _fail(item_id: str, reason: str, detail: str = "", raw: bytes | str = b"") -> Failure:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return Failure(stage="ingest", item_id=item_id, reason=reason, detail=detail, raw=raw)


#: File-name suffix (lower case) -> reader. Longest matching suffix wins.
READERS: dict[str, Reader] = {
    ".txt": read_text,
    ".text": read_text,
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".jsonl.gz": read_jsonl,
    ".csv": read_csv,
}


def reader_for(path: Path) -> Reader | None:
    """The reader for `path` by its suffix (".jsonl.gz" before ".gz"), or None."""
    name = path.name.lower()
    matches = [suffix for suffix in READERS if name.endswith(suffix)]
    return READERS[max(matches, key=len)] if matches else None
