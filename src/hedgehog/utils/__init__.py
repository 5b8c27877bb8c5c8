"""The frame around the layers, one idea per module (submodules are imported where they are used;
``hedgehog.utils.pipeline`` pulls in Lightning):

- before torch starts: ``validation`` (the config, with signatures read from source by ``static_signature``),
  ``log_folder`` (the run folder is writable, its disk has room), ``model_availability`` (pretrained models on disk
  or downloadable), ``preflight`` (all three), ``cli_errors`` (every user error as one paragraph, exit status 2);
- the run: ``pipeline`` (build, train stage by stage, test, record), ``run_lock`` (one process per run folder),
  ``data_identity`` (which data files were read, checked against the data folder's checksums), ``checkpoints`` and
  ``atomic_files`` (atomic writes, checked loads with fallback), ``resume`` (exact resumption), ``csv_logger``;
- the record: ``results`` (``results.json``), ``provenance`` (the commit that ran, and whether it is on main).
"""
