"""nn.Module building blocks: an attention block that owns its projections and a chosen attention type."""
