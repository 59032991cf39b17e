"""Exporters: retrieval datasets (BEIR, sentence-transformers, FlagEmbedding, HF) and training
data (SFT, DPO, RL). Exporters only read records; they never call a model."""

from __future__ import annotations

from fingen.export.retrieval import (
    BASE_FILES,
    beir_dataset_dict,
    beir_features,
    beir_qrels,
    flag_embedding_rows,
    resolve_groups,
    st_ntuples,
    st_pairs,
    st_triplets,
    to_dataset,
    write_beir,
    write_jsonl,
)
from fingen.export.training import training_dataset, training_features, write_training

__all__ = [
    "BASE_FILES",
    "beir_dataset_dict",
    "beir_features",
    "beir_qrels",
    "flag_embedding_rows",
    "resolve_groups",
    "st_ntuples",
    "st_pairs",
    "st_triplets",
    "to_dataset",
    "training_dataset",
    "training_features",
    "write_beir",
    "write_jsonl",
    "write_training",
]
