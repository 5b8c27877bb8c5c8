"""Lightning callbacks of the framework (configured in ``conf/callbacks/``): the NaN guard.
Part of the app: may import every other hedgehog package."""
