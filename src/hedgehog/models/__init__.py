"""Models: a nanoGPT-sized decoder for training from scratch, and loading of pretrained checkpoints and tokenizers.
May import: ``hedgehog.attention``, ``hedgehog.layers``."""
