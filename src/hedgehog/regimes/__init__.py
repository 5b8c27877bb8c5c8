"""LightningModules, one per regime. Configs name them by full path (``hedgehog.regimes.<file>.<Class>``).
May import: hedgehog.attention, conversion, models, data, metrics; not the app (utils, callbacks)."""
