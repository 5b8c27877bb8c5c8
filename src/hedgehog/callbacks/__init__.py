"""Lightning callbacks of the framework (configured in ``conf/callbacks/``)."""
