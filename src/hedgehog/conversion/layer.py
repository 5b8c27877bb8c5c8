"""``ConvertedAttention``: what conversion attaches to each attention module of a Hugging Face model.

It owns the layer's query and key feature maps (so they are saved with the model's state dict, under
``<attention module>.hedgehog.feature_map_{q,k}``) and computes the attention from the q, k, v that the
model's own code produced (projections, RoPE, grouped-query heads untouched) in one of three forms:

- linear (default): ``attend(q, k, v, feature maps, causal, key padding)`` (Zhang et al., 2024, eq. 2);
- distillation (stage 1): the teacher softmax weights and the student linear weights from the same q, k; the
  layer adds the paper's soft cross-entropy (eq. 5) to its loss and returns the *softmax* output, so later
  layers see the teacher's activations. The N x N matrices exist only inside this call;
- recurrent (generation with ``LinearAttentionCache``): prefill with ``linear_attention(return_state=True)``,
  then ``recurrent_step`` per token on a constant-size state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.attention import (
    RecurrentState,
    attend,
    attention_entropy,
    attention_weights,
    build_feature_map,
    distillation_loss,
    fidelity_kl,
    linear_attention,
    recurrent_step,
    softmax_weights,
)
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
        self.distilling = False
        self.mse_weight = 0.0
        self.record_metrics = True
        self.cache = None  # the model's cache during a forward (set by a forward pre-hook on the module)
        self._loss: Tensor | None = None
        self.last_metrics: dict[str, Tensor] | None = None

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, layer_idx={self.layer_idx}"
        )

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
        are multiplied by ``scaling * sqrt(D)`` so that maps written for ``1/sqrt(D)`` see the model's scale
        (a no-op for the usual ``scaling = 1/sqrt(D)``). ``dropout`` applies to the teacher's weights only.
        """
        if q.shape[1] != self.num_heads or k.shape[1] != self.num_kv_heads or q.shape[-1] != self.head_dim:
            raise ValueError(
                f"converted attention layer {self.layer_idx} was built for {self.num_heads} query / "
                f"{self.num_kv_heads} key-value heads of width {self.head_dim}, got q {list(q.shape)}, k {list(k.shape)}"
            )
        mask = key_padding_mask(attention_mask, k.shape[2])
        q_lin = q
        if scaling is not None and not math.isclose(scaling * math.sqrt(q.shape[-1]), 1.0, rel_tol=1e-9):
            q_lin = q * (scaling * math.sqrt(q.shape[-1]))

        if isinstance(self.cache, LinearAttentionCache):
            return self._recurrent(q_lin, k, v, mask, causal, self.cache)
        if q.shape[2] != k.shape[2]:
            return self._continue(q_lin, k, v, mask, causal)
        if self.distilling:
            return self._distil(q, q_lin, k, v, mask, causal, scaling, dropout)
        return attend(
            q_lin, k, v, feature_map_q=self.feature_map_q, feature_map_k=self.feature_map_k, causal=causal,
            key_padding_mask=mask,
        )

    def _distil(
        self, q: Tensor, q_lin: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
        scaling: float | None, dropout: float,
    ) -> Tensor:
        """Teacher output; adds ``distillation_loss(softmax, linear)`` (+ ``mse_weight`` x output MSE)."""
        with torch.no_grad():
            teacher = softmax_weights(q, k, causal, key_padding_mask=mask, scale=scaling)
        qf = self.feature_map_q(q_lin, is_query=True)
        kf = self.feature_map_k(k)
        student = attention_weights(qf, kf, causal, key_padding_mask=mask)
        loss = distillation_loss(teacher, student, mask=mask)
        teacher_out = _weights_times_values(F.dropout(teacher, dropout, self.training) if dropout else teacher, v)
        if self.mse_weight:
            student_out = _weights_times_values(student, v)
            err = (student_out.float() - teacher_out.detach().float()).pow(2).mean(dim=-1)  # [B, Hq, N]
            if mask is not None:
                keep = mask[:, None, :].to(err.dtype).expand_as(err)
                mse = (err * keep).sum() / keep.sum().clamp_min(1.0)
            else:
                mse = err.mean()
            loss = loss + self.mse_weight * mse
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
        """Prefill or decode against the layer's ``RecurrentState`` held by the cache."""
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
        positions = self._positions(layer.get_seq_length() - n, n, q.device)
        qf = self.feature_map_q(q, is_query=True, positions=positions)
        kf = self.feature_map_k(k, positions=positions)
        new_mask = None if mask is None else mask[:, -n:]
        if n == 1 and layer.state is not None:
            out, state = recurrent_step(qf, kf, v, layer.state, key_padding_mask=new_mask)
        else:
            out, state = linear_attention(
                qf, kf, v, True, key_padding_mask=new_mask, return_state=True, initial_state=layer.state
            )
        layer.state = state
        return out

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
        kf = self.feature_map_k(k, positions=self._positions(0, nk, k.device))
        qf = self.feature_map_q(q, is_query=True, positions=self._positions(past, nq, q.device))
        past_mask = None if mask is None else mask[:, :past]
        initial = _state_from_keys(kf[:, :, :past], v[:, :, :past], past_mask)
        new_mask = None if mask is None else mask[:, past:]
        return linear_attention(
            qf, kf[:, :, past:], v[:, :, past:], True, key_padding_mask=new_mask, initial_state=initial
        )
