"""A pretrained encoder with a sequence-classification head sized for the task (GLUE).

``num_labels`` is a required argument so that ``run.py`` fills it from the DataModule (``GLUEDataModule.num_labels``:
1 for STS-B regression, 3 for MNLI, 2 otherwise); everything else is ``hedgehog.models.pretrained.load_pretrained``.
"""

from __future__ import annotations

import os

from hedgehog.models.pretrained import load_pretrained


def load_sequence_classifier(name_or_path: str | os.PathLike, num_labels: int, dtype=None, **kwargs):
    """``AutoModelForSequenceClassification`` from a hub name, local folder or alias (``minilm``) with
    ``num_labels`` outputs (a fresh head unless the checkpoint has one of that size)."""
    return load_pretrained(name_or_path, task="sequence_classification", num_labels=num_labels, dtype=dtype, **kwargs)
