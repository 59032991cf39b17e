"""Amounts written in answers: ``$1,234``, ``(1,234)``, ``9.86%``, ``1.2 billion``, ``3.5亿元``.

:func:`parse_amounts` finds every amount in a text with its sign, scale word, percent mark and
the number of decimals as written (used to accept answers rounded to a coarser precision).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["SCALES", "Amount", "format_number", "normalize_text_numbers", "parse_amounts"]

#: Scale words (English and Chinese) -> multiplier.
SCALES: dict[str, float] = {
    "thousands": 1e3, "thousand": 1e3, "k": 1e3,
    "millions": 1e6, "million": 1e6, "mln": 1e6, "mn": 1e6, "mm": 1e6, "m": 1e6,
    "billions": 1e9, "billion": 1e9, "bln": 1e9, "bn": 1e9, "b": 1e9,
    "trillions": 1e12, "trillion": 1e12, "tn": 1e12,
    "万亿": 1e12, "千亿": 1e11, "百亿": 1e10, "十亿": 1e9, "亿": 1e8,
    "千万": 1e7, "百万": 1e6, "十万": 1e5, "万": 1e4, "千": 1e3,
}  # fmt: skip
_PERCENT = {
    "%": 1.0, "percentage points": 1.0, "percentage point": 1.0, "percent": 1.0,
    "per cent": 1.0, "pct": 1.0, "pp": 1.0, "个百分点": 1.0, "百分点": 1.0,
    "basis points": 0.01, "basis point": 0.01, "bps": 0.01, "bp": 0.01,
}  # fmt: skip
_CURRENCY = r"(?:US\$|HK\$|RMB|USD|CNY|HKD|EUR|GBP|JPY|\$|¥|€|£|元|人民币)"


def _alternation(words: list[str]) -> str:
    words = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w) + ("(?![A-Za-z])" if w[-1].isascii() else "") for w in words)


_AMOUNT = re.compile(
    rf"""(?<![A-Za-z0-9_.])
    (?P<cur0>{_CURRENCY}\s*)?
    (?P<open>\(\s*)?
    (?P<sign>[-+])?
    (?:{_CURRENCY}\s*)?
    (?P<sign2>[-+])?
    (?P<num>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?!\d|,\d)
    (?:[eE](?P<exp>[-+]?\d+))?
    (?:\s*(?P<scale>{_alternation(list(SCALES))}))?
    (?:\s*(?:{_CURRENCY}|dollars?|yuan)(?![A-Za-z]))?
    (?:\s*(?P<pct>{_alternation(list(_PERCENT))}))?
    (?(open)\s*\))
    (?:\s*(?P<scale2>{_alternation(list(SCALES))}))?
    (?:\s*(?P<pct2>{_alternation(list(_PERCENT))}))?""",
    re.VERBOSE | re.IGNORECASE,
)
_MINUS = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\ufe63\uff0d"), "-")


@dataclass(frozen=True)
class Amount:
    """One amount in a text. ``value = mantissa * scale``; percent values stay in percent units."""

    value: float
    mantissa: float
    scale: float
    scale_word: str | None
    percent: bool
    decimals: int
    start: int
    end: int
    text: str


def normalize_text_numbers(text: str) -> str:
    """NFKC (full-width digits, ％, ，) and every dash-like minus to ``-``."""
    return unicodedata.normalize("NFKC", text).translate(_MINUS)


def parse_amounts(text: str) -> list[Amount]:
    """Every amount in ``text``, in order (positions refer to the normalized text).

    >>> [a.value for a in parse_amounts("fell to $(1,234) million, or -9.86%")]
    [-1234000000.0, -9.86]
    """
    text = normalize_text_numbers(text)
    found: list[Amount] = []
    for m in _AMOUNT.finditer(text):
        raw = m.group("num").replace(",", "")
        mantissa = float(raw) * (10 ** int(m.group("exp")) if m.group("exp") else 1)
        decimals = len(raw.partition(".")[2]) - (int(m.group("exp")) if m.group("exp") else 0)
        start, end = m.start(), m.end()
        negative = "-" in (m.group("sign") or "") + (m.group("sign2") or "")
        shown = text[start:end]
        if m.group("open"):  # "(1,234)" is negative when it stands alone or follows a currency
            if m.group("cur0") or text.strip(" .;:") == m.group(0).strip():
                negative = True
            else:
                start = m.end("open")
                shown = text[start:end].replace(")", "").strip()
        scale_word = m.group("scale") or m.group("scale2")
        scale = SCALES[scale_word.lower()] if scale_word else 1.0
        pct = m.group("pct") or m.group("pct2")
        percent = pct is not None
        if percent:
            factor = _PERCENT[pct.lower()]
            if factor != 1.0:
                mantissa *= factor
                decimals += 2
        if negative:
            mantissa = -mantissa
        value = mantissa * scale
        found.append(
            Amount(value, mantissa, scale, scale_word, percent, max(decimals, 0), start, end,
                   shown)
        )  # fmt: skip
    return found


def format_number(value: float, *, max_decimals: int = 6) -> str:
    """Plain decimal text without exponent or trailing zeros: 114.0 -> "114", 0.5620 -> "0.562"."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{round(value, max_decimals):.{max_decimals}f}"
    if "." in text:  # 1100 with max_decimals=0 stays "1100"
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
