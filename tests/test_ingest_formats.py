"""Loaders, file by file: every format and every bad-input reason."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from fingen.errors import InputError
from fingen.ingest import FieldMap, IngestOptions, iter_documents, load_documents
from fingen.records import Failure
from tests.ingest_helpers import (
    EN_TEXT,
    ZH_TEXT,
    only_doc,
    only_failure,
    write,
    write_bytes,
    write_jsonl,
)


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A real minimal PDF (Helvetica text, one content stream per page, exact xref)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        shown = " T* ".join(f"({line}) Tj" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode()
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = ""
    if title:
        objs.append(f"<< /Title ({title}) >>".encode())
        info = f" /Info {len(objs)} 0 R"
    out = b"%PDF-1.4\n"
    offsets = []
    for num, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    trailer = f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n"
    return out + trailer.encode()


# --- formats -------------------------------------------------------------------------------


def test_txt_file_is_one_document_titled_by_stem(tmp_path: Path) -> None:
    doc = only_doc(write(tmp_path / "q3_update.txt", f"\n{EN_TEXT}\n"))
    assert doc.text == EN_TEXT
    assert doc.title == "q3_update"
    assert doc.lang == "en"
    assert doc.source == str(tmp_path / "q3_update.txt")


def test_markdown_front_matter_fills_metadata_and_rest_goes_to_meta(tmp_path: Path) -> None:
    md = (
        "---\ntitle: Q3 results\ndate: 2024-03-31\nindustry: Banking\ncompany: ACME Bank\n"
        "doc_type: earnings_release\nanalyst: J. Doe\n---\n# Heading\n\n" + EN_TEXT
    )
    doc = only_doc(write(tmp_path / "r.md", md))
    assert (doc.title, doc.date, doc.industry, doc.company, doc.doc_type) == (
        "Q3 results",
        "2024-03-31",
        "Banking",
        "ACME Bank",
        "earnings_release",
    )
    assert doc.meta == {"analyst": "J. Doe"}
    assert doc.text.startswith("# Heading") and "---" not in doc.text


def test_markdown_title_falls_back_to_first_h1(tmp_path: Path) -> None:
    doc = only_doc(write(tmp_path / "r.md", f"Intro line\n\n# Annual Report 2023 #\n\n{EN_TEXT}"))
    assert doc.title == "Annual Report 2023"


def test_markdown_broken_front_matter_keeps_body_and_records_error(tmp_path: Path) -> None:
    doc = only_doc(write(tmp_path / "r.md", f"---\ntitle: [unclosed\n---\n{EN_TEXT}"))
    assert doc.text == EN_TEXT
    assert "front_matter_error" in doc.meta


def test_html_text_drops_scripts_styles_and_uses_title(tmp_path: Path) -> None:
    html = (
        "<html><head><title>ACME  10-K</title><style>p {color: red}</style>"
        "<script>var x = 'secret';</script></head><body><h1>Results</h1>"
        "<p>Revenue rose\n5% &amp; margins improved.</p><table><tr><td>Revenue</td>"
        "<td>1,234</td></tr></table></body></html>"
    )
    doc = only_doc(write(tmp_path / "page.htm", html))
    assert doc.title == "ACME 10-K"
    assert "secret" not in doc.text and "color" not in doc.text
    assert "Revenue rose 5% & margins improved." in doc.text.splitlines()
    assert "Revenue | 1,234" in doc.text.splitlines()


def test_pdf_pages_are_joined_with_page_offsets(tmp_path: Path) -> None:
    pdf = make_pdf(
        [["Revenue rose 5% in 2023.", "Margins improved."], ["Outlook remains stable."]],
        title="Annual Report 2023",
    )
    doc = only_doc(write_bytes(tmp_path / "ar.pdf", pdf))
    assert doc.title == "Annual Report 2023"
    assert doc.meta["pages"] == 2
    first, second = doc.meta["page_starts"]
    assert first == 0
    assert doc.text[second:] == "Outlook remains stable."
    assert doc.text[: second - 2].endswith("Margins improved.")
    assert doc.text[second - 2 : second] == "\n\n"


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\nthis is not a pdf\n%%EOF\n", b"no pdf at all", "truncated"],
    ids=["no_xref", "not_pdf", "truncated"],
)
def test_malformed_pdf_is_a_failure(tmp_path: Path, data: bytes | str) -> None:
    if data == "truncated":
        full = make_pdf([["Revenue rose 5% in 2023."]])
        data = full[: len(full) // 2]
    failure = only_failure(write_bytes(tmp_path / "bad.pdf", data))  # type: ignore[arg-type]
    assert failure.reason == "malformed_pdf"
    assert failure.item_id == str(tmp_path / "bad.pdf")


def test_pdf_without_text_is_empty(tmp_path: Path) -> None:
    assert only_failure(write_bytes(tmp_path / "scan.pdf", make_pdf([[]]))).reason == "empty"


def test_jsonl_rows_map_fields_and_unmapped_go_to_meta(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"body": EN_TEXT, "uid": "r1", "head": "Q3", "d": "2024-01-02", "co": "ACME", "x": 1},
            {"body": ZH_TEXT, "uid": "r2", "head": "研报", "lang": "zh-cn"},
        ],
    )
    fields = FieldMap(
        text_field="body", id_field="uid", title_field="head", date_field="d",
        company_field="co", lang_field="lang",
    )  # fmt: skip
    docs, failures = load_documents(path, options=IngestOptions(fields=fields))
    assert failures == []
    assert [(d.doc_id, d.title, d.lang) for d in docs] == [
        ("r1", "Q3", "en"),
        ("r2", "研报", "zh-cn"),
    ]
    assert (docs[0].date, docs[0].company, docs[0].meta) == ("2024-01-02", "ACME", {"x": 1})


def test_jsonl_gz_reads_like_plain_jsonl(tmp_path: Path) -> None:
    rows = [{"text": EN_TEXT}, {"text": ZH_TEXT}]
    plain = write_jsonl(tmp_path / "a.jsonl", rows)
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    docs_plain, _ = load_documents(plain)
    docs_gz, failures = load_documents(packed)
    assert failures == []
    assert [d.text for d in docs_gz] == [d.text for d in docs_plain]
    assert [d.lang for d in docs_gz] == ["en", "zh"]


def test_bad_jsonl_lines_become_failures_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    lines = [
        json.dumps({"text": EN_TEXT}),
        '{"text": "unterminated',
        "[1, 2]",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": "   "}),
        "",
        json.dumps({"text": ZH_TEXT}),
    ]
    path.write_text("\n".join(lines), "utf-8")
    items = list(iter_documents(path))
    assert [type(i).__name__ for i in items] == ["Document"] + ["Failure"] * 4 + ["Document"]
    failures = [i for i in items if isinstance(i, Failure)]
    assert [(f.item_id, f.reason) for f in failures] == [
        (f"{path}:2", "malformed_json"),
        (f"{path}:3", "malformed_json"),
        (f"{path}:4", "missing_field"),
        (f"{path}:5", "empty"),
    ]
    assert failures[0].raw.startswith('{"text": "unterminated')


def test_truncated_gzip_is_a_failure_after_the_good_rows(tmp_path: Path) -> None:
    packed = gzip.compress(
        "".join(json.dumps({"text": f"{EN_TEXT} {i}"}) + "\n" for i in range(50)).encode()
    )
    path = write_bytes(tmp_path / "cut.jsonl.gz", packed[: len(packed) // 2])
    docs, failures = load_documents(path)
    assert [f.reason for f in failures] == ["malformed_gzip"]
    assert 0 < len(docs) < 50


def test_csv_rows_map_fields(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "content", "industry", "source_url"])
        writer.writerow(["c1", EN_TEXT, "Banking", "http://x"])
        writer.writerow(["c2", "", "Banking", "http://y"])
    docs, failures = load_documents(
        path,
        options=IngestOptions(fields=FieldMap(text_field="content", industry_field="industry")),
    )
    assert [(d.industry, d.meta) for d in docs] == [
        ("Banking", {"id": "c1", "source_url": "http://x"})
    ]
    assert [(f.item_id, f.reason) for f in failures] == [(f"{path}:3", "empty")]


def test_gb18030_csv_and_text_are_decoded(tmp_path: Path) -> None:
    path = write(tmp_path / "zh.csv", f"text,行业\n{ZH_TEXT.replace(',', '')},食品\n", "gb18030")
    doc = only_doc(path)
    assert doc.lang == "zh" and doc.meta == {"行业": "食品"}
    assert only_doc(write(tmp_path / "zh.txt", ZH_TEXT, "gb18030")).text == ZH_TEXT


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    assert (
        only_doc(write_bytes(tmp_path / "bom.txt", b"\xef\xbb\xbf" + EN_TEXT.encode())).text
        == EN_TEXT
    )


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.md", b"  \n\t\n", "empty"),
        ("only_front.md", b"---\ntitle: x\n---\n", "empty"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("binary.csv", b"text\nabc\x00def\n", "binary"),
        ("latin1.txt", "café crème brûlée, déjà vu. ".encode("latin-1") * 5, "undecodable"),
        ("latin1.csv", "text\ncafé crème brûlée, déjà vu.\n".encode("latin-1"), "undecodable"),
        ("empty.jsonl", b"\n\n", "empty"),
        ("header_only.csv", b"text,id\n", "empty"),
    ],
)
def test_bad_files_become_failures_not_errors(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    failure = only_failure(write_bytes(tmp_path / name, data))
    assert (failure.item_id, failure.reason) == (str(tmp_path / name), reason)


def test_too_large_files_and_lines_are_failures(tmp_path: Path) -> None:
    assert only_failure(write(tmp_path / "big.txt", EN_TEXT), max_bytes=10).reason == "too_large"
    assert only_failure(write(tmp_path / "big.html", EN_TEXT), max_bytes=10).reason == "too_large"
    pdf = write_bytes(tmp_path / "big.pdf", make_pdf([["x"]]))
    assert only_failure(pdf, max_bytes=10).reason == "too_large"
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "short"}, {"text": EN_TEXT * 10}])
    docs, failures = load_documents(path, options=IngestOptions(max_bytes=100))
    assert [d.text for d in docs] == ["short"]
    assert [(f.item_id, f.reason) for f in failures] == [(f"{path}:2", "too_large")]


def test_missing_path_raises_input_error_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        iter_documents([tmp_path / "nope.txt"])
    with pytest.raises(InputError):
        iter_documents([])


def test_unsupported_file_by_name_raises_but_in_a_directory_is_a_failure(tmp_path: Path) -> None:
    write_bytes(tmp_path / "deck.pptx", b"PK\x03\x04")
    with pytest.raises(InputError, match="unsupported"):
        iter_documents(tmp_path / "deck.pptx")
    assert only_failure(tmp_path).reason == "unsupported_format"
