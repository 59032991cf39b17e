"""Rewards for TRL's ``GRPOTrainer`` (Fin-R1 RL stage): format and accuracy.

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., **dataset_columns)``
and expects one float per completion. Completions are strings (standard datasets) or message
lists ``[{"role": "assistant", "content": ...}]`` (conversational datasets); both are handled.
No model or heavy package is imported here::

    GRPOTrainer(model, reward_funcs=[format_reward, accuracy_reward], train_dataset=ds, ...)

where ``ds`` has a ``prompt`` column, an ``answer`` column and optionally ``answer_type`` and
``scale`` columns: fingen's RL export (``exports/training/rl``), whose prompt is one user
message asking for ``<think>…</think>`` then ``<answer>…</answer>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fingen.reasoning.extract import extract_answer
from fingen.reasoning.verify import check_answer

__all__ = ["FORMAT_PATTERN", "accuracy_reward", "completion_text", "format_reward"]

#: ``<think>...</think>`` then ``<answer>...</answer>``, nothing else around them.
FORMAT_PATTERN = re.compile(
    r"\A\s*<think>(?:(?!</?think>).)*</think>\s*<answer>(?:(?!</?answer>).)*\S"
    r"(?:(?!</?answer>).)*</answer>\s*\Z",
    re.DOTALL,
)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages.

    A message whose reasoning a tokenizer's response parser split off (``reasoning_content``
    or ``thinking``, as TRL's ``parse_response`` does for thinking models) gets it back as
    ``<think>\\n…\\n</think>\\n`` before its content.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = str(completion.get("content") or "")
        thought = completion.get("reasoning_content") or completion.get("thinking")
        if isinstance(thought, str) and thought.strip() and "<think>" not in content:
            return f"<think>\n{thought.strip()}\n</think>\n{content}"
        return content
    if isinstance(completion, Sequence):
        return "".join(
            completion_text(m)
            for m in completion
            if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"
        )
    return str(completion)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when a completion is exactly ``<think>...</think>\\n<answer>...</answer>``, else 0.0."""
    return [1.0 if FORMAT_PATTERN.match(completion_text(c)) else 0.0 for c in completions]


def _column(values: Sequence[Any] | Any | None, n: int) -> list[Any]:
    if values is None or isinstance(values, str):
        return [values] * n
    return list(values)


def accuracy_reward(
    completions: Sequence[Any],
    answer: Sequence[str],
    answer_type: Sequence[str | None] | str | None = None,
    scale: Sequence[str | None] | str | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 when the completion's final answer passes ``check_answer`` against ``answer``.

    The answer is read with ``extract_answer`` (``<answer>``, ``\\boxed{}``, "the answer is";
    no bare-number fallback). ``answer_type`` / ``scale`` are optional dataset columns (or one
    value for all). Numbers are checked by the strict rule (within 1 % of the gold or half a
    unit of its printed precision; "12" for 12.4 scores 0.0). A verdict the rules cannot
    decide (free text) scores 0.0.
    """
    n = len(completions)
    golds, kinds, scales = _column(answer, n), _column(answer_type, n), _column(scale, n)
    if len(golds) != n:
        raise ValueError(f"{n} completions but {len(golds)} answers")
    rewards = []
    for completion, gold, kind, unit in zip(completions, golds, kinds, scales, strict=True):
        predicted = extract_answer(completion_text(completion), fallback_number=False)
        verdict = check_answer(
            predicted, str(gold), kind or "auto", scale=unit or None, rounding="strict"
        )
        rewards.append(1.0 if verdict.correct else 0.0)
    return rewards
