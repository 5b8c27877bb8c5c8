"""Lightning callbacks of the framework: the NaN guard (configured in ``conf/callbacks/``) and the pause at the end of
a sitting (added to every run by the pipeline). Part of the app: may import every other hedgehog package."""
