"""The app behind ``run.py``: what happens between a composed config and ``results.json``. May import every
other hedgehog package; nothing in the library imports it.

- before torch starts: ``validation`` (the config, with signatures read from source by ``static_signature``),
  ``log_folder`` (the run folder is writable, its disk has room), ``model_availability`` (pretrained models on disk
  or downloadable), ``preflight`` (all three), ``cli_errors`` (every user error as one paragraph, exit status 2);
- the run: ``pipeline`` (build, train stage by stage, test, record), ``run_lock`` (one process per run folder),
  ``data_identity`` (which data files were read, checked against the data folder's checksums), ``checkpoints``
  (atomic checkpoint writes, checked loads with fallback), ``resume`` (exact resumption).

Submodules are imported where they are used (``pipeline`` pulls in Lightning).
"""
