"""Fine-tuning on a run's exports: ``train_embedder`` trains a sentence-transformers
bi-encoder on the train split and scores it against its base on the dev split.

Example::

    from fingen.train import TrainOptions, train_embedder

    result = train_embedder("outputs/filings_en/20250101-120000", base="minilm",
                            options=TrainOptions(epochs=1, hard_negatives=3))
    result.info["dev"]["after"]["all"]["ndcg@10"]
"""

from __future__ import annotations

from fingen.train.data import TrainingData, load_training_data, resolve_exports
from fingen.train.embedder import TrainOptions, TrainResult, train_embedder

__all__ = [
    "TrainOptions",
    "TrainResult",
    "TrainingData",
    "load_training_data",
    "resolve_exports",
    "train_embedder",
]
