"""Is a generated query grounded in what the model was shown? Two checks (en + zh).

- ``deictic_reference``: the query only makes sense next to its passage ("What is the name of
  the company?", "What does this document say about ..."): it points at "this document",
  "the passage", "the company" (without naming one), ... (``not_self_contained``).
- ``unsupported_entities``: years, tickers and proper names in the query that appear nowhere
  in the source (passage text, title, company, date, ...) (``unsupported_entity``). Years are
  checked in both languages; tickers and capitalised names in English only. Matching is
  case-insensitive (filing text is often lower-cased) and ignores a possessive ``'s``.
"""

from __future__ import annotations

import re

__all__ = ["COMMON_CAPITALISED", "deictic_reference", "unsupported_entities"]

_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")
_TICKER = re.compile(r"\b[A-Z]{2,5}\b")
_CAPITALISED = re.compile(r"\b[A-Z][a-z][A-Za-z&.-]*(?:'s)?\b")
_EN_DEICTIC = re.compile(
    r"\b(?:this|these|the|above|following|given|provided)\s+"
    r"(?:document|passage|text|excerpt|report|filing|page|section|table|paragraph|statement)s?\b"
    r"|\b(?:the|this)\s+company\b|\bin this\b",
    re.IGNORECASE,
)
_ZH_DEICTIC = re.compile(
    r"本文|该文|文中|上文|下文|本段|该段|这段|此段|本报告|该报告|文档|该公司|本公司|此公司|公司名称"
)
#: Capitalised words that are not names (question words, months, finance vocabulary).
COMMON_CAPITALISED = frozenset(
    [
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "does",
        "do",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "has",
        "have",
        "had",
        "in",
        "on",
        "for",
        "of",
        "by",
        "to",
        "from",
        "at",
        "as",
        "and",
        "or",
        "the",
        "a",
        "an",
        "its",
        "their",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "q1",
        "q2",
        "q3",
        "q4",
        "fy",
        "fiscal",
        "first",
        "second",
        "third",
        "fourth",
        "quarter",
        "year",
        "annual",
        "total",
        "net",
        "gross",
        "operating",
        "revenue",
        "revenues",
        "income",
        "sales",
        "cash",
        "flow",
        "margin",
        "earnings",
        "profit",
        "loss",
        "assets",
        "liabilities",
        "equity",
        "capital",
        "debt",
        "dividend",
        "dividends",
        "share",
        "shares",
        "stock",
        "board",
        "company",
        "companies",
        "group",
        "bank",
        "segment",
        "segments",
        "management",
        "report",
        "statement",
        "statements",
        "note",
        "notes",
        "us",
        "usa",
        "u.s.",
        "united",
        "states",
        "china",
        "chinese",
        "american",
        "european",
        "europe",
        "asia",
        "global",
        "gaap",
        "ifrs",
        "sec",
        "eps",
        "ebit",
        "ebitda",
        "roe",
        "roa",
        "roic",
        "cet1",
        "nii",
        "nim",
        "capex",
        "opex",
        "r&d",
        "ceo",
        "cfo",
        "coo",
        "ipo",
        "esg",
        "etf",
        "reit",
        "ytd",
        "yoy",
        "qoq",
        "mom",
        "bps",
        "usd",
        "eur",
        "gbp",
        "cny",
        "rmb",
        "jpy",
        "hkd",
        "tax",
        "taxes",
    ]
)


def deictic_reference(question: str, lang: str) -> str | None:
    """The phrase that ties the query to an unnamed document, or None."""
    pattern = _ZH_DEICTIC if lang.lower().startswith("zh") else _EN_DEICTIC
    m = pattern.search(question)
    return m.group(0) if m else None


def _norm(word: str) -> str:
    return re.sub(r"'s$", "", word).strip(".").lower()


def unsupported_entities(question: str, source: str, lang: str) -> list[str]:
    """Years, tickers and proper names of ``question`` that ``source`` never mentions."""
    haystack = source.lower()
    words = set(re.findall(r"[a-z0-9&.'-]+", haystack))
    missing = [y for y in _YEAR.findall(question) if y not in source]
    if lang.lower().startswith("zh"):
        return missing
    for ticker in _TICKER.findall(question):
        if ticker.lower() not in COMMON_CAPITALISED and ticker.lower() not in words:
            missing.append(ticker)
    for i, match in enumerate(_CAPITALISED.finditer(question)):
        word = _norm(match.group(0))
        if i == 0 and match.start() == 0:  # the question's first word
            continue
        if word in COMMON_CAPITALISED or word in haystack:
            continue
        missing.append(match.group(0))
    return list(dict.fromkeys(missing))
