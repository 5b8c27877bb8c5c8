"""Build (or extend) the cached conversion corpus of an experiment without training: the ``text_mix`` data of
``experiment=<name>`` with the given overrides, as ``run.py`` would compose it. Teacher samples are made in
resumable shards, so the command can be stopped and rerun; it prints the manifest (tokens per source).

    python experiments/build_corpus.py experiment=wikitext_smollm2_hedgehog data.teacher.tokens=2000000
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import hedgehog.utils.resolvers  # noqa: F401

    os.environ.setdefault("HEDGEHOG_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=False)
    data = cfg.data
    if not str(data.get("_target_", "")).endswith("TextMixDataModule"):
        raise SystemExit(f"the composed data module is {data.get('_target_')}, not the text_mix corpus; add data=text_mix")
    module = instantiate(data)
    module.setup()
    print(json.dumps(module.manifest, indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(sys.argv[1:])
