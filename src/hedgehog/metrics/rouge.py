"""ROUGE-1/2/L/Lsum F-measures (x100) for summarisation, computed offline with ``rouge_score``.

Same scorer as the ``evaluate`` "rouge" metric (Google's ``rouge_score`` package, default tokenizer:
lower-case, non-alphanumerics dropped; ``scorer.score(reference, prediction)``; the four default ROUGE
types; F-measure). Two documented differences from ``evaluate``'s defaults:

- ``use_stemmer`` is True here (Porter stemming, the common practice for SAMSum/CNN-DM reporting);
  ``evaluate`` defaults to False. Pass ``use_stemmer=False`` to reproduce it exactly.
- the corpus score is the exact mean of per-example F-measures; ``evaluate``'s ``BootstrapAggregator`` reports
  the median of 1,000 random bootstrap means, which approximates the same mean but varies with the RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_per_example(
    predictions: Sequence[str],
    references: Sequence[str],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
) -> dict[str, list[float]]:
    """Per-example ROUGE F-measures in [0, 1]: ``{rouge_type: [f_1, ..., f_N]}``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    bad = [t for t in rouge_types if t not in ROUGE_TYPES]
    if bad:
        raise ValueError(f"unknown ROUGE types {bad}; valid: {list(ROUGE_TYPES)}")
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
    out: dict[str, list[float]] = {t: [] for t in rouge_types}
    for ref, pred in zip(references, predictions):
        scores = scorer.score(ref, pred)
        for t in rouge_types:
            out[t].append(scores[t].fmeasure)
    return out


def rouge(
    predictions: Sequence[str],
    references: Sequence[str],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
) -> dict[str, float]:
    """Corpus ROUGE: mean F-measure over examples, x100. ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}``."""
    if len(predictions) == 0:
        raise ValueError("no predictions to score")
    per = rouge_per_example(predictions, references, rouge_types, use_stemmer)
    return {t: 100.0 * sum(v) / len(v) for t, v in per.items()}
