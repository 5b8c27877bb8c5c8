"""LightningModules, one per regime. Configs name them by full path (``hedgehog.regimes.<file>.<Class>``)."""
