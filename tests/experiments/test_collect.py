"""experiments/collect.py: runs become per-setting tables (CPU unsuffixed, GPU ``_gpu``), the same run in a later
batch wins, and a GLUE average is given only over the full set of tasks."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("pandas")
REPO = Path(__file__).resolve().parents[2]


def load_collect():
    spec = importlib.util.spec_from_file_location("collect", REPO / "experiments" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root: Path, batch: str, name: str, attention: str, task: str, score: float, teacher: float,
              accelerator: str) -> None:
    run = root / batch / "glue" / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "status": "complete", "experiment": f"glue_minilm_{attention}", "attention": attention,
        "data": f"glue/{task}", "seed": 0, "metrics": {"test/score": score, "teacher/test/score": teacher},
        "stages": {"finetune_linear": {"global_step": 10}}, "device": {"accelerator": accelerator, "name": "x"},
    }))


def test_glue_tables_per_setting_latest_batch_and_full_task_averages(tmp_path):
    collect = load_collect()
    results = tmp_path / "results"
    runs = results / "runs"
    for task, soft, hh in (("sst2", 80.0, 76.0), ("rte", 60.0, 57.0)):
        write_run(runs, "gpu_a", f"{task}_softmax", "softmax", task, soft, soft, "cuda")
        write_run(runs, "gpu_a", f"{task}_hedgehog", "hedgehog", task, hh, soft, "cuda")
    write_run(runs, "gpu_a", "sst2_t2r", "t2r", "sst2", 70.0, 80.0, "cuda")      # t2r: one task of two
    write_run(runs, "gpu_b", "sst2_t2r", "t2r", "sst2", 72.0, 80.0, "cuda")      # a later batch: this one counts
    write_run(runs, "cpu_a", "sst2_hedgehog", "hedgehog", "sst2", 50.0, 55.0, "cpu")
    write_run(runs, "cpu_a", "sst2_softmax", "softmax", "sst2", 55.0, 55.0, "cpu")

    tables = collect.collect([], results, tmp_path / "figures")

    gpu = tables["glue_gpu"].set_index("attention")
    assert gpu.loc["hedgehog", "sst2"] == 76.0 and gpu.loc["hedgehog", "rte"] == 57.0
    assert gpu.loc["hedgehog", "average"] == pytest.approx(66.5)
    assert gpu.loc["hedgehog", "recovered_pct_avg"] == pytest.approx(100 * (76 / 80 + 57 / 60) / 2)
    assert gpu.loc["t2r", "sst2"] == 72.0 and gpu.loc["t2r", "tasks_run"] == 1
    assert math.isnan(gpu.loc["t2r", "average"])  # no average over a partial set of tasks
    cpu = tables["glue"].set_index("attention")
    assert cpu.loc["hedgehog", "sst2"] == 50.0 and "rte" not in cpu.columns  # CPU runs stay in the CPU table
    assert (results / "glue_gpu.md").is_file() and (tmp_path / "figures" / "glue_scores_gpu.png").is_file()


def write_mqar(root: Path, batch: str, family: str, name: str, attention: str, acc: float, options=None) -> None:
    run = root / batch / family / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "status": "complete", "experiment": f"mqar_{attention}", "attention": attention,
        "attention_options": options or {}, "data": "mqar", "seed": 0, "metrics": {"test/acc": acc},
        "stages": {"train": {"global_step": 2000}}, "device": {"accelerator": "cpu", "name": "x"},
    }))


def test_mqar_recipe_table_and_its_ablations_against_the_same_batch_reference(tmp_path):
    collect = load_collect()
    results = tmp_path / "results"
    runs = results / "runs"
    write_mqar(runs, "cpu_b", "mqar_recipe", "softmax", "softmax", 0.98)
    write_mqar(runs, "cpu_b", "mqar_recipe", "hedgehog", "hedgehog", 0.90)
    write_mqar(runs, "cpu_a", "cpu_mqar", "hedgehog", "hedgehog", 0.25)  # another setting: not the reference
    write_mqar(runs, "cpu_b", "ablation_mqar_recipe", "init_random", "hedgehog", 0.70, {"init": "random"})

    tables = collect.collect([], results, tmp_path / "figures")

    recipe = tables["mqar_recipe"].set_index("attention")
    assert recipe.loc["softmax", "test_acc"] == 0.98 and recipe.loc["hedgehog", "test_acc"] == 0.90
    assert tables["cpu_mqar"].set_index("attention").loc["hedgehog", "test_acc"] == 0.25
    abl = tables["ablations_mqar_recipe"].set_index("setting")
    assert abl.loc["hedgehog (default)", "test_acc"] == 0.90 and abl.loc["init_random", "test_acc"] == 0.70
    assert (tmp_path / "figures" / "mqar_recipe_accuracy.png").is_file()
    assert (tmp_path / "figures" / "ablations_mqar_recipe.png").is_file()


def write_seed_run(root: Path, batch: str, family: str, name: str, attention: str, seed: int, metrics: dict,
                   steps: int, device: str = "NVIDIA H200") -> None:
    run = root / batch / family / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "status": "complete", "experiment": f"{family}_{attention}", "attention": attention, "data": family,
        "seed": seed, "metrics": metrics, "stages": {"train": {"global_step": steps}},
        "device": {"accelerator": "cuda", "name": device},
    }))


def test_seed_tables_and_the_h200_setting(tmp_path):
    collect = load_collect()
    results = tmp_path / "results"
    runs = results / "runs"
    for seed, (soft, hh) in enumerate(((0.9, 0.3), (0.7, 0.5))):
        write_seed_run(runs, "h200_c", "mqar_seeds", f"softmax_s{seed}", "softmax", seed, {"test/acc": soft}, 2000)
        write_seed_run(runs, "h200_c", "mqar_seeds", f"hedgehog_s{seed}", "hedgehog", seed, {"test/acc": hh}, 1500)
    write_seed_run(runs, "h200_d", "mqar_seeds", "hedgehog_s1", "hedgehog", 1, {"test/acc": 0.6}, 2500)  # later batch wins
    write_seed_run(runs, "h200_d", "ablation_mqar_seeds", "hedgehog_s2", "hedgehog", 2, {"test/acc": 0.4}, 2400)
    write_seed_run(runs, "h200_d", "ablation_mqar_seeds", "init_random_s2", "hedgehog", 2, {"test/acc": 0.5}, 2900)
    for seed, ppl in ((0, 100.0), (1, 110.0)):
        write_seed_run(runs, "h200_c", "wikitext", f"softmax_s{seed}", "softmax", seed, {"test/ppl": ppl}, 250)
    write_seed_run(runs, "h100_a", "wikitext", "softmax", "softmax", 0, {"test/ppl": 300.0}, 250, "NVIDIA H100 80GB HBM3")

    tables = collect.collect([], results, tmp_path / "figures")

    mq = tables["mqar_seeds"].set_index("attention")
    assert mq.loc["softmax", "test/acc_mean"] == pytest.approx(0.8)
    assert mq.loc["hedgehog", "test/acc_mean"] == pytest.approx(0.45)  # 0.3 (batch c) and 0.6 (batch d)
    assert mq.loc["hedgehog", "steps_per_seed"] == "s0=1500 s1=2500"
    assert list(tables["mqar_seeds"]["attention"]) == ["softmax", "hedgehog"]
    abl = tables["ablations_mqar_seeds"].set_index("setting")
    assert abl.loc["hedgehog (default)", "test/acc_mean"] == 0.4 and abl.loc["init_random", "per_seed"] == "s2=0.5"
    assert tables["wikitext_h200"]["test_ppl"].tolist() == [100.0, 110.0]  # H200 runs: their own table
    assert tables["wikitext_gpu"]["test_ppl"].tolist() == [300.0]
    assert tables["wikitext_seeds_h200"].set_index("attention").loc["softmax", "test/ppl_std"] == pytest.approx(50 ** 0.5)
    assert "wikitext_seeds_gpu" not in tables  # one seed: no seed table
    assert (tmp_path / "figures" / "mqar_seeds.png").is_file() and (results / "wikitext_h200.md").is_file()
