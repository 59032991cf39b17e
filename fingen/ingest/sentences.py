"""Sentence spans for Chinese and English financial text.

Spans are (start, end) character offsets into the original text, trimmed of surrounding
whitespace, so `text[start:end]` is the sentence. Line breaks are boundaries (lines, bullets
and table rows stand alone), except for hard-wrapped prose (PDF text): a line that does not
end in sentence punctuation continues on the next one when it fills most of the typical line
width, or (English) when the next line starts in lower case. Bullets and table-like lines
(runs of 2+ spaces, "|") never join.
"""

from __future__ import annotations

import re

__all__ = ["ABBREVIATIONS", "hard_split", "split_sentences"]

#: Lower-case words that a period does not end ("Inc.", "No.", "e.g.", ...).
ABBREVIATIONS = frozenset(
    {
        "inc", "corp", "co", "ltd", "llc", "plc", "lp", "llp", "bros", "no", "nos", "vs", "etc",
        "e.g", "i.e", "cf", "al", "approx", "est", "dept", "div", "mr", "mrs", "ms", "dr", "prof",
        "st", "jr", "sr", "messrs", "gov", "sen", "rep", "gen", "col", "capt", "jan", "feb", "mar",
        "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "fig", "figs", "p", "pp",
        "vol", "vols", "ch", "sec", "art", "ref", "refs", "para", "eq", "op", "ed", "eds", "rev",
        "avg", "mln", "bn", "mn", "bil", "yr", "yrs", "mo", "mos", "hr", "hrs",
    }
)  # fmt: skip
_INITIALS_RE = re.compile(r"(?:[a-z]\.)*[a-z]")
_ENUMERATOR_RE = re.compile(r"\(?(?:\d{1,3}|[ivxIVX]{1,4})\)?")
_EN_END_RE = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")
_ZH_END_RE = re.compile(r"(?:[。！？；!?]|…+)+[”’\"'」』）)】》〉]*")
_OPENERS = "\"'“‘([{"
_SOFT_BREAK_CHARS = frozenset(" \t\n\u3000，,、；;：:")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the period at `dot` closes an abbreviation or initials ("U.S.", "J.")."""
    word_start = dot
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:dot].lstrip(_OPENERS).lower()
    return word in ABBREVIATIONS or bool(_INITIALS_RE.fullmatch(word))


def _en_ends(block: str) -> list[int]:
    ends: list[int] = []
    for m in _EN_END_RE.finditer(block):
        terminator = m.group(0).rstrip("\"'”’)]")
        if terminator == "." and _is_abbreviation(block, m.start()):
            continue
        if _ENUMERATOR_RE.fullmatch(block[ends[-1] if ends else 0 : m.start()].strip()):
            continue  # "1. First item": a list number, not a sentence
        ends.append(m.end())
    return ends


def _zh_ends(block: str) -> list[int]:
    return [m.end() for m in _ZH_END_RE.finditer(block)]


_BULLET_RE = re.compile(r"^(?:[-*+•▪●◦–—]\s|\(?(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)]\s|[|])")
_TABULAR_RE = re.compile(r"\S(?: {2,}|\t)\S")
_LINE_ENDS = {"en": ".!?:;", "zh": "。！？；：…!?:;"}


def _wrap_width(lines: list[str]) -> int:
    """A typical full line length (90th percentile), to recognise hard-wrapped lines."""
    lengths = sorted(len(line.strip()) for line in lines if line.strip())
    return lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0


def _continues(prev_line: str, line: str, width: int, lang: str) -> bool:
    """True when `line` continues the sentence of `prev_line` (a wrapped line)."""
    prev, cur = prev_line.strip(), line.strip()
    if not prev or not cur or prev[-1] in _LINE_ENDS[lang] or _BULLET_RE.match(cur):
        return False
    if _TABULAR_RE.search(prev) or _TABULAR_RE.search(cur):
        return False
    filled = width >= 20 and len(prev) >= 0.6 * width
    return filled or (lang == "en" and cur[0].islower())


def _blocks(text: str, lang: str) -> list[tuple[int, int]]:
    """Line-based blocks; hard-wrapped lines of one paragraph are joined into one block."""
    lines = text.split("\n")
    width = _wrap_width(lines)
    blocks: list[tuple[int, int]] = []
    prev_line = ""
    pos = 0
    for line in lines:
        start, end = pos, pos + len(line)
        pos = end + 1
        if not line.strip():
            prev_line = ""
            continue
        if prev_line and _continues(prev_line, line, width, lang):
            blocks[-1] = (blocks[-1][0], end)
        else:
            blocks.append((start, end))
        prev_line = line
    return blocks


def split_sentences(text: str, lang: str = "en") -> list[tuple[int, int]]:
    """Sentence spans of `text`; `lang` "zh" (or "zh-*") uses Chinese punctuation rules.

    >>> t = "Revenue rose 3.5% at Apple Inc. in the U.S. market. Costs fell!\\n- Bullet"
    >>> [t[a:b] for a, b in split_sentences(t)]
    ['Revenue rose 3.5% at Apple Inc. in the U.S. market.', 'Costs fell!', '- Bullet']
    """
    zh = lang.lower().startswith("zh")
    find_ends = _zh_ends if zh else _en_ends
    spans: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text, "zh" if zh else "en"):
        block = text[b_start:b_end]
        cut = 0
        for end in [*find_ends(block), len(block)]:
            start, stop = _trim(text, b_start + cut, b_start + end)
            if stop > start:
                spans.append((start, stop))
            cut = end
    return spans


def hard_split(text: str, span: tuple[int, int], max_chars: int) -> list[tuple[int, int]]:
    """Cut an over-long span into pieces of at most `max_chars`.

    Cuts after the last space or comma-like mark in the second half of the window, else
    exactly at `max_chars`.
    """
    start, end = span
    pieces: list[tuple[int, int]] = []
    while end - start > max_chars:
        limit = start + max_chars
        cut = limit
        for i in range(limit - 1, start + max_chars // 2, -1):
            if text[i] in _SOFT_BREAK_CHARS:
                cut = i + 1
                break
        a, b = _trim(text, start, cut)
        if b > a:
            pieces.append((a, b))
        start, _ = _trim(text, cut, end)
    if end > start:
        pieces.append((start, end))
    return pieces
