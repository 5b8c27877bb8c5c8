"""experiments/claims.py and the tables behind it: mean ± std against a float64 reference, ties within the spread,
verdicts that follow the stated rules (seeds, equal budgets, thresholds), the report block, the GLUE ratio of
averages, and the MQAR learning rate chosen on validation, never on test."""

from __future__ import annotations

import importlib.util
import json
import random
import statistics
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))
import claims  # noqa: E402
from claims import Arm, compare  # noqa: E402


def seed_table(rows: dict[str, tuple[list[float], list[int]]], metric: str = "test/acc") -> pd.DataFrame:
    """A table in collect.table_seeds' columns: attention -> (values per seed, steps per seed)."""
    return pd.DataFrame([{
        "attention": name, "seeds": len(values), f"{metric}_mean": sum(values) / len(values),
        "per_seed": " ".join(f"s{i}={v}" for i, v in enumerate(values)),
        "steps_per_seed": " ".join(f"s{i}={st}" for i, st in enumerate(steps)),
    } for name, (values, steps) in rows.items()])


def test_mean_and_std_match_a_float64_reference_on_random_values():
    rng = random.Random(7)
    for n in (2, 3, 9):
        values = [rng.uniform(-5, 5) for _ in range(n)]
        arm = Arm(tuple(values))
        assert arm.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert arm.std == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert Arm((1.0,)).show() == "1 (1 seed)" and "±" in Arm((1.0, 2.0)).show()


def test_a_difference_within_the_spread_is_a_tie():
    assert compare(Arm((0.90, 0.94)), Arm((0.91, 0.93))) == "tie"
    assert compare(Arm((0.99, 0.98)), Arm((0.50, 0.52))) == "better"
    assert compare(Arm((240.0, 241.0)), Arm((230.0, 231.0)), higher_is_better=False) == "worse"
    assert compare(Arm((0.9,)), Arm((0.5, 0.6))) == "unknown spread"


def mqar_verdicts(rows):
    return [c.verdict for c in claims.claim_mqar({"mqar_zoology": seed_table(rows)})]


def test_mqar_verdicts_follow_seeds_budgets_and_thresholds():
    steps = [25000] * 3
    good = {"softmax": ([0.995, 0.998, 0.996], steps), "hedgehog": ([0.97, 0.98, 0.975], steps),
            "elu": ([0.3, 0.31, 0.29], steps), "t2r": ([0.4, 0.42, 0.41], steps), "cosformer": ([0.2, 0.25, 0.22], steps)}
    assert mqar_verdicts(good) == ["reproduced", "reproduced"]
    worse = dict(good, hedgehog=([0.90, 0.91, 0.92], steps))
    assert mqar_verdicts(worse)[0] == "not"
    two_seeds = {k: (v[:2], s[:2]) for k, (v, s) in good.items()}
    assert mqar_verdicts(two_seeds) == ["partly", "partly"]
    uneven = dict(good, softmax=([0.995, 0.998, 0.996], [25000, 25000, 20000]))
    assert mqar_verdicts(uneven)[0] == "partly"
    weak_softmax = dict(good, softmax=([0.97, 0.98, 0.975], steps))
    assert mqar_verdicts(weak_softmax)[0] == "partly"
    close_earlier = dict(good, t2r=([0.95, 0.96, 0.97], steps))  # within the spread of Hedgehog: not clearly below
    assert mqar_verdicts(close_earlier)[1] == "not"


def test_wikitext_gap_closed_and_glue_ratio_of_averages():
    steps = [250] * 3
    wt = seed_table({"softmax": ([20.0, 20.2, 20.1], steps), "hedgehog": ([21.0, 21.1, 20.9], steps),
                     "elu": ([25.0, 25.2, 25.1], steps)}, "test/ppl")
    (claim,) = claims.claim_wikitext_scratch({"wikitext_seeds_h200": wt})
    assert claim.verdict == "reproduced" and "gap closed 82%" in claim.why  # (25.1 - 21.0) / (25.1 - 20.1)
    glue = pd.DataFrame({"attention": ["softmax", "hedgehog", "t2r"], "average": [70.0, 63.0, 58.0]})
    first, second = claims.claim_glue({"glue_h200": glue})
    assert first.verdict == "not" and "90.0%" in first.ours
    assert second.verdict == "partly" and "+5.0" in second.ours


def test_report_block_is_replaced_between_its_markers_only(tmp_path):
    report = tmp_path / "REPORT.md"
    report.write_text(f"# title\n\nintro\n\n{claims.START}\nold\n{claims.END}\n\n## rest\n")
    table = claims.claims({})
    assert claims.write_report_block(report, table)
    text = report.read_text()
    assert text.startswith("# title\n\nintro\n\n") and text.endswith("\n\n## rest\n") and "old" not in text
    assert "| MQAR: Hedgehog recalls as well as softmax |" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not claims.write_report_block(plain, table) and plain.read_text() == "no markers\n"


def load_collect():
    spec = importlib.util.spec_from_file_location("collect", REPO / "experiments" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mqar_learning_rate_is_chosen_on_validation_at_seed_0(tmp_path):
    collect = load_collect()
    runs = tmp_path / "results" / "runs"

    def run(att, lr, seed, val, test):
        d = runs / "gpu_h" / "mqar_zoology" / f"{att}_lr{lr}_s{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "status": "complete", "experiment": "mqar_zoology", "attention": att, "seed": seed, "lr": lr,
            "metrics": {"val/acc": val, "test/acc": test}, "stages": {"train": {"global_step": 100}},
            "device": {"accelerator": "cuda", "name": "x"}}))

    run("hedgehog", 1e-3, 0, 0.90, 0.50)   # best validation: chosen, although its test is lower
    run("hedgehog", 1e-2, 0, 0.80, 0.99)
    run("hedgehog", 1e-3, 1, 0.92, 0.93)
    run("softmax", 1e-3, 0, 0.99, 0.99)
    tables = collect.collect([], tmp_path / "results", tmp_path / "figures")
    sweep = tables["mqar_zoology_lr"]
    chosen = sweep[sweep["chosen"]].set_index("attention")["lr"].to_dict()
    assert chosen == {"softmax": 1e-3, "hedgehog": 1e-3}
    seeds = tables["mqar_zoology"].set_index("attention")
    assert seeds.loc["hedgehog", "seeds"] == 2 and seeds.loc["hedgehog", "lr"] == 1e-3
    assert seeds.loc["hedgehog", "test/acc_mean"] == pytest.approx((0.50 + 0.93) / 2)
    assert (tmp_path / "results" / "claims.md").is_file()


def test_glue_over_seeds_gives_the_ratio_of_averages_and_ties(tmp_path):
    collect = load_collect()
    runs = tmp_path / "results" / "runs" / "gpu_i" / "glue_seeds"
    scores = {("softmax", 0): (80.0, 60.0), ("softmax", 1): (82.0, 62.0), ("softmax", 2): (81.0, 58.0),
              ("hedgehog", 0): (79.0, 61.0), ("hedgehog", 1): (81.0, 59.0), ("hedgehog", 2): (80.0, 60.0),
              ("t2r", 0): (70.0, 50.0), ("t2r", 1): (71.0, 51.0), ("t2r", 2): (69.0, 49.0)}
    for (att, seed), (sst2, rte) in scores.items():
        for task, score in (("sst2", sst2), ("rte", rte)):
            d = runs / f"{task}_{att}_s{seed}"
            d.mkdir(parents=True)
            (d / "results.json").write_text(json.dumps({
                "status": "complete", "attention": att, "data": f"glue/{task}", "seed": seed,
                "metrics": {"test/score": score}, "stages": {"finetune_linear": {"global_step": 400}},
                "device": {"accelerator": "cuda", "name": "x"}}))
    (hidden := runs / "rte_hedgehog_s3").mkdir()  # a seed without every task: not in the averages
    (hidden / "results.json").write_text(json.dumps({
        "status": "complete", "attention": "hedgehog", "data": "glue/rte", "seed": 3, "metrics": {"test/score": 0.0},
        "stages": {}, "device": {"accelerator": "cuda", "name": "x"}}))
    tables = collect.collect([], tmp_path / "results", tmp_path / "figures")
    t = tables["glue_seeds"].set_index("attention")
    assert t.loc["hedgehog", "seeds"] == 3 and t.loc["softmax", "average_mean"] == pytest.approx(70.5)
    assert t.loc["hedgehog", "recovered_pct_of_average"] == pytest.approx(100 * 70.0 / 70.5)
    assert t.loc["hedgehog", "vs_softmax"] == "tie" and t.loc["t2r", "vs_softmax"] == "worse"
    first, second = claims.claim_glue(tables)
    assert first.verdict == "reproduced" and "99.3%" in first.ours
    assert second.verdict == "reproduced" and "vs t2r: better" in second.why
