"""DPO pairs ("LLMs Meet Finance"): a verified-correct sample against a bad one of the same item.

Chosen: a sample whose answer is verified correct, complete (not cut off), not repetitive and
not failed by the reasoning judge (a judge pass is preferred, then the shortest). Rejected:
another sample of the item that is

- ``overlong``: it hit ``max_tokens`` (``finish_reason == "length"``) or is more than
  ``length_ratio`` times longer than the chosen (tokens when both are known, else characters);
- ``repetitive``: its repeated n-gram rate is above ``repetition_threshold``;
- ``wrong``: its answer was checked and is wrong.

``DPORecord.rejected_reason`` says why, e.g. ``"overlong:length, wrong"`` (first = main
reason). Up to ``max_pairs`` pairs per item, overlong first, then repetitive, then wrong.
The prompt is the SFT one (:func:`fingen.reasoning.route.qa_prompt`: context, question and
the ``<think>…</think><answer>…</answer>`` instruction); answers are formatted like the SFT
target (a cut-off one stays open).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fingen.reasoning.route import format_completion, group_samples, qa_prompt
from fingen.records import CoTSample, DPORecord, QAItem

__all__ = [
    "PairOptions",
    "PairResult",
    "pairs_for_item",
    "pick_chosen",
    "preference_pairs",
    "rejection_reasons",
    "repetition_rate",
]

_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+")
_PRIORITY = {"overlong": 0, "repetitive": 1, "wrong": 2}


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams (CJK characters count as words) that repeat an earlier one.

    0.0 for text without repeats (or shorter than ``n + 1`` tokens); near 1.0 for a loop.
    """
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) <= n:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


@dataclass(frozen=True)
class PairOptions:
    """How rejected samples are recognised and how many pairs an item gives."""

    length_ratio: float = 2.0
    repetition_threshold: float = 0.3
    ngram: int = 4
    max_pairs: int = 2

    def __post_init__(self) -> None:
        if self.length_ratio <= 1 or self.ngram < 1 or self.max_pairs < 1:
            raise ValueError("need length_ratio > 1, ngram >= 1, max_pairs >= 1")
        if not 0 < self.repetition_threshold < 1:
            raise ValueError("repetition_threshold must be in (0, 1)")


def _length(a: CoTSample, b: CoTSample) -> tuple[float, float]:
    if a.tokens > 0 and b.tokens > 0:
        return a.tokens, b.tokens
    return len(a.raw), len(b.raw)


def _repetitive(sample: CoTSample, opts: PairOptions) -> float | None:
    rate = repetition_rate(sample.raw, opts.ngram)
    return rate if rate > opts.repetition_threshold else None


def pick_chosen(samples: Iterable[CoTSample], opts: PairOptions | None = None) -> CoTSample | None:
    """The best verified-correct sample (judge pass first, then shortest), or None."""
    opts = opts or PairOptions()
    good = [
        s
        for s in samples
        if s.correct is True
        and s.quality is not False
        and s.finish_reason != "length"
        and _repetitive(s, opts) is None
    ]
    if not good:
        return None
    return min(good, key=lambda s: (s.quality is not True, s.tokens or len(s.raw), s.sample_idx))


def rejection_reasons(sample: CoTSample, chosen: CoTSample, opts: PairOptions) -> list[str]:
    """Why ``sample`` is a rejected answer next to ``chosen`` (empty: it is not)."""
    reasons: list[str] = []
    if sample.finish_reason == "length":
        reasons.append("overlong:length")
    else:
        mine, theirs = _length(sample, chosen)
        if theirs > 0 and mine > opts.length_ratio * theirs:
            reasons.append(f"overlong:{mine / theirs:.1f}x")
    rate = _repetitive(sample, opts)
    if rate is not None:
        reasons.append(f"repetitive:{rate:.2f}")
    if sample.correct is False:
        reasons.append("wrong")
    return reasons


@dataclass
class PairResult:
    """The pairs of one item; ``reason`` is "paired", "no_chosen" or "no_rejected"."""

    item: QAItem
    reason: str
    pairs: list[DPORecord] = field(default_factory=list)


def pairs_for_item(
    item: QAItem, samples: list[CoTSample], opts: PairOptions, lang: str = "en"
) -> PairResult:
    """DPO pairs of one item (see the module doc)."""
    chosen = pick_chosen(samples, opts)
    if chosen is None:
        return PairResult(item, "no_chosen")
    candidates = []
    for s in samples:
        if s.sample_id == chosen.sample_id or s.raw == chosen.raw:
            continue
        reasons = rejection_reasons(s, chosen, opts)
        if reasons:
            main = min(_PRIORITY[r.split(":")[0]] for r in reasons)
            reasons.sort(key=lambda r: _PRIORITY[r.split(":")[0]])
            candidates.append((main, s.sample_idx, s, reasons))
    if not candidates:
        return PairResult(item, "no_rejected")
    candidates.sort(key=lambda c: (c[0], c[1]))
    prompt, chosen_text = qa_prompt(item, lang), format_completion(chosen)
    pairs = [
        DPORecord(
            prompt=prompt,
            chosen=chosen_text,
            rejected=format_completion(s),
            rejected_reason=", ".join(reasons),
            qa_id=item.qa_id,
        )
        for _, _, s, reasons in candidates[: opts.max_pairs]
    ]
    return PairResult(item, "paired", pairs)


def preference_pairs(
    items: Iterable[QAItem],
    samples: Iterable[CoTSample],
    options: PairOptions | None = None,
    *,
    lang: str = "en",
) -> Iterator[PairResult]:
    """DPO pairs for every item, in item order (samples grouped by ``qa_id``)."""
    opts = options or PairOptions()
    groups = group_samples(samples)
    for item in items:
        yield pairs_for_item(item, groups.get(item.qa_id, []), opts, lang)
