import math

import numpy as np
import pytest

from hedgehog.metrics.glue import glue_metric_names, glue_metrics, glue_score, predictions_from_logits


def test_binary_confusion_matrix_by_hand():
    # TP=4, FP=2, FN=1, TN=3
    refs = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]
    m = glue_metrics("mrpc", preds, refs)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    assert glue_score("mrpc", m) == pytest.approx(100 * (0.7 + 8 / 11) / 2)
    mcc = glue_metrics("cola", preds, refs)["matthews_correlation"]
    assert mcc == pytest.approx((4 * 3 - 2 * 1) / math.sqrt(6 * 5 * 5 * 4))
    assert glue_score("CoLA", {"matthews_correlation": mcc}) == pytest.approx(100 * mcc)


def test_f1_is_for_the_positive_class():
    # all-negative predictions: accuracy can be high while F1 of the positive class is 0
    m = glue_metrics("qqp", [0, 0, 0, 0], [0, 0, 0, 1])
    assert m == {"accuracy": pytest.approx(0.75), "f1": 0.0}


def test_constant_predictions_have_zero_matthews():
    assert glue_metrics("cola", [1, 1, 1], [0, 1, 1])["matthews_correlation"] == 0.0


def test_stsb_correlations_by_hand():
    m = glue_metrics("stsb", [0.0, 1.0, 2.0], [0.0, 1.0, 5.0])
    assert m["pearson"] == pytest.approx(5 / math.sqrt(2 * 14))
    assert m["spearmanr"] == pytest.approx(1.0)
    m = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["spearmanr"] == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))
    assert glue_score("stsb", m) == pytest.approx(100 * (m["pearson"] + m["spearmanr"]) / 2)


def test_multiclass_accuracy_and_logits():
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    preds = predictions_from_logits("mnli", logits)
    assert preds.tolist() == [0, 2, 1, 0]
    assert glue_metrics("mnli", preds, [0, 2, 2, 1]) == {"accuracy": 0.5}
    assert predictions_from_logits("stsb", np.array([[0.5], [4.0]])).tolist() == [0.5, 4.0]


def test_metric_names_and_errors():
    assert glue_metric_names("sst2") == ("accuracy",)
    assert glue_metric_names("stsb") == ("pearson", "spearmanr")
    with pytest.raises(ValueError, match="unknown GLUE task 'sst3'.*cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte"):
        glue_metrics("sst3", [0], [0])
    with pytest.raises(ValueError, match="same length"):
        glue_metrics("rte", [0, 1], [0])
    with pytest.raises(ValueError, match="lack"):
        glue_score("mrpc", {"accuracy": 1.0})
