"""GRPO rewards: TRL's call shape, plain and conversational completions, no heavy imports."""

from __future__ import annotations

import subprocess
import sys

from fingen.reasoning.reward import accuracy_reward, completion_text, format_reward

GOOD = "<think>\n5829 - 5735 = 94\n</think>\n<answer>\\boxed{94}</answer>"


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_format_reward_on_plain_and_conversational_completions() -> None:
    completions = [
        GOOD,
        "<think>reasoning</think>\n<answer>94</answer>\n",
        "<think>reasoning</think>94",
        "94",
        "<think>a</think><think>b</think>\n<answer>94</answer>",
        "<think>a</think>\n<answer>  </answer>",
        "preamble <think>a</think>\n<answer>94</answer>",
    ]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward([chat(GOOD), chat("nope")], prompts=[[], []]) == [1.0, 0.0]


def test_accuracy_reward_uses_the_answer_column_and_optional_types() -> None:
    completions = [
        GOOD,
        "<think>x</think>\n<answer>9.86%</answer>",
        "<think>x</think>\n<answer>12.6 million</answer>",
        "<think>x</think>\n<answer>Yes</answer>",
        "<think>x</think>\n<answer>95</answer>",
        "I think it is 94",  # no explicit final answer: no credit
    ]
    rewards = accuracy_reward(
        completions,
        answer=["94", "0.0986", "12.6", "yes", "94", "94"],
        answer_type=["number", "percent", "number", "yes_no", None, None],
        scale=["", "", "million", "", "", ""],
        prompts=["p"] * 6,
        completion_ids=[[1]] * 6,
    )
    assert rewards == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_accuracy_reward_on_conversational_completions_without_type_column() -> None:
    rewards = accuracy_reward(
        [chat(GOOD), chat("<answer>(1,234)</answer>")], answer=["94", "-1234"]
    )
    assert rewards == [1.0, 1.0]


def test_completion_text_handles_messages_and_strings() -> None:
    assert completion_text([{"role": "assistant", "content": "a"}, {"content": "b"}]) == "ab"
    assert completion_text({"content": "x"}) == "x" and completion_text(None) == ""


def test_reward_module_imports_no_heavy_package() -> None:
    code = (
        "import sys, fingen.reasoning.reward\n"
        "heavy = {'torch', 'datasets', 'transformers', 'trl', 'openai', 'vllm', 'llama_cpp'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_accuracy_reward_uses_the_strict_number_rule() -> None:
    answers = ["<answer>12</answer>", "<answer>14%</answer>", "<answer>14.46%</answer>"]
    rewards = accuracy_reward(answers, answer=["12.4", "0.14464", "0.14464"], answer_type="percent")
    assert rewards == [0.0, 0.0, 1.0]  # a coarser answer more than 1 % off earns nothing
    rewards = accuracy_reward(["<answer>0.000011</answer>", "<answer>11.5</answer>"],
                              answer=["0.00001", "12"])  # fmt: skip
    assert rewards == [0.0, 1.0]  # 10 % off; within half a unit of the gold's precision


def test_trl_keyword_call_with_reasoning_split_off_by_a_response_parser() -> None:
    """GRPOTrainer calls reward(prompts=, completions=, completion_ids=, **columns, trainer_state=,
    log_extra=, log_metric=); a thinking model's parsed completion keeps its reasoning apart."""
    parsed = [{"role": "assistant", "reasoning_content": "5829 - 5735 = 94",
               "content": "<answer>\\boxed{94}</answer>"}]  # fmt: skip
    plain = chat("<think>\nx\n</think>\n<answer>94</answer>")
    trl_extras = {"prompts": [[{"role": "user", "content": "Q"}]] * 3, "completion_ids": [[1]] * 3,
                  "trainer_state": None, "log_extra": None, "log_metric": None}  # fmt: skip
    completions = [parsed, plain, chat("94")]
    assert format_reward(completions=completions, answer=["94"] * 3, **trl_extras) == [
        1.0,
        1.0,
        0.0,
    ]
    rewards = accuracy_reward(completions=completions, answer=["94"] * 3, answer_type=["number"] * 3,
                              scale=[""] * 3, **trl_extras)  # fmt: skip
    assert rewards == [1.0, 1.0, 0.0]
    assert (
        completion_text(parsed)
        == "<think>\n5829 - 5735 = 94\n</think>\n<answer>\\boxed{94}</answer>"
    )
