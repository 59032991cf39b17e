"""Row checks shared by the query generators (pure functions, en + zh).

- ``is_question``: ends in a question mark, or opens with an interrogative (en) / contains a
  question word or particle (zh).
- ``cjk_ratio`` / ``language_matches``: the share of CJK characters among letters.
- ``ngram_overlap``: the share of the query's token n-grams found in the passage (a query
  that copies the passage scores near 1).
- ``find_span`` / ``span_in_text``: verbatim containment after NFKC and whitespace
  normalization (runs collapse to one space; around CJK characters whitespace is dropped,
  since PDF text and models disagree on spaces between Chinese characters and numbers).
- ``dedup_key``: NFKC, case-folded text without whitespace and punctuation; two queries with
  the same key are near-duplicates.
- ``RowChecker``: all of the above for one generated query against its source text, plus
  the grounding checks of ``fingen.retrieval.entities`` (self-contained, supported entities).
"""

from __future__ import annotations

import re
import unicodedata

from fingen.retrieval.entities import deictic_reference, unsupported_entities

__all__ = [
    "RowChecker",
    "cjk_ratio",
    "dedup_key",
    "find_span",
    "is_question",
    "language_matches",
    "ngram_overlap",
    "normalize_ws",
    "span_in_text",
    "tokens",
]

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_LETTER_RE = re.compile(rf"[A-Za-z{_CJK}]")
_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:[.,'][^\W_{_CJK}]+)*")
_EN_WH = frozenset(["what", "which", "who", "whom", "whose", "when", "where", "why", "how"])
_ZH_WORDS_RE = re.compile(
    r"什么|哪|怎么|怎样|如何|为何|为什么|多少|是否|有没有|能否|可否|几[个年家次种项倍成月天]"
)
_ZH_END_RE = re.compile(r"[吗呢么][?。.]?$")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; every CJK character is a token of its own."""
    return [t.lower() for t in _TOKEN_RE.findall(unicodedata.normalize("NFKC", text))]


def cjk_ratio(text: str) -> float:
    """CJK characters / (CJK characters + Latin letters); 0.0 for text with neither."""
    letters = _LETTER_RE.findall(text)
    if not letters:
        return 0.0
    return sum(1 for c in letters if _CJK_RE.match(c)) / len(letters)


def language_matches(text: str, lang: str, *, zh_min: float = 0.3, en_max: float = 0.1) -> bool:
    """True when ``text`` is plausibly in ``lang`` ("zh*": CJK ratio >= zh_min; else <= en_max).

    Chinese financial text mixes in tickers and figures, hence the low bar for "zh".
    """
    ratio = cjk_ratio(text)
    return ratio >= zh_min if lang.lower().startswith("zh") else ratio <= en_max


def is_question(text: str, lang: str) -> bool:
    """True when ``text`` reads as a question (or a search request phrased as one)."""
    t = unicodedata.normalize("NFKC", text).strip()
    if len(tokens(t)) < 3:
        return False
    if t.endswith("?"):
        return True
    if lang.lower().startswith("zh"):
        return bool(_ZH_WORDS_RE.search(t) or _ZH_END_RE.search(t))
    return t.split(maxsplit=1)[0].lower().strip("\"'(") in _EN_WH


def ngram_overlap(query: str, passage: str, n: int = 3) -> float:
    """Share of the query's token n-grams that also occur in ``passage`` (0.0-1.0).

    Queries shorter than ``n`` tokens compare unigrams.
    """
    q, p = tokens(query), tokens(passage)
    k = n if len(q) >= n else 1
    grams = [tuple(q[i : i + k]) for i in range(len(q) - k + 1)]
    if not grams:
        return 0.0
    have = {tuple(p[i : i + k]) for i in range(len(p) - k + 1)}
    return sum(1 for g in grams if g in have) / len(grams)


def _normalized(text: str) -> tuple[str, list[int]]:
    """NFKC + whitespace-normalized text, and for each of its characters the source offset."""
    out: list[str] = []
    pos: list[int] = []
    pending_space = -1
    for i, ch in enumerate(text):
        norm = unicodedata.normalize("NFKC", ch)
        if not norm.strip():
            if out and pending_space < 0:
                pending_space = i
            continue
        if pending_space >= 0:
            prev_cjk = bool(_CJK_RE.match(out[-1]))
            if not (prev_cjk or _CJK_RE.match(norm[0])):
                out.append(" ")
                pos.append(pending_space)
            pending_space = -1
        for c in norm:
            out.append(c)
            pos.append(i)
    return "".join(out), pos


def normalize_ws(text: str) -> str:
    """NFKC; whitespace runs -> one space, dropped next to CJK characters; stripped."""
    return _normalized(text)[0]


def find_span(span: str, text: str) -> tuple[int, int] | None:
    """(start, end) offsets in ``text`` of ``span`` matched after normalization, or None."""
    needle = normalize_ws(span)
    if not needle:
        return None
    hay, pos = _normalized(text)
    at = hay.find(needle)
    if at < 0:
        return None
    return pos[at], pos[at + len(needle) - 1] + 1


def span_in_text(span: str, text: str) -> bool:
    """True when ``span`` occurs verbatim in ``text`` up to whitespace/NFKC normalization."""
    return find_span(span, text) is not None


_PUNCT_OR_SPACE = re.compile(r"[\W_]+")


def dedup_key(text: str) -> str:
    """Near-duplicate key: NFKC, case-folded, without whitespace and punctuation."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).casefold())


class RowChecker:
    """Checks one generated query at a time against a source text; remembers what it saw.

    ``context`` is what else the model was shown about the source (title, company, date,
    document type): entities may come from there too. ``check`` returns None when the row
    passes, else the rejection reason and a detail.
    """

    def __init__(
        self, source_text: str, lang: str, *, max_overlap: float = 0.8, context: str = ""
    ) -> None:
        self.text, self.lang, self.max_overlap = source_text, lang, max_overlap
        self.context = context
        self.seen: set[str] = set()

    def check(self, question: str) -> tuple[str, str] | None:
        if not is_question(question, self.lang):
            return "not_a_question", question
        if not language_matches(question, self.lang):
            return "wrong_language", f"expected {self.lang}: {question}"
        if (phrase := deictic_reference(question, self.lang)) is not None:
            return "not_self_contained", f"'{phrase}' in: {question}"
        missing = unsupported_entities(question, f"{self.context}\n{self.text}", self.lang)
        if missing:
            return "unsupported_entity", f"{', '.join(missing)} not in the source: {question}"
        overlap = ngram_overlap(question, self.text)
        if overlap > self.max_overlap:
            return "copies_passage", f"n-gram overlap {overlap:.2f} > {self.max_overlap}"
        key = dedup_key(question)
        if key in self.seen:
            return "duplicate", question
        self.seen.add(key)
        return None
