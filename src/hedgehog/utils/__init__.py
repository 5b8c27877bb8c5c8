"""The app around the layers: config validation, the train/test pipeline behind ``run.py``, resumption, results.json.
May import every other hedgehog package. Submodules are imported where used (``pipeline`` pulls in Lightning)."""
