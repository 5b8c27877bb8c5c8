"""``LinearAttentionCache``: constant-size decoding state for converted causal LMs.

A transformers ``Cache`` whose layers keep, instead of every past key and value, the causal linear-attention
state ``S [B, Hk, F, Dv]``, ``z [B, Hk, F]`` (``RecurrentState``, with the key shift of the stabilised features)
or, for the sliding-window hybrid, a ``HybridState`` (that state plus the window's keys and values), and a token
count. The model's attention code
still calls ``cache.update(k, v, layer_idx)``: the layer counts the new tokens (so ``get_seq_length`` and hence
positions / RoPE are right) and hands the same k, v back; the converted layer then folds them into the state
(prefill: ``linear_attention(..., return_state=True)``, decode: ``recurrent_step``). Memory does not grow with
the sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

from hedgehog.attention import HybridState, RecurrentState


def _map_tensors(value, fn):
    """``value`` with ``fn`` applied to every tensor inside it (tensors, NamedTuples of them, None, ints)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(v, fn) for v in value))
    return value


def _flat_tensors(value):
    """Every tensor inside ``value`` (tensors, tuples and NamedTuples of them), in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _flat_tensors(v)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


class RecurrentStateLayer(CacheLayerMixin):
    """One layer's state (``RecurrentState`` or ``HybridState``; None before the first token), the key shift of
    its stabilised features (None for maps without one) and the number of tokens it has seen."""

    is_compileable = False
    is_croppable = False
    is_sliding = False
    supports_early_init = False

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.state: RecurrentState | HybridState | None = None
        self.key_shift: torch.Tensor | None = None
        self.seen = 0
        self.in_place = False  # store() copies into the tensors already held (a captured CUDA graph reads them)

    def __repr__(self) -> str:
        linear = self.state.linear if isinstance(self.state, HybridState) else self.state
        shape = None if linear is None else list(linear.S.shape)
        return f"{type(self).__name__}(seen={self.seen}, S={shape})"

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Count the new tokens and return k, v unchanged (the converted layer updates ``state``)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[-2]
        return key_states, value_states

    def store(self, state: RecurrentState | HybridState, key_shift: torch.Tensor | None) -> None:
        """Keep the layer's new state: assigned, or, with ``in_place`` and a state already held, copied into the
        held tensors (which must then have the same shapes)."""
        if not (self.in_place and self.state is not None):
            self.state, self.key_shift = state, key_shift
            return
        held = list(_flat_tensors((self.state, self.key_shift)))
        new = list(_flat_tensors((state, key_shift)))
        if len(held) != len(new) or any(h.shape != n.shape for h, n in zip(held, new)):
            raise RuntimeError(
                "RecurrentStateLayer.store: an in-place cache needs a state of constant shapes, got "
                f"{[list(t.shape) for t in new]} for {[list(t.shape) for t in held]}"
            )
        for h, n in zip(held, new):
            if h is not n:
                h.copy_(n)

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:
        return -1

    def _map_state(self, fn) -> None:
        self.state = _map_tensors(self.state, fn)
        self.key_shift = _map_tensors(self.key_shift, fn)

    def offload(self) -> None:
        self._map_state(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        if self.is_initialized:
            self._map_state(lambda t: t.to(self.device, non_blocking=True))

    def reset(self) -> None:
        self.state, self.key_shift, self.seen = None, None, 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_state(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_state(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._map_state(lambda t: t[indices, ...])

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError(
                "a recurrent linear-attention state cannot drop tokens (no assisted generation / rollback)"
            )

    @property
    def batch_size(self) -> int:
        linear = self.state.linear if isinstance(self.state, HybridState) else self.state
        return -1 if linear is None else linear.S.shape[0]

    def state_nbytes(self) -> int:
        """Bytes held by this layer's state (0 before the first token)."""
        return _nbytes(self.state) + _nbytes(self.key_shift)


class LinearAttentionCache(Cache):
    """Cache of ``num_layers`` ``RecurrentStateLayer``s for a converted causal LM.

    Build with ``LinearAttentionCache(model.config)`` (or ``LinearAttentionCache(num_layers=L)``) and pass it as
    the model's cache argument (``cache_argument(model)``); ``generate`` on a converted model creates one by itself.
    """

    def __init__(self, config=None, *, num_layers: int | None = None) -> None:
        if num_layers is None:
            if config is None:
                raise ValueError("LinearAttentionCache needs the model config or num_layers")
            text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
            num_layers = getattr(text_config, "num_hidden_layers", None)
            if num_layers is None:
                raise ValueError(f"LinearAttentionCache: {type(config).__name__} has no num_hidden_layers; pass num_layers")
        super().__init__(layers=[RecurrentStateLayer() for _ in range(num_layers)])
        # While a captured decoding step replays, the index of the token being decoded as a tensor ([1], long),
        # read by the converted layers instead of the Python token count (which replays do not advance).
        self.position: torch.Tensor | None = None

    def set_in_place(self, enabled: bool) -> None:
        """Every layer keeps its state tensors and copies new values into them (for CUDA-graph decoding)."""
        for layer in self.layers:
            layer.in_place = bool(enabled)

    def state_nbytes(self) -> int:
        """Bytes held by all recurrent states: constant in the number of tokens seen."""
        return sum(layer.state_nbytes() for layer in self.layers)
