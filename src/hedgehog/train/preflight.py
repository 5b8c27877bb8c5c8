"""Everything ``run.py`` checks before torch, Lightning or W&B start: a bad command costs a second.

``preflight(cfg, config_dir)``: the config (``hedgehog.train.validation``: keys, types, counts, attention type,
data folders), the run folder (writable, room on its disk: ``hedgehog.train.log_folder``) and the pretrained
models the config names (on disk or downloadable: ``hedgehog.train.model_availability``). Each problem raises a
``HedgehogError`` whose message is the paragraph ``run.py`` prints.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from hedgehog.train.log_folder import check_run_folder
from hedgehog.train.model_availability import check_models_available
from hedgehog.train.validation import validate_config


def chosen_experiment() -> str | None:
    """The ``experiment=`` option Hydra composed, when it did."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("experiment")
    return None


def preflight(cfg: DictConfig, config_dir: str | Path) -> None:
    """Check the config, the run folder and the pretrained models; raise the first problem found."""
    validate_config(cfg, config_dir)
    check_run_folder(Path(cfg.paths.output_dir))
    check_models_available(cfg, chosen_experiment(), config_dir)
