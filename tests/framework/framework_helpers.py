"""Helpers of the framework tests: compose a config as run.py would, and run run.py as a user would (a module with
its own name, so that tests import it whatever other test folders pytest collects with them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import hedgehog.utils.resolvers  # noqa: F401  (the ${hh.*} resolvers)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
SUPPORT_DIR = Path(__file__).resolve().parent

# A MQAR job that trains in a few seconds: tiny data, 6 steps, CSV logging only.
TINY_MQAR = [
    "experiment=mqar",
    "data.vocab_size=32", "data.seq_len=16", "data.num_kv_pairs=2",
    "data.num_train=256", "data.num_val=64", "data.num_test=64", "data.batch_size=32",
    "model.d_model=16",
    "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "regime.warmup_steps=2", "logger=csv",
]


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, as run.py's task function receives it (Hydra's node removed,
    HydraConfig set so ``${hydra:...}`` resolves); ``output_dir`` becomes ``paths.output_dir``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_py(args: list[str], log_dir: Path, timeout: float = 300, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess:
    """``python run.py *args`` from the repo root with logs under ``log_dir``; output captured as text."""
    full_env = dict(os.environ)
    full_env.update(
        HEDGEHOG_LOG_DIR=str(log_dir),
        PYTHONPATH=os.pathsep.join(filter(None, [str(SUPPORT_DIR), os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="0",
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), *args], cwd=REPO_ROOT, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )



def run_killed(common: list[str], log_dir: Path, run_dir: Path, kill_step: int) -> None:
    """Run ``common`` in ``run_dir`` and kill it (SIGKILL) at step ``kill_step``, as a crash would."""
    killed = run_py(common + [f"hydra.run.dir={run_dir}", "+callbacks.kill._target_=framework_support.KillAtStep",
                              f"+callbacks.kill.step={kill_step}"], log_dir)
    assert killed.returncode == -9, killed.stderr[-3000:]
