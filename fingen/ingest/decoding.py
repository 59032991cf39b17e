"""Bytes -> text for untrusted input files, and a cheap zh/en language guess.

Bad bytes raise `fingen.errors.DocumentError` with a short snake_case reason ("empty",
"binary", "undecodable"); the loaders turn it into a `Failure` record.
"""

from __future__ import annotations

import re

from fingen.errors import DocumentError

__all__ = ["CJK_RE", "cjk_ratio", "decode_bytes", "detect_lang"]

# CJK Unified Ideographs (+ extension A and compatibility ideographs).
CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_RE = re.compile(r"[A-Za-z]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SAMPLE = 4000


def cjk_ratio(text: str, *, sample: int = _SAMPLE) -> float:
    """Share of CJK ideographs among CJK + Latin letters in the first `sample` characters."""
    head = text[:sample]
    cjk = len(CJK_RE.findall(head))
    latin = len(_LATIN_RE.findall(head))
    return cjk / (cjk + latin) if cjk + latin else 0.0


def detect_lang(text: str, *, threshold: float = 0.3) -> str:
    """Return "zh" when the CJK share of letters is at least `threshold`, else "en".

    >>> detect_lang("公司发布提价公告，提价幅度在6.45%-15.04%之间。")
    'zh'
    """
    return "zh" if cjk_ratio(text) >= threshold else "en"


def _looks_binary(text: str) -> bool:
    head = text[:_SAMPLE]
    return bool(head) and len(_CONTROL_RE.findall(head)) / len(head) > 0.05


def decode_bytes(data: bytes, *, source: str = "") -> str:
    """Decode file bytes: UTF-8 (BOM stripped), else GB18030 when the result reads as Chinese.

    Raises:
        DocumentError: reason "empty" (no non-blank text), "binary" (NUL bytes or many control
            characters) or "undecodable" (neither UTF-8 nor plausible GB18030).
    """
    if not data.strip():
        raise DocumentError("empty", source=source)
    if b"\x00" in data:
        raise DocumentError("binary", source=source, detail="contains NUL bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise DocumentError("undecodable", source=source, detail=str(exc)[:200]) from None
        if detect_lang(text) != "zh":
            raise DocumentError(
                "undecodable", source=source, detail="not UTF-8 and not Chinese GB18030"
            ) from None
    if _looks_binary(text):
        raise DocumentError("binary", source=source, detail="many control characters")
    if not text.strip():
        raise DocumentError("empty", source=source)
    return text
