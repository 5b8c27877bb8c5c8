import pytest

from hedgehog.metrics.rouge import rouge, rouge_per_example


def test_identical_strings_score_100():
    s = ["Amanda baked cookies and will bring Jerry some tomorrow."]
    out = rouge(s, s)
    assert out == {"rouge1": pytest.approx(100.0), "rouge2": pytest.approx(100.0),
                   "rougeL": pytest.approx(100.0), "rougeLsum": pytest.approx(100.0)}


def test_disjoint_strings_score_0():
    assert rouge(["alpha beta"], ["gamma delta"])["rouge1"] == 0.0


def test_hand_computed_overlap():
    # ref bigrams: the-cat cat-sat sat-on on-the the-mat; pred: the-cat cat-lay lay-on on-the the-mat -> 3/5
    out = rouge(["the cat lay on the mat"], ["The cat sat on the mat."])
    assert out["rouge2"] == pytest.approx(60.0)
    assert out["rouge1"] == pytest.approx(100 * 5 / 6)
    assert out["rougeL"] == pytest.approx(100 * 5 / 6)  # LCS "the cat on the mat"


def test_precision_recall_asymmetry_and_corpus_mean():
    # pred "the cat" vs 6-token ref: R1 P=1, R=2/6 -> F=0.5; R2 P=1, R=1/5 -> F=1/3
    per = rouge_per_example(["the cat"], ["the cat sat on the mat"])
    assert per["rouge1"][0] == pytest.approx(0.5)
    assert per["rouge2"][0] == pytest.approx(1 / 3)
    out = rouge(["the cat", "a b"], ["the cat sat on the mat", "a b"], rouge_types=("rouge1",))
    assert out == {"rouge1": pytest.approx(100 * (0.5 + 1.0) / 2)}


def test_stemming_switch():
    assert rouge(["cats running"], ["cat runs"], use_stemmer=True)["rouge1"] == pytest.approx(100.0)
    assert rouge(["cats running"], ["cat runs"], use_stemmer=False)["rouge1"] == 0.0


def test_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown ROUGE types"):
        rouge(["a"], ["a"], rouge_types=("rouge9",))
