"""nn.Module building blocks: an attention block that owns its q/k/v/o projections and a chosen attention type.
May import: ``hedgehog.attention``."""
