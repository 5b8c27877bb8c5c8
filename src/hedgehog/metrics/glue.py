"""GLUE task metrics computed offline with scikit-learn and scipy.

The numbers are the ones the official GLUE scorer (and the ``evaluate`` "glue" metric) reports:

| task | metrics |
| --- | --- |
| CoLA | Matthews correlation |
| SST-2, QNLI, RTE, MNLI, WNLI | accuracy |
| MRPC, QQP | accuracy and F1 of the positive class (1 = paraphrase / duplicate) |
| STS-B | Pearson and Spearman correlation between predicted and gold similarity |

Metric values are on their natural scale (accuracy in [0, 1], correlations in [-1, 1]); the task's headline
``score`` is the mean of its metrics times 100, the number the GLUE leaderboard shows for the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

GLUE_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
REGRESSION_TASKS = frozenset({"stsb"})


def _check_task(task: str) -> str:
    key = task.lower()
    if key not in GLUE_TASK_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}; valid tasks: {', '.join(GLUE_TASK_METRICS)}")
    return key


def glue_metric_names(task: str) -> tuple[str, ...]:
    """The metric names reported for ``task`` (canonical lower-case name such as ``"sst2"``)."""
    return GLUE_TASK_METRICS[_check_task(task)]


def _correlation(kind, predictions: np.ndarray, references: np.ndarray) -> float:
    # A constant vector has no defined correlation; report 0 (no relationship), as scikit-learn does for
    # the Matthews coefficient, instead of a NaN that would poison averages and NaN checks.
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return float(kind(predictions, references)[0])


def glue_metrics(task: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Official GLUE metrics of one task.

    predictions: class ids (classification) or predicted similarity scores (STS-B), shape [N].
    references: gold class ids or gold scores, shape [N].
    Returns ``{metric_name: value}`` with the names of ``glue_metric_names(task)``.
    """
    key = _check_task(task)
    preds = np.asarray(predictions)
    refs = np.asarray(references)
    if preds.shape != refs.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and references {refs.shape} must be 1-D and the same length")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    if key in REGRESSION_TASKS:
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
        return {
            "pearson": _correlation(stats.pearsonr, preds, refs),
            "spearmanr": _correlation(stats.spearmanr, preds, refs),
        }
    preds, refs = preds.astype(np.int64), refs.astype(np.int64)
    out: dict[str, float] = {}
    for name in GLUE_TASK_METRICS[key]:
        if name == "accuracy":
            out[name] = float(accuracy_score(refs, preds))
        elif name == "f1":
            out[name] = float(f1_score(refs, preds, pos_label=1, average="binary", zero_division=0.0))
        elif name == "matthews_correlation":
            out[name] = float(matthews_corrcoef(refs, preds))
    return out


def glue_score(task: str, metrics: Mapping[str, float]) -> float:
    """The task's GLUE headline: the mean of its metrics, times 100."""
    names = glue_metric_names(task)
    missing = [n for n in names if n not in metrics]
    if missing:
        raise ValueError(f"metrics for {task!r} lack {missing}; got {sorted(metrics)}")
    return 100.0 * float(np.mean([metrics[n] for n in names]))


def predictions_from_logits(task: str, logits) -> np.ndarray:
    """Turn model outputs into GLUE predictions: argmax over classes, or the single regression output.

    logits: array-like [N, num_labels] (num_labels = 1 for STS-B).
    """
    arr = np.asarray(logits, dtype=np.float64)
    if _check_task(task) in REGRESSION_TASKS:
        return arr.reshape(arr.shape[0], -1)[:, 0]
    return arr.argmax(axis=-1)
