"""Lightning callbacks of the framework: the NaN guard and the plateau stop (configured in ``conf/callbacks/``) and,
added to every run by the pipeline, the pause at the end of a sitting and the stage's training throughput. Part of
the app: may import every other hedgehog package."""
