"""Reasoning data: QA sources, FinQA programs, answer extraction, rule checks and RL rewards.

The model-free half of reasoning (no LLM is called in these modules):
``tables`` (one table format), ``numbers`` (amounts in answers), ``programs`` (FinQA executor),
``extract`` (answers and labels from model outputs), ``verify`` (rule-based answer check),
``sources`` / ``mapped`` (QA datasets -> QAItem), ``reward`` (TRL GRPO rewards). The LLM-backed
half (``synthesize``, ``distill``, ``answer_judge``, ``judge``, ``route``, ``preference``,
``annotate``) builds on it.
"""

from __future__ import annotations

# LLM-backed modules (they take an LLMEngine; names do not shadow the module names):
#   synthesize    Passage/table -> QAItem (questions written by an LLM, programs executed)
#   distill       QAItem -> CoTSample (teacher sampling, \boxed{} answers)
#   answer_judge  round 1: rules, then an LLM judge for undecided answers
#   judge         round 2: the seven-criteria reasoning judge
#   route         SFT / RL routing;  preference  DPO pairs (wrong/overlong/repetitive)
#   annotate      CoT labels for unlabeled tasks (extract_label + rounds)
from fingen.reasoning.annotate import (
    AnnotateTask,
    TextItem,
    annotate_rounds,
    annotate_texts,
    labelset_for,
)
from fingen.reasoning.answer_judge import (
    AnswerJudgeTask,
    SamplePair,
    judge_answers,
    rule_check,
    verify_samples,
)
from fingen.reasoning.distill import DistillTask, SampleRequest, distill_samples, expand_samples
from fingen.reasoning.extract import (
    CHOICES,
    SENTIMENT,
    YES_NO,
    LabelSet,
    ReasoningSplit,
    clean_latex,
    extract_answer,
    extract_boxed,
    extract_label,
    split_reasoning,
)
from fingen.reasoning.judge import CRITERIA, ReasoningJudgeTask, judge_reasoning, judge_samples
from fingen.reasoning.mapped import (
    FieldMapping,
    load_csv,
    load_hf_dataset,
    load_jsonl,
    load_qa,
    rows_to_items,
)
from fingen.reasoning.numbers import Amount, format_number, parse_amounts
from fingen.reasoning.preference import (
    PairOptions,
    PairResult,
    preference_pairs,
    repetition_rate,
)
from fingen.reasoning.programs import ProgramError, Step, execute_program, parse_program
from fingen.reasoning.reward import accuracy_reward, completion_text, format_reward
from fingen.reasoning.route import Routed, format_completion, qa_prompt, route_items
from fingen.reasoning.sources import (
    LOADERS,
    conversation_question,
    finqa_answer_type,
    load_convfinqa,
    load_finqa,
    load_tatqa,
)
from fingen.reasoning.synthesize import SynthesizeTask, SynthSource, synthesize_items
from fingen.reasoning.tables import find_row, parse_cell_number, render_table, row_numbers
from fingen.reasoning.verify import (
    ANSWER_TYPES,
    Verdict,
    check_answer,
    infer_answer_type,
    normalize_answer_type,
    token_f1,
)

__all__ = [
    "ANSWER_TYPES",
    "CHOICES",
    "CRITERIA",
    "LOADERS",
    "SENTIMENT",
    "YES_NO",
    "Amount",
    "AnnotateTask",
    "AnswerJudgeTask",
    "DistillTask",
    "FieldMapping",
    "LabelSet",
    "PairOptions",
    "PairResult",
    "ProgramError",
    "ReasoningJudgeTask",
    "ReasoningSplit",
    "Routed",
    "SamplePair",
    "SampleRequest",
    "Step",
    "SynthSource",
    "SynthesizeTask",
    "TextItem",
    "Verdict",
    "accuracy_reward",
    "annotate_rounds",
    "annotate_texts",
    "check_answer",
    "clean_latex",
    "completion_text",
    "conversation_question",
    "distill_samples",
    "execute_program",
    "expand_samples",
    "extract_answer",
    "extract_boxed",
    "extract_label",
    "find_row",
    "finqa_answer_type",
    "format_completion",
    "format_number",
    "format_reward",
    "infer_answer_type",
    "judge_answers",
    "judge_reasoning",
    "judge_samples",
    "labelset_for",
    "load_convfinqa",
    "load_csv",
    "load_finqa",
    "load_hf_dataset",
    "load_jsonl",
    "load_qa",
    "load_tatqa",
    "normalize_answer_type",
    "parse_amounts",
    "parse_cell_number",
    "parse_program",
    "preference_pairs",
    "qa_prompt",
    "render_table",
    "repetition_rate",
    "route_items",
    "row_numbers",
    "rows_to_items",
    "rule_check",
    "split_reasoning",
    "synthesize_items",
    "token_f1",
    "verify_samples",
]
