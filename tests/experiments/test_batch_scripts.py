"""The batch scripts plan their jobs with batch_common.sh's `job` and run them through batch_runner.py.

Each script runs here with a stand-in interpreter: batch_runner.py runs for real, every other script a job calls
(run.py, export_teacher.py, efficiency.py, ...) is only recorded. The plans must be valid runner plans whose
run.py commands name existing experiments and data configs and write to distinct folders under the batch's logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = """#!/usr/bin/env bash
case "${{1:-}}" in
  experiments/batch_runner.py|-c) exec {real} "$@" ;;
  -) if [ $# -gt 1 ]; then exec {real} "$@"; fi
     cat > /dev/null
     for m in torch lightning transformers hydra omegaconf wandb; do echo "$m: stub"; done ;;
  *) echo "$*" >> {calls} ;;
esac
"""
RUN_DIR = re.compile(r"hydra\.(?:run|sweep)\.dir=(\S+)")
EXPERIMENT = re.compile(r"(?:^|\s)experiment=(\S+)")
DATA = re.compile(r"(?:^|\s)data=(\S+)")


def run_script(script: str, tmp_path: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``experiments/<script>`` with the stand-in interpreter; its calls are appended to ``tmp_path/calls.txt``."""
    stub = tmp_path / "python"
    stub.write_text(STUB.format(real=sys.executable, calls=tmp_path / "calls.txt"))
    stub.chmod(0o755)
    (tmp_path / "minilm").mkdir(exist_ok=True)
    (tmp_path / "minilm" / "config.json").write_text("{}")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ONLY", "LOGS", "T0", "SEED", "TOTAL_BUDGET_S", "SKIP_EFFICIENCY", "GLUE_TASKS", "GLUE_TYPES")}
    full_env = {**clean, "PYTHON": str(stub), "PY": str(stub), "WORK_DIR": str(tmp_path / "work"),
                "OUT": str(tmp_path / "out"), "HEDGEHOG_DATA_DIR": str(data_dir), "MINILM_DIR": str(tmp_path / "minilm"),
                "SMOKE_MODEL": str(tmp_path / "tiny_llama"), "WORKERS": "8", **env}
    return subprocess.run(["bash", str(REPO / "experiments" / script)], env=full_env, capture_output=True, text=True,
                          timeout=240)


def check_plan(runner, log_dir: Path, calls: Path) -> list:
    """The jobs of the plan in ``log_dir/_jobs``, checked: runner syntax, known configs, one output folder per
    run.py command, and each of those commands run (recorded by the stand-in interpreter)."""
    jobs = runner.read_plan(log_dir / "_jobs" / "plan.txt")
    commands = [c for job in jobs for c in job.command.split("&&") if " run.py " in f" {c} "]
    folders = [folder for c in commands for folder in RUN_DIR.findall(c)]
    assert len(folders) == len(commands) == len(set(folders)), "every run.py command writes a folder of its own"
    assert all(Path(f).is_relative_to(log_dir) for f in folders)
    for name in {n for c in commands for n in EXPERIMENT.findall(c)}:
        assert (REPO / "conf" / "experiment" / f"{name}.yaml").is_file(), name
    for name in {n for c in commands for n in DATA.findall(c)}:
        assert (REPO / "conf" / "data" / f"{name}.yaml").is_file(), name
    recorded = calls.read_text().splitlines()
    for folder in folders:
        assert any(f"dir={folder} " in f"{call} " and call.startswith("run.py ") for call in recorded), folder
    return jobs


def summary_rows(log_dir: Path) -> list[tuple[str, str]]:
    """``(name, status)`` of every job in ``log_dir/_jobs/summary.json``."""
    summary = json.loads((log_dir / "_jobs" / "summary.json").read_text())
    return [(job["name"], job["status"]) for job in summary["jobs"]]


@pytest.mark.parametrize("batch", ["a", "b", "c", "d", "g", "h", "i"])
def test_gpu_batch_smoke_plan(batch, batch_runner, tmp_path, data_dir):
    proc = run_script(f"gpu_batch_{batch}.sh", tmp_path, data_dir, SMOKE="1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log_dir = tmp_path / "work" / f"batch_{batch}"
    jobs = check_plan(batch_runner, log_dir, tmp_path / "calls.txt")
    assert jobs and summary_rows(log_dir) == [(job.name, "ok") for job in jobs]
    for job in jobs:
        if job.name.startswith("glue_"):
            seed = "_s" + job.name.rpartition("_s")[2] if batch == "i" else ""  # batch I: a teacher per seed
            assert job.after == ["teacher_" + job.name.split("_")[1] + seed], "a GLUE arm starts from its task's teacher"
    assert (tmp_path / "out" / f"batch_{batch}.tar.gz").is_file()


def test_mqar_seeds_phase_needs_the_sweep_first(batch_runner, tmp_path, data_dir):
    proc = run_script("gpu_batch_h.sh", tmp_path, data_dir, SMOKE="1", PHASE="seeds")
    assert proc.returncode == 1
    assert "no learning rates chosen yet (run PHASE=sweep to completion first)" in proc.stdout


def test_cpu_batch_plans_every_section_and_keeps_one_summary(batch_runner, tmp_path, data_dir):
    logs = tmp_path / "cpu"
    proc = run_script("cpu_batch.sh", tmp_path, data_dir, LOGS=str(logs), GLUE_TASKS="sst2 rte")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = check_plan(batch_runner, logs, tmp_path / "calls.txt")
    linear = ["hedgehog", "t2r", "elu", "performer", "cosformer", "taylor"]
    every = ["softmax", "hedgehog", "taylor", "elu", "performer", "cosformer", "t2r"]
    mqar = [f"mqar_{att}" for att in every]
    expected = (
        [f"teacher_{task}" for task in ("sst2", "rte")]
        + [f"glue_{task}_{att}" for task in ("sst2", "rte") for att in linear]
        + [f"abl_glue_{name}" for name in ("no_distill", "distill_mse", "activation_softmax", "init_random",
                                           "feature_dim_16")]
        + [f"wikitext_smollm2_{arm}" for arm in ("zeroshot", "hedgehog", "t2r", "elu", "softmax")]
        + [f"wikitext_{att}" for att in every] + mqar
        + [f"abl_mqar_{name}" for name in ("feature_dim", "activation", "init")]
    )
    assert sorted(job.name for job in jobs) == sorted(expected)
    after = {job.name: job.after for job in jobs}
    assert after["glue_rte_taylor"] == ["teacher_rte"] and after["abl_glue_init_random"] == ["teacher_sst2"]
    assert after["mqar_softmax"] == [] and {job.timeout for job in jobs} == {600, 900, 1200, 1800, 2400}
    assert all("trainer=cpu" in job.command for job in jobs if "run.py" in job.command)
    assert sorted(summary_rows(logs)) == sorted((name, "ok") for name in expected)

    # a second invocation into the same folder: its jobs join the summary of the first one's
    proc = run_script("cpu_batch.sh", tmp_path, data_dir, LOGS=str(logs), ONLY="cpu_mqar")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [job.name for job in check_plan(batch_runner, logs, tmp_path / "calls.txt")] == mqar
    assert sorted(summary_rows(logs)) == sorted((name, "ok") for name in expected + mqar)
    assert len((logs / "_jobs" / "jobs.jsonl").read_text().splitlines()) == len(expected) + len(mqar)
