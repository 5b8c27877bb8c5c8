"""hedgehog: expressive linear attention with softmax mimicry (Zhang et al., ICLR 2024).

Layers (each imports only the ones above it): ``hedgehog.attention`` (pure maths),
``hedgehog.kernels`` (Triton), ``hedgehog.layers``/``hedgehog.models`` (modules),
``hedgehog.conversion`` (Hugging Face conversion, exposed as ``hedgehog.convert``), ``hedgehog.data``/``hedgehog.metrics``,
``hedgehog.regimes`` (LightningModules), and the app: ``run.py`` + ``conf/`` (Hydra) + ``hedgehog.train``.
``hedgehog.utils`` holds leaves any package may import. Importing ``hedgehog`` itself loads nothing heavy.
"""

__version__ = "0.1.0"


def convert(model, attention="hedgehog", **options):
    """Swap every self-attention of a Hugging Face model for ``attention``; see ``hedgehog.conversion.convert``."""
    from hedgehog.conversion import convert as _convert

    return _convert(model, attention=attention, **options)
