"""The frame around the layers: config validation, the train/test pipeline behind ``run.py``, resumption and
``results.json``. Submodules are imported where they are used (``hedgehog.utils.pipeline`` pulls in Lightning)."""
