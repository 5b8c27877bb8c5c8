"""``ConvertedAttention``: what conversion attaches to each attention module of a Hugging Face model.

It owns the layer's query and key feature maps (so they are saved with the model's state dict, under
``<attention module>.hedgehog.feature_map_{q,k}``) and computes the attention from the q, k, v that the
model's own code produced (projections, RoPE, grouped-query heads untouched) in one of three forms:

- linear (default): ``attend(q, k, v, feature maps, causal, key padding)`` (Zhang et al., 2024, eq. 2), or the
  sliding-window hybrid for maps with a ``window`` (the layer then owns the per-head balance, ``WindowBalance``,
  calibrated on the first batch it trains on);
- distillation (attention transfer): the teacher is the layer's own softmax on the same q, k; the layer adds
  ``cross_entropy`` x the paper's soft cross-entropy on the weights (eq. 5) plus ``mse`` x the mean squared error
  between the two attention outputs to its loss and returns the *softmax* output, so later layers see the
  teacher's activations. N x N weight matrices are formed only when the cross-entropy (or its metrics) needs
  them; the output MSE alone runs on the fused kernels and SDPA;
- recurrent (generation with ``LinearAttentionCache``): prefill with ``linear_attention(return_state=True)``
  (or ``hybrid_prefill``), then ``recurrent_step`` (``hybrid_step``) per token on a constant-size state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.attention import (
    RecurrentState,
    WindowBalance,
    attend,
    attention_entropy,
    attention_weights,
    build_feature_map,
    distillation_loss,
    fidelity_kl,
    hybrid_prefill,
    hybrid_step,
    hybrid_weights,
    linear_attention,
    recurrent_step,
    softmax_attention,
    softmax_weights,
)
from hedgehog.attention.dispatch import fused_decode_step
from hedgehog.attention.distillation import attention_output_mse
from hedgehog.conversion.cache import LinearAttentionCache


def key_padding_mask(attention_mask: Tensor | None, kv_length: int) -> Tensor | None:
    """The bool key-padding mask ``[B, kv_length]`` (True = real token) from what the model passed, or None.

    Accepts the 2D mask made by the registered mask function (or a raw 0/1 ``attention_mask``); a 4D mask
    cannot be turned back into key padding and is refused.
    """
    if attention_mask is None:
        return None
    if attention_mask.ndim != 2:
        raise ValueError(
            f"converted attention takes a 2D padding mask [B, N] (1 = real token), got a {attention_mask.ndim}D "
            f"mask of shape {list(attention_mask.shape)}; pass attention_mask as [B, N]"
        )
    mask = attention_mask[:, -kv_length:].to(torch.bool)
    if mask.shape[-1] < kv_length:  # a mask covering only the newest tokens: earlier ones are real
        pad = mask.new_ones(mask.shape[0], kv_length - mask.shape[-1])
        mask = torch.cat([pad, mask], dim=-1)
    return mask


def autocast_inputs(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v in the autocast dtype when 16-bit autocast is on for their device (float64 inputs are left as
    they are), else unchanged."""
    device = q.device.type
    if not torch.is_autocast_enabled(device) or q.dtype == torch.float64:
        return q, k, v
    dtype = torch.get_autocast_dtype(device)
    if dtype not in (torch.float16, torch.bfloat16):
        return q, k, v
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _weights_times_values(weights: Tensor, v: Tensor) -> Tensor:
    """``weights [B, Hq, N, M] @ v [B, Hk, M, Dv]`` with grouped-query heads -> ``[B, Hq, N, Dv]`` in v's dtype."""
    b, hq, n, m = weights.shape
    hk = v.shape[1]
    w = weights.to(v.dtype).reshape(b, hk, hq // hk, n, m)
    return torch.einsum("bhgnm,bhmd->bhgnd", w, v).reshape(b, hq, n, v.shape[-1])


def _state_from_keys(kf: Tensor, v: Tensor, mask: Tensor | None) -> RecurrentState:
    """``S = sum_j kf_j v_j^T``, ``z = sum_j kf_j`` over the real keys (float32 or float64)."""
    dtype = torch.promote_types(torch.promote_types(kf.dtype, v.dtype), torch.float32)
    kf, v = kf.to(dtype), v.to(dtype)
    if mask is not None:
        keep = mask[:, None, :, None].to(dtype)
        kf, v = kf * keep, v * keep
    return RecurrentState(torch.einsum("bhnf,bhnd->bhfd", kf, v), kf.sum(dim=2))


def _rescaled(state: RecurrentState | None, old_shift: Tensor | None, new_shift: Tensor | None) -> RecurrentState | None:
    """The state of keys shifted by ``old_shift`` re-expressed for ``new_shift`` (>= old, elementwise)."""
    if state is None or old_shift is None or new_shift is None:
        return state
    factor = torch.exp(old_shift - new_shift).to(state.S.dtype)
    return RecurrentState(state.S * factor[..., None], state.z * factor)


LOSS_TERMS = ("cross_entropy", "mse")


class ConvertedAttention(nn.Module):
    """Feature maps and attention forms of one converted attention layer.

    Args:
        attention: registered attention name (not ``"softmax"``).
        num_heads, num_kv_heads, head_dim: Hq, Hk (grouped-query) and D of the layer.
        layer_idx: the layer's index in the model's cache.
        **options: feature-map options (``build_feature_map(attention, H, D, **options)``).
    """

    def __init__(
        self, attention: str, num_heads: int, num_kv_heads: int, head_dim: int, layer_idx: int, **options
    ) -> None:
        super().__init__()
        self.attention = attention
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.layer_idx = layer_idx
        self.feature_map_q = build_feature_map(attention, num_heads, head_dim, **options)
        self.feature_map_k = build_feature_map(attention, num_kv_heads, head_dim, **options)
        if self.feature_map_q is None:
            raise ValueError("ConvertedAttention needs a linear attention type; 'softmax' keeps the model as it is")
        self.window: int | None = getattr(self.feature_map_q, "window", None)
        self.balance = WindowBalance(num_heads) if self.window is not None else None
        self.distilling = False
        self.loss_weights = {"cross_entropy": 1.0, "mse": 0.0}
        self.record_metrics = True
        self.cache = None  # the model's cache during a forward (set by a forward pre-hook on the module)
        self._loss: Tensor | None = None
        self.last_metrics: dict[str, Tensor] | None = None

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, layer_idx={self.layer_idx}"
        )

    @property
    def log_balance(self) -> Tensor | None:
        return None if self.balance is None else self.balance.log_balance

    def set_loss_weights(self, cross_entropy: float | None = None, mse: float | None = None) -> None:
        """Weights of the two distillation terms (None keeps a weight); both >= 0, not both 0."""
        for name, value in (("cross_entropy", cross_entropy), ("mse", mse)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"distillation loss weight {name} must be a number >= 0, got {value!r}")
            self.loss_weights[name] = float(value)
        if not any(self.loss_weights.values()):
            raise ValueError("distillation needs cross_entropy > 0 or mse > 0 (both are 0)")

    # -- distillation bookkeeping -------------------------------------------------------------------
    def pop_loss(self) -> Tensor | None:
        """The loss accumulated since the last pop (None if no distillation forward ran), and reset."""
        loss, self._loss = self._loss, None
        return loss

    def _add_loss(self, loss: Tensor) -> None:
        self._loss = loss if self._loss is None else self._loss + loss

    # -- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attention_mask: Tensor | None,
        *,
        causal: bool,
        scaling: float | None = None,
        dropout: float = 0.0,
    ) -> Tensor:
        """q ``[B, Hq, Nq, D]`` (after RoPE), k ``[B, Hk, Nk, D]``, v ``[B, Hk, Nk, Dv]`` -> ``[B, Hq, Nq, Dv]``.

        ``scaling`` is the model's softmax scale: the teacher uses it as is, and queries entering a feature map
        (or the hybrid's window, at its default ``1/sqrt(D)``) are multiplied by ``scaling * sqrt(D)`` so that
        maps written for ``1/sqrt(D)`` see the model's scale (a no-op for the usual ``scaling = 1/sqrt(D)``).
        ``dropout`` applies to the teacher's weights only. Under 16-bit autocast, q, k and v are cast to the
        autocast dtype, as autocast does for SDPA, so the kernels see 16-bit inputs: RoPE leaves q and k in
        float32, and a model may hand v over in float32 too (the kernels' float32 path is 5-12x slower).
        """
        if q.shape[1] != self.num_heads or k.shape[1] != self.num_kv_heads or q.shape[-1] != self.head_dim:
            raise ValueError(
                f"converted attention layer {self.layer_idx} was built for {self.num_heads} query / "
                f"{self.num_kv_heads} key-value heads of width {self.head_dim}, got q {list(q.shape)}, k {list(k.shape)}"
            )
        q, k, v = autocast_inputs(q, k, v)
        mask = key_padding_mask(attention_mask, k.shape[2])
        q_lin = q
        if scaling is not None and not math.isclose(scaling * math.sqrt(q.shape[-1]), 1.0, rel_tol=1e-9):
            q_lin = q * (scaling * math.sqrt(q.shape[-1]))

        if isinstance(self.cache, LinearAttentionCache):
            return self._recurrent(q_lin, k, v, mask, causal, self.cache)
        if q.shape[2] != k.shape[2]:
            return self._continue(q_lin, k, v, mask, causal)
        if self.balance is not None and self.training and self.balance.needs_calibration:
            pair = self.feature_map_q.pair(self.feature_map_k, q_lin, k, key_padding_mask=mask)
            self.balance.calibrate(q_lin, k, pair, window=self.window, causal=causal, key_padding_mask=mask)
        if self.distilling:
            return self._distil(q, q_lin, k, v, mask, causal, scaling, dropout)
        return attend(
            q_lin, k, v, feature_map_q=self.feature_map_q, feature_map_k=self.feature_map_k, causal=causal,
            key_padding_mask=mask, log_balance=self.log_balance,
        )

    def _student_weights(self, q_lin: Tensor, k: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        pair = self.feature_map_q.pair(self.feature_map_k, q_lin, k, key_padding_mask=mask)
        if self.window is not None:
            return hybrid_weights(q_lin, k, pair, window=self.window, log_balance=self.log_balance, causal=causal,
                                  key_padding_mask=mask)
        return attention_weights(pair.q, pair.k, causal, key_padding_mask=mask)

    def _distil(
        self, q: Tensor, q_lin: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
        scaling: float | None, dropout: float,
    ) -> Tensor:
        """Teacher output; adds ``cross_entropy`` x ``distillation_loss(softmax, student)`` + ``mse`` x output MSE."""
        ce, mse = self.loss_weights["cross_entropy"], self.loss_weights["mse"]
        drop = dropout if self.training else 0.0
        need_weights = ce > 0 or self.record_metrics or drop > 0
        if need_weights:
            with torch.no_grad():
                teacher = softmax_weights(q, k, causal, key_padding_mask=mask, scale=scaling)
            teacher_out = _weights_times_values(F.dropout(teacher, drop, True) if drop else teacher, v)
            student = self._student_weights(q_lin, k, mask, causal)
            student_out = _weights_times_values(student, v) if mse else None
        else:
            with torch.no_grad():
                teacher_out = softmax_attention(q, k, v, causal, key_padding_mask=mask, scale=scaling)
            student_out = attend(
                q_lin, k, v, feature_map_q=self.feature_map_q, feature_map_k=self.feature_map_k, causal=causal,
                key_padding_mask=mask, log_balance=self.log_balance,
            )
        loss = None
        if ce:
            loss = ce * distillation_loss(teacher, student, mask=mask)
        if mse:
            term = mse * attention_output_mse(teacher_out.detach(), student_out, mask)
            loss = term if loss is None else loss + term
        self._add_loss(loss)
        if self.record_metrics:
            with torch.no_grad():
                self.last_metrics = {
                    "teacher_entropy": attention_entropy(teacher, mask),
                    "student_entropy": attention_entropy(student.detach(), mask),
                    "kl": fidelity_kl(teacher, student.detach(), mask),
                }
        return teacher_out

    def _positions(self, start: int, length: int, device: torch.device) -> Tensor:
        return torch.arange(start, start + length, device=device)

    def _recurrent(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, cache
    ) -> Tensor:
        """Prefill or decode against the layer's state held by the cache."""
        if self.distilling:
            raise RuntimeError("generation runs the linear form: switch distillation off (set_distillation(model, False))")
        if not causal:
            raise ValueError("LinearAttentionCache holds causal recurrent states; a bidirectional layer cannot use it")
        layer = cache.layers[self.layer_idx]
        n = q.shape[2]
        if k.shape[2] != n:
            raise RuntimeError(
                f"LinearAttentionCache layer {self.layer_idx} returned {k.shape[2]} keys for {n} queries; "
                "the model must call cache.update(key, value, layer_idx) once per forward"
            )
        new_mask = None if mask is None else mask[:, -n:]
        if self.window is not None:
            return self._recurrent_hybrid(q, k, v, new_mask, layer)
        position = getattr(cache, "position", None)  # a tensor while a CUDA graph replays the step
        if n == 1 and position is not None:
            positions = position.reshape(1)
        else:
            positions = self._positions(layer.get_seq_length() - n, n, q.device)
        if layer.state is None and n > 1:  # prefill: outputs on the chunked (fused) kernels, the state in one product
            out = attend(q, k, v, feature_map_q=self.feature_map_q, feature_map_k=self.feature_map_k, causal=True,
                         key_padding_mask=new_mask, positions=positions)
            keys = self.feature_map_q.pair(self.feature_map_k, q[:, :, :0], k, positions=positions[:0],
                                           key_positions=positions, key_padding_mask=new_mask)
            layer.store(_state_from_keys(keys.k, v, new_mask), keys.key_shift)
            return out
        if n == 1:  # the maps inside the decode kernel, the state updated in place (None: not applicable)
            out = fused_decode_step(q, k, v, self.feature_map_q, self.feature_map_k, layer.state, layer.key_shift,
                                    new_mask)
            if out is not None:
                return out
        pair = self.feature_map_q.pair(self.feature_map_k, q, k, positions=positions, key_padding_mask=new_mask,
                                       key_shift=layer.key_shift)
        state = _rescaled(layer.state, layer.key_shift, pair.key_shift)
        if n == 1 and state is not None:
            out, state = recurrent_step(pair.q, pair.k, v, state, key_padding_mask=new_mask)
        else:
            out, state = linear_attention(
                pair.q, pair.k, v, True, key_padding_mask=new_mask, return_state=True, initial_state=state
            )
        layer.store(state, pair.key_shift)
        return out

    def _recurrent_hybrid(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, layer) -> Tensor:
        """Hybrid prefill (from an empty state) or steps, one token at a time, on the ``HybridState``."""
        if layer.state is None:
            out, layer.state = hybrid_prefill(q, k, v, self.feature_map_q, self.feature_map_k, window=self.window,
                                              log_balance=self.log_balance, key_padding_mask=mask)
            return out
        outs = []
        for t in range(q.shape[2]):
            step_mask = None if mask is None else mask[:, t : t + 1]
            out, layer.state = hybrid_step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1],
                                           self.feature_map_q, self.feature_map_k, layer.state,
                                           log_balance=self.log_balance, key_padding_mask=step_mask)
            outs.append(out)
        return torch.cat(outs, dim=2)

    def _continue(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        """Queries for the last Nq of Nk keys (a key/value cache such as ``DynamicCache`` was passed)."""
        if self.distilling:
            raise RuntimeError("distillation needs the whole sequence in one forward (no past key values)")
        if not causal:
            raise ValueError(
                f"bidirectional converted attention got {q.shape[2]} queries for {k.shape[2]} keys; it needs both equal"
            )
        nq, nk = q.shape[2], k.shape[2]
        past = nk - nq
        pair = self.feature_map_q.pair(
            self.feature_map_k, q, k, positions=self._positions(past, nq, q.device),
            key_positions=self._positions(0, nk, k.device), key_padding_mask=mask,
        )
        if self.window is not None:
            weights = hybrid_weights(q, k, pair, window=self.window, log_balance=self.log_balance, causal=True,
                                     key_padding_mask=mask)
            return _weights_times_values(weights, v)
        past_mask = None if mask is None else mask[:, :past]
        initial = _state_from_keys(pair.k[:, :, :past], v[:, :, :past], past_mask)
        new_mask = None if mask is None else mask[:, past:]
        return linear_attention(
            pair.q, pair.k[:, :, past:], v[:, :, past:], True, key_padding_mask=new_mask, initial_state=initial
        )
