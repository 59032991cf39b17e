"""Fin-R1's routing: a question whose samples pass both rounds -> SFT, otherwise -> RL.

A sample passes when its answer is verified correct (round 1), its reasoning passed the judge
(round 2; ``quality``) and it was not cut off by ``max_tokens``. An item with a passing sample
gives up to ``sft_per_item`` SFT records ``[user: prompt, assistant:
"<think>…</think>\\n<answer>…</answer>"]``; an item without one gives one RL record
``(prompt, gold answer)`` and a reason: ``no_samples``, ``incorrect``, ``undecided`` (the
answer check could not decide), ``low_quality`` or ``unjudged`` (no round-2 score).

The prompt (:func:`qa_prompt`, also DPO's) is the context, the question and Fin-R1's
instruction to answer as ``<think>…</think>`` then ``<answer>…</answer>``, in the run's
language: the format the SFT targets have and ``fingen.reasoning.reward.format_reward`` checks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fingen.reasoning.extract import split_reasoning
from fingen.records import CoTSample, QAItem, RLRecord, SFTRecord

__all__ = [
    "ANSWER_FORMAT",
    "ROUTE_REASONS",
    "Routed",
    "format_completion",
    "group_samples",
    "passes",
    "qa_prompt",
    "route_item",
    "route_items",
]

ROUTE_REASONS = ("sft", "no_samples", "incorrect", "undecided", "low_quality", "unjudged")
_QUESTION = {"en": "Question: ", "zh": "问题："}
_SHAPE = "<think>\n...\n</think>\n<answer>\n...\n</answer>"
#: Fin-R1's instruction for the trained model (SFT / DPO / RL prompts), by language.
ANSWER_FORMAT = {
    "en": "First think the problem through step by step, then give the final answer "
    f"(within \\boxed{{}}). Respond in the following format:\n{_SHAPE}",
    "zh": f"请先逐步思考，再给出最终答案（写在 \\boxed{{}} 中）。请按以下格式回答：\n{_SHAPE}",
}


def qa_prompt(item: QAItem, lang: str = "en", *, instruction: bool = True) -> str:
    """The training prompt of an item: its context (if any), the question, then (with
    ``instruction``) Fin-R1's ``<think>…</think><answer>…</answer>`` instruction."""
    parts = [item.context.strip(), _QUESTION.get(lang, _QUESTION["en"]) + item.question.strip()]
    if instruction:
        parts.append(ANSWER_FORMAT.get(lang, ANSWER_FORMAT["en"]))
    return "\n\n".join(p for p in parts if p)


def format_completion(sample: CoTSample) -> str:
    """``<think>reasoning</think>\\n<answer>answer</answer>``; a truncated sample stays open
    (``<think>…`` without an end), as the model wrote it."""
    reasoning = sample.reasoning.strip()
    if sample.finish_reason == "length":
        return f"<think>\n{reasoning}"
    answer = split_reasoning(sample.raw).answer_text.strip() if sample.raw else ""
    if not answer and sample.answer:
        answer = f"\\boxed{{{sample.answer}}}"
    return f"<think>\n{reasoning}\n</think>\n<answer>\n{answer}\n</answer>"


def passes(sample: CoTSample, *, require_quality: bool = True) -> bool:
    """Correct answer, complete output, and (with ``require_quality``) a round-2 pass."""
    if sample.correct is not True or sample.finish_reason == "length":
        return False
    return sample.quality is True or (not require_quality and sample.quality is None)


def group_samples(samples: Iterable[CoTSample]) -> dict[str, list[CoTSample]]:
    """Samples by ``qa_id``, each list ordered by ``sample_idx``."""
    groups: dict[str, list[CoTSample]] = defaultdict(list)
    for s in samples:
        groups[s.qa_id].append(s)
    return {k: sorted(v, key=lambda s: s.sample_idx) for k, v in groups.items()}


@dataclass
class Routed:
    """Where one item went: SFT records, or one RL record, and why."""

    item: QAItem
    reason: str
    sft: list[SFTRecord] = field(default_factory=list)
    rl: RLRecord | None = None


def _fail_reason(samples: list[CoTSample], require_quality: bool) -> str:
    if not samples:
        return "no_samples"
    complete = [s for s in samples if s.finish_reason != "length"]
    if not any(s.correct is True for s in complete):
        return "undecided" if any(s.correct is None for s in complete) else "incorrect"
    correct = [s for s in complete if s.correct is True]
    if any(s.quality is False for s in correct) or not require_quality:
        return "low_quality"
    return "unjudged"


def route_item(
    item: QAItem,
    samples: list[CoTSample],
    *,
    sft_per_item: int = 1,
    require_quality: bool = True,
    lang: str = "en",
) -> Routed:
    """Route one item given its samples (see the module doc)."""
    prompt = qa_prompt(item, lang)
    good = [s for s in samples if passes(s, require_quality=require_quality)]
    if good:
        records = [
            SFTRecord(
                messages=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": format_completion(s)},
                ],
                source=item.source,
                qa_id=item.qa_id,
            )
            for s in good[:sft_per_item]
        ]
        return Routed(item, "sft", sft=records)
    rl = RLRecord(prompt=prompt, answer=item.gold_answer, source=item.source, qa_id=item.qa_id)
    return Routed(item, _fail_reason(samples, require_quality), rl=rl)


def route_items(
    items: Iterable[QAItem],
    samples: Iterable[CoTSample],
    *,
    sft_per_item: int = 1,
    require_quality: bool = True,
    lang: str = "en",
) -> Iterator[Routed]:
    """Route every item (in item order); samples are grouped by ``qa_id`` first."""
    if sft_per_item < 1:
        raise ValueError(f"sft_per_item must be >= 1, got {sft_per_item}")
    groups = group_samples(samples)
    for item in items:
        yield route_item(
            item,
            groups.get(item.qa_id, []),
            sft_per_item=sft_per_item,
            require_quality=require_quality,
            lang=lang,
        )
