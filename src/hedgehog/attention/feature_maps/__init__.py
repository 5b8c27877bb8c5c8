"""Feature maps, one file each; importing this package registers them (in ``FEATURE_MAP_NAMES`` order)."""

from hedgehog.attention.feature_maps.base import FeatureMap, FeaturePair
from hedgehog.attention.feature_maps.hedgehog import HedgehogFeatureMap
from hedgehog.attention.feature_maps.taylor import TaylorFeatureMap
from hedgehog.attention.feature_maps.elu import EluFeatureMap
from hedgehog.attention.feature_maps.performer import PerformerFeatureMap
from hedgehog.attention.feature_maps.cosformer import CosFormerFeatureMap
from hedgehog.attention.feature_maps.t2r import T2RFeatureMap
from hedgehog.attention.feature_maps.hedgehog_window import HedgehogWindowFeatureMap

__all__ = [
    "FeatureMap",
    "FeaturePair",
    "HedgehogFeatureMap",
    "TaylorFeatureMap",
    "EluFeatureMap",
    "PerformerFeatureMap",
    "CosFormerFeatureMap",
    "T2RFeatureMap",
    "HedgehogWindowFeatureMap",
]
