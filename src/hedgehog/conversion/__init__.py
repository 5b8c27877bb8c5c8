"""Conversion of pretrained Hugging Face Transformers to linear attention (Zhang et al., ICLR 2024, sec. 4-5).
May import: ``hedgehog.attention`` (and transformers, peft).

``convert(model, attention="hedgehog", **options)`` swaps the attention of BERT, GPT-2, Llama and other
models that route attention through transformers' ``AttentionInterface``; ``distillation`` / ``set_distillation``
/ ``pop_distillation_loss`` train the feature maps against the model's own softmax (stage 1); ``apply_lora``
prepares stage 2; ``save_converted`` / ``load_converted`` round-trip a converted model as a Hugging Face folder;
``LinearAttentionCache`` makes ``generate`` run on a constant-size recurrent state; ``decode.greedy_decode``
replays the one-token step from a CUDA graph.
"""

from hedgehog.conversion.checkpoint import FEATURE_MAPS_FILE, load_converted, save_converted
from hedgehog.conversion.cache import LinearAttentionCache, RecurrentStateLayer
from hedgehog.conversion.convert import (
    CONFIG_SECTION,
    SUPPORTED_MODELS,
    attention_modules,
    cache_argument,
    conversion_info,
    convert,
    converted_layers,
    is_converted,
    returned_cache,
)
from hedgehog.conversion.distillation import (
    distillation,
    feature_map_parameters,
    freeze_except_feature_maps,
    is_distilling,
    pop_distillation_loss,
    set_distillation,
    teacher_student_metrics,
)
from hedgehog.conversion.interface import ATTENTION_IMPLEMENTATION
from hedgehog.conversion.layer import ConvertedAttention
from hedgehog.conversion.lora import apply_lora, linear_module_names

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "CONFIG_SECTION",
    "SUPPORTED_MODELS",
    "ConvertedAttention",
    "FEATURE_MAPS_FILE",
    "LinearAttentionCache",
    "RecurrentStateLayer",
    "apply_lora",
    "attention_modules",
    "cache_argument",
    "conversion_info",
    "convert",
    "converted_layers",
    "distillation",
    "feature_map_parameters",
    "freeze_except_feature_maps",
    "is_converted",
    "is_distilling",
    "linear_module_names",
    "load_converted",
    "pop_distillation_loss",
    "returned_cache",
    "save_converted",
    "set_distillation",
    "teacher_student_metrics",
]
