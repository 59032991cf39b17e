"""Reasoning data: QA sources, FinQA programs, answer extraction, rule checks and RL rewards.

This package holds the model-free half of reasoning (no LLM is called here). Modules:
``tables`` (one table format), ``numbers`` (amounts in answers), ``programs`` (FinQA executor),
``extract`` (answers and labels from model outputs), ``verify`` (rule-based answer check),
``sources`` / ``mapped`` (QA datasets -> QAItem), ``reward`` (TRL GRPO rewards).
"""

from __future__ import annotations

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
from fingen.reasoning.mapped import (
    FieldMapping,
    load_csv,
    load_hf_dataset,
    load_jsonl,
    rows_to_items,
)
from fingen.reasoning.numbers import Amount, format_number, parse_amounts
from fingen.reasoning.programs import ProgramError, Step, execute_program, parse_program
from fingen.reasoning.reward import accuracy_reward, completion_text, format_reward
from fingen.reasoning.sources import (
    LOADERS,
    conversation_question,
    finqa_answer_type,
    load_convfinqa,
    load_finqa,
    load_tatqa,
)
from fingen.reasoning.tables import find_row, parse_cell_number, render_table, row_numbers
from fingen.reasoning.verify import (
    ANSWER_TYPES,
    Verdict,
    check_answer,
    infer_answer_type,
    normalize_answer_type,
    token_f1,
)

# ---------------------------------------------------------------------------------------------
# LLM-backed reasoning modules are added below by their owners (imports and __all__ entries):
#   fingen.reasoning.synthesize  Passage -> QAItem (questions written by an LLM)
#   fingen.reasoning.distill     QAItem -> CoTSample (teacher sampling, \boxed{} answers)
#   fingen.reasoning.judge       LLM answer judge (round 1 fallback) and reasoning judge (round 2)
#   fingen.reasoning.preference  CoTSample -> DPORecord (correct vs wrong/overlong/repetitive)
#   fingen.reasoning.unlabeled   CoT labels for unlabeled tasks (extract_label + iterate)
# ---------------------------------------------------------------------------------------------

__all__ = [
    "ANSWER_TYPES",
    "CHOICES",
    "LOADERS",
    "SENTIMENT",
    "YES_NO",
    "Amount",
    "FieldMapping",
    "LabelSet",
    "ProgramError",
    "ReasoningSplit",
    "Step",
    "Verdict",
    "accuracy_reward",
    "check_answer",
    "clean_latex",
    "completion_text",
    "conversation_question",
    "execute_program",
    "extract_answer",
    "extract_boxed",
    "extract_label",
    "find_row",
    "finqa_answer_type",
    "format_number",
    "format_reward",
    "infer_answer_type",
    "load_convfinqa",
    "load_csv",
    "load_finqa",
    "load_hf_dataset",
    "load_jsonl",
    "load_tatqa",
    "normalize_answer_type",
    "parse_amounts",
    "parse_cell_number",
    "parse_program",
    "render_table",
    "row_numbers",
    "rows_to_items",
    "split_reasoning",
    "token_f1",
    # LLM-backed modules (synthesize, distill, judge, preference, unlabeled) add their names here.
]
