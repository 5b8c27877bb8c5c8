"""Train, test and record one run: ``python run.py [experiment=<name>] [key=value ...]`` (see README.md).

Hydra composes ``conf/train.yaml`` with the overrides; ``hedgehog.utils.pipeline.train`` does the rest and
writes ``results.json`` into the run folder. Errors the user can fix (a bad config value, a missing data
file, a diverging loss) end the run with a one-paragraph message and exit status 2.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import hedgehog.utils.resolvers  # noqa: F401  (registers the ${hh.*} resolvers used in conf/)
from hedgehog.utils.errors import HedgehogError

os.environ.setdefault("HEDGEHOG_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hedgehog.utils.pipeline import train

    try:
        train(cfg)
    except HedgehogError as error:
        print(f"\nerror: {error}\n", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
