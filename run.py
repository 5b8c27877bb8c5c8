"""Train, test and record one run: ``python run.py [experiment=<name>] [key=value ...]`` (see README.md).

Hydra composes ``conf/train.yaml`` with the overrides; ``hedgehog.train.preflight`` checks the config, the run
folder and the pretrained models before torch is imported; ``hedgehog.train.pipeline.train`` does the rest and
writes ``results.json`` into the run folder. Errors the user can fix (an unknown experiment or key, a bad value,
missing data, an unwritable log folder, a bad checkpoint, a diverging loss) end the run with a one-paragraph
message and exit status 2 (``hedgehog.train.cli_errors``).
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

import hedgehog.utils.resolvers  # noqa: F401  (registers the ${hh.*} resolvers used in conf/)
from hedgehog.train.cli_errors import errors_in_one_paragraph

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT / "conf"
os.environ.setdefault("HEDGEHOG_ROOT", str(ROOT))
os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing them: they are reported below


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with errors_in_one_paragraph(CONFIG_DIR):
        from hedgehog.train.preflight import preflight

        preflight(cfg, CONFIG_DIR)  # before torch: a bad command costs a second

        from hedgehog.train.pipeline import train

        train(cfg)


if __name__ == "__main__":
    with errors_in_one_paragraph(CONFIG_DIR):
        main()
