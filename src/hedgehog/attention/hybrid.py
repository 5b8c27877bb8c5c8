"""Sliding-window softmax + linear attention in one normalised sum (beyond the paper, in the line of LoLCATs,
Zhang et al., 2025, which keeps a small softmax window beside the linear attention of a converted model).

Query ``i`` attends with exact softmax to its window ``W(i)`` of the last ``w`` keys (causal: ``0 <= i - j < w``;
bidirectional: ``|i - j| < w``) and with linear attention to every other allowed key ``L(i)``::

    y_i = (sum_{j in W} exp(s_ij) v_j + lam_h sum_{j in L} phi(q_i).phi(k_j) v_j)
          / (sum_{j in W} exp(s_ij) + lam_h sum_{j in L} phi(q_i).phi(k_j)),        s_ij = q_i.k_j * scale

with a learnable per-head balance ``lam_h = exp(beta_h)`` (``log_balance`` = beta). Both kernels are used at
their true scale, so every stabilising shift below cancels exactly: features come from ``FeatureMap.pair``
(``phi(q_i).phi(k_j) = exp(q_log_scale_i) qf_i.kf_j``); the linear part enters as its log-mass
``l_i = beta_h + q_log_scale_i + log sum_{j in L} qf_i.kf_j`` times its normalised output, and each query's terms
are measured against ``c_i = max(max_{j in W} s_ij, l_i)`` before exponentiating, so the larger part is O(1)
whatever the scale of q and k. ``calibrated_log_balance``
gives beta the value at which the linear kernel matches softmax on the window keys (used to initialise it).

Forms: ``hybrid_weights`` (quadratic ``[B, Hq, Nq, Nk]``, for distillation and analysis; any query offset),
``hybrid_attention`` (causal: chunks of ``w`` tokens, memory linear in N; bidirectional: through the weights),
``hybrid_prefill`` / ``hybrid_step`` (decoding on a constant-size ``HybridState``: the linear state of the keys
that left the window plus a buffer of the window's ``w`` raw keys and values).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.attention.checks import accumulation_dtype, check_key_padding_mask, full_precision
from hedgehog.attention.feature_maps.base import FeatureMap, FeaturePair
from hedgehog.attention.linear import RecurrentState, safe_denominator


def check_window(fn: str, window: object) -> int:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"{fn}: window must be a positive int (keys attended with softmax), got {window!r}")
    return window


def _scale(scale: float | None, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _grouped(x: Tensor, hk: int) -> Tensor:
    """``[B, Hq, ...] -> [B, Hk, G, ...]``."""
    return x.reshape(x.shape[0], hk, x.shape[1] // hk, *x.shape[2:])


def _beta(log_balance: Tensor, hk: int, dtype: torch.dtype) -> Tensor:
    """``[Hq] -> [1, Hk, G]`` in ``dtype``."""
    return log_balance.to(dtype).reshape(1, hk, -1)


def linear_log_mass(lin_den: Tensor, q_log_scale: Tensor, beta: Tensor) -> Tensor:
    """``l = beta + q_log_scale + log lin_den`` (-inf where the linear part is empty), safe to differentiate."""
    positive = lin_den > 0
    return torch.where(positive, beta + q_log_scale + torch.log(torch.where(positive, lin_den, torch.ones_like(lin_den))),
                       torch.full_like(lin_den, -torch.inf))


def combine(s_w: Tensor, v_w: Tensor, lin_num: Tensor, lin_den: Tensor, q_log_scale: Tensor, beta: Tensor) -> Tensor:
    """``(sum_W exp(s) v + lam exp(qls) lin_num) / (sum_W exp(s) + lam exp(qls) lin_den)``, stabilised.

    s_w ``[..., M]`` window logits (-inf outside the window), v_w ``[..., M, Dv]`` their values; lin_num
    ``[..., Dv]``, lin_den ``[...]`` the linear part on the query's stabilised features; q_log_scale, beta ``[...]``.
    """
    lin_log = linear_log_mass(lin_den, q_log_scale, beta)
    with torch.no_grad():
        c = torch.maximum(s_w.amax(dim=-1), lin_log)
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))  # a query with no key at all
    e = torch.exp(s_w - c[..., None])
    a = torch.exp(lin_log - c)  # weight of the whole linear part
    lin_out = lin_num / torch.where(lin_den > 0, lin_den, torch.ones_like(lin_den))[..., None]
    num = torch.einsum("...j,...jd->...d", e, v_w) + a[..., None] * lin_out
    return num / safe_denominator(e.sum(dim=-1) + a)[..., None]


def region_masks(q_pos: Tensor, k_pos: Tensor, window: int, causal: bool) -> tuple[Tensor, Tensor]:
    """Bool ``[Nq, Nk]`` masks of the softmax window ``W`` and the linear region ``L`` for absolute positions."""
    rel = q_pos[:, None] - k_pos[None, :]
    if causal:
        return (rel >= 0) & (rel < window), rel >= window
    return rel.abs() < window, rel.abs() >= window


@full_precision
def hybrid_weights(
    q: Tensor, k: Tensor, features: FeaturePair, *, window: int, log_balance: Tensor, causal: bool,
    key_padding_mask: Tensor | None = None, scale: float | None = None, query_offset: int | None = None,
) -> Tensor:
    """The hybrid's attention weights ``[B, Hq, Nq, Nk]`` (float32, or float64 for float64 inputs).

    q ``[B, Hq, Nq, D]``, k ``[B, Hk, Nk, D]``; ``features`` = ``feature_map_q.pair(feature_map_k, q, k)``;
    ``log_balance [Hq]``; ``key_padding_mask [B, Nk]`` (True = real); the queries are the last ``Nq`` positions
    of the ``Nk`` keys unless ``query_offset`` says where they start. Rows sum to 1 (0 for a query with no key).
    """
    fn = "hybrid_weights"
    window = check_window(fn, window)
    b, hq, nq, d = q.shape
    hk, nk = k.shape[1], k.shape[2]
    mask = check_key_padding_mask(fn, key_padding_mask, b, nk, q.device)
    acc = accumulation_dtype(q, k)
    offset = nk - nq if query_offset is None else query_offset
    in_w, in_l = region_masks(torch.arange(offset, offset + nq, device=q.device), torch.arange(nk, device=q.device),
                              window, causal)
    if mask is not None:
        real = mask[:, None, None, None, :]
        in_w, in_l = in_w & real, in_l & real  # [B or 1, 1, 1, Nq, Nk]
    s = torch.einsum("bhgid,bhjd->bhgij", _grouped(q.to(acc), hk), k.to(acc)) * _scale(scale, d)
    lin = torch.einsum("bhgif,bhjf->bhgij", _grouped(features.q.to(acc), hk), features.k.to(acc))
    log_q = torch.zeros(b, hq, nq, dtype=acc, device=q.device) if features.q_log_scale is None else features.q_log_scale.to(acc)
    s_w = s.masked_fill(~in_w, -torch.inf)
    lin = torch.where(in_l, lin, torch.zeros_like(lin))
    lin_den = lin.sum(dim=-1)
    beta = _beta(log_balance, hk, acc)[..., None].expand_as(lin_den)
    lin_log = linear_log_mass(lin_den, _grouped(log_q, hk), beta)
    with torch.no_grad():
        c = torch.maximum(s_w.amax(dim=-1), lin_log)
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    e = torch.exp(s_w - c[..., None])
    a = torch.exp(lin_log - c)
    e = e + lin / torch.where(lin_den > 0, lin_den, torch.ones_like(lin_den))[..., None] * a[..., None]
    return (e / safe_denominator(e.sum(dim=-1, keepdim=True))).reshape(b, hq, nq, nk)


@full_precision
def calibrated_log_balance(
    q: Tensor, k: Tensor, features: FeaturePair, *, window: int, causal: bool,
    key_padding_mask: Tensor | None = None, scale: float | None = None,
) -> Tensor:
    """``beta [Hq]`` at which the linear kernel carries softmax's mass on the window keys: per head, the mean
    over queries (and the batch) of ``log sum_W exp(s_ij) - log sum_W phi(q_i).phi(k_j)`` (detached)."""
    with torch.no_grad():
        b, hq, n, d = q.shape
        hk = k.shape[1]
        acc = accumulation_dtype(q, k)
        in_w, _ = region_masks(torch.arange(n, device=q.device), torch.arange(n, device=q.device), window, causal)
        mask = check_key_padding_mask("calibrated_log_balance", key_padding_mask, b, n, q.device)
        if mask is not None:
            in_w = in_w & mask[:, None, None, None, :]
        s = torch.einsum("bhgid,bhjd->bhgij", _grouped(q.to(acc), hk), k.to(acc)) * _scale(scale, d)
        lin = torch.einsum("bhgif,bhjf->bhgij", _grouped(features.q.to(acc), hk), features.k.to(acc))
        soft = torch.logsumexp(s.masked_fill(~in_w, -torch.inf), dim=-1)
        linear = torch.log((lin * in_w).sum(dim=-1))
        if features.q_log_scale is not None:
            linear = linear + _grouped(features.q_log_scale.to(acc), hk)
        gap = soft - linear  # [B, Hk, G, N]
        ok = torch.isfinite(gap)
        if mask is not None:
            ok = ok & mask[:, None, None, :]
        total = torch.where(ok, gap, torch.zeros_like(gap)).sum(dim=(0, 3))
        count = ok.sum(dim=(0, 3)).clamp_min(1)
        return (total / count).reshape(hq).float()


def _chunks(x: Tensor, c: int) -> Tensor:
    """``[..., N, X] -> [..., N / c, c, X]`` (N a multiple of c)."""
    return x.reshape(*x.shape[:-2], x.shape[-2] // c, c, x.shape[-1])


def _with_previous(x: Tensor) -> Tensor:
    """``[..., C, c, X]`` -> ``[..., C, 2c, X]``: each chunk preceded by the previous chunk (zeros before the first)."""
    prev = torch.cat([torch.zeros_like(x[..., :1, :, :]), x[..., :-1, :, :]], dim=-3)
    return torch.cat([prev, x], dim=-2)


def _causal_chunked(
    q: Tensor, k: Tensor, v: Tensor, features: FeaturePair, window: int, log_balance: Tensor,
    mask: Tensor | None, scale: float, acc: torch.dtype,
) -> Tensor:
    """Causal hybrid in chunks of ``window`` tokens: each query chunk sees its own and the previous chunk's keys
    (window terms and the newest linear terms) and the linear state of all chunks before those two."""
    b, hq, n, d = q.shape
    hk, dv, w = k.shape[1], v.shape[-1], window
    pad = (-n) % w
    real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
    log_q = torch.zeros(b, hq, n, dtype=acc, device=q.device) if features.q_log_scale is None else features.q_log_scale.to(acc)
    qf, kf = features.q.to(acc), features.k.to(acc) * real[:, None, :, None]
    vv = v.to(acc) * real[:, None, :, None]
    qq, kk = q.to(acc), k.to(acc)
    if pad:
        qq, kk, vv, qf, kf = (F.pad(t, (0, 0, 0, pad)) for t in (qq, kk, vv, qf, kf))
        log_q, real = F.pad(log_q, (0, pad)), F.pad(real, (0, pad))
    qc = _chunks(_grouped(qq, hk), w)  # [B, Hk, G, C, w, D]
    qfc = _chunks(_grouped(qf, hk), w)  # [B, Hk, G, C, w, F]
    k2, v2, kf2 = (_with_previous(_chunks(t, w)) for t in (kk, vv, kf))  # [B, Hk, C, 2w, .]
    real2 = _with_previous(_chunks(real[:, None, :, None].float(), w))[:, 0, :, :, 0] > 0  # [B, C, 2w]
    il = torch.arange(w, device=q.device)[:, None]
    jl = torch.arange(2 * w, device=q.device)[None, :]
    rel = w + il - jl
    in_w = (rel >= 0) & (rel < w) & real2[:, None, None, :, None, :]  # [B, 1, 1, C, w, 2w]
    in_l = (rel >= w) & real2[:, None, None, :, None, :]

    s = torch.einsum("bhgcid,bhcjd->bhgcij", qc, k2) * scale
    s_w = s.masked_fill(~in_w, -torch.inf)
    lin = torch.einsum("bhgcif,bhcjf->bhgcij", qfc, kf2) * in_l
    kv = torch.einsum("bhcjf,bhcjd->bhcfd", _chunks(kf, w), _chunks(vv, w))  # [B, Hk, C, F, Dv]
    ks = _chunks(kf, w).sum(dim=3)  # [B, Hk, C, F]
    # linear state before chunk c - 1: inclusive sums shifted by two chunks (no subtraction)
    S = torch.cat([torch.zeros_like(kv[:, :, :2]), kv.cumsum(dim=2)[:, :, :-2]], dim=2)[:, :, : kv.shape[2]]
    z = torch.cat([torch.zeros_like(ks[:, :, :2]), ks.cumsum(dim=2)[:, :, :-2]], dim=2)[:, :, : ks.shape[2]]
    lin_num = torch.einsum("bhgcif,bhcfd->bhgcid", qfc, S) + torch.einsum("bhgcij,bhcjd->bhgcid", lin, v2)
    lin_den = torch.einsum("bhgcif,bhcf->bhgci", qfc, z) + lin.sum(dim=-1)
    log_qc = _chunks(_grouped(log_q, hk)[..., None], w)[..., 0]  # [B, Hk, G, C, w]
    beta = _beta(log_balance, hk, acc)[..., None, None].expand_as(log_qc)
    out = combine(s_w, v2[:, :, None, :, None], lin_num, lin_den, log_qc, beta)
    return out.reshape(b, hq, n + pad, dv)[:, :, :n]


@full_precision
def hybrid_attention(
    q: Tensor, k: Tensor, v: Tensor, features: FeaturePair, *, window: int, log_balance: Tensor, causal: bool,
    key_padding_mask: Tensor | None = None, scale: float | None = None,
) -> Tensor:
    """The hybrid's output ``[B, Hq, N, Dv]`` in v's dtype (module docstring).

    q ``[B, Hq, N, D]``, k ``[B, Hk, N, D]``, v ``[B, Hk, N, Dv]``; ``features`` from ``FeatureMap.pair``;
    ``log_balance [Hq]``; ``key_padding_mask [B, N]``. Causal: chunks of ``window`` tokens (memory O(N w));
    bidirectional: the quadratic weights.
    """
    fn = "hybrid_attention"
    window = check_window(fn, window)
    b, hq, n, d = q.shape
    mask = check_key_padding_mask(fn, key_padding_mask, b, n, q.device)
    if log_balance.shape != (hq,):
        raise ValueError(f"{fn}: log_balance must be [Hq] = [{hq}], got {list(log_balance.shape)}")
    if n == 0:
        return v.new_zeros(b, hq, 0, v.shape[-1])
    acc = accumulation_dtype(q, k, v)
    if causal:
        out = _causal_chunked(q, k, v, features, window, log_balance, mask, _scale(scale, d), acc)
    else:
        weights = hybrid_weights(q, k, features, window=window, log_balance=log_balance, causal=False,
                                 key_padding_mask=mask, scale=scale)
        hk = k.shape[1]
        out = torch.einsum("bhgij,bhjd->bhgid", _grouped(weights, hk), v.to(acc)).reshape(b, hq, n, v.shape[-1])
    return out.to(v.dtype)


class HybridState(NamedTuple):
    """Decoding state of the causal hybrid, constant in size.

    linear: ``RecurrentState`` of the keys that left the window (features shifted by ``key_shift``).
    key_shift: ``[B, Hk, F]`` float32, or None for maps that do not shift their keys.
    keys, values: ``[B, Hk, w, D]``, ``[B, Hk, w, Dv]``: the window's raw keys and values, oldest first.
    real: ``[B, w]`` bool: which window slots hold a real token.
    seen: tokens seen so far.
    """

    linear: RecurrentState
    key_shift: Tensor | None
    keys: Tensor
    values: Tensor
    real: Tensor
    seen: int


def _fold_into_state(
    state: RecurrentState, key_shift: Tensor | None, pair: FeaturePair, v: Tensor, real: Tensor,
) -> tuple[RecurrentState, Tensor | None]:
    """Add keys (features ``pair.k [B, Hk, M, F]`` taken with ``pair.key_shift``) and values to the linear state,
    first rescaling the state when the shift grew."""
    S, z = state.S, state.z
    if pair.key_shift is not None and key_shift is not None:
        factor = torch.exp(key_shift - pair.key_shift).to(S.dtype)  # <= 1
        S, z = S * factor[..., None], z * factor
    kf = pair.k.to(S.dtype) * real[:, None, :, None]
    S = S + torch.einsum("bhmf,bhmd->bhfd", kf, v.to(S.dtype) * real[:, None, :, None])
    z = z + kf.sum(dim=2)
    return RecurrentState(S, z), pair.key_shift


@torch.no_grad()
def hybrid_prefill(
    q: Tensor, k: Tensor, v: Tensor, feature_map_q: FeatureMap, feature_map_k: FeatureMap, *, window: int,
    log_balance: Tensor, key_padding_mask: Tensor | None = None, scale: float | None = None,
) -> tuple[Tensor, HybridState]:
    """Causal hybrid over a prompt ``[B, ., N, .]`` and the state to continue from (for generation)."""
    b, hq, n, d = q.shape
    hk, dv = k.shape[1], v.shape[-1]
    mask = check_key_padding_mask("hybrid_prefill", key_padding_mask, b, n, q.device)
    real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
    pair = feature_map_q.pair(feature_map_k, q, k, key_padding_mask=mask)
    out = hybrid_attention(q, k, v, pair, window=window, log_balance=log_balance, causal=True,
                           key_padding_mask=mask, scale=scale)
    old = max(n - window, 0)
    f = pair.k.shape[-1]
    acc = torch.promote_types(accumulation_dtype(q, k, v), torch.float32)
    linear = RecurrentState.zeros(b, hk, f, dv, q.device, acc)
    older = FeaturePair(pair.q, pair.k[:, :, :old], pair.q_log_scale, pair.key_shift)
    linear, shift = _fold_into_state(linear, pair.key_shift, older, v[:, :, :old], real[:, :old])
    keep = min(n, window)
    keys = torch.zeros(b, hk, window, d, dtype=k.dtype, device=k.device)
    values = torch.zeros(b, hk, window, dv, dtype=v.dtype, device=v.device)
    in_window = torch.zeros(b, window, dtype=torch.bool, device=q.device)
    if keep:
        keys[:, :, window - keep:] = k[:, :, n - keep:]
        values[:, :, window - keep:] = v[:, :, n - keep:]
        in_window[:, window - keep:] = real[:, n - keep:]
    return out, HybridState(linear, shift, keys, values, in_window, n)


@torch.no_grad()
def hybrid_step(
    q: Tensor, k: Tensor, v: Tensor, feature_map_q: FeatureMap, feature_map_k: FeatureMap, state: HybridState, *,
    log_balance: Tensor, key_padding_mask: Tensor | None = None, scale: float | None = None,
) -> tuple[Tensor, HybridState]:
    """One decoding step: q ``[B, Hq, 1, D]``, k ``[B, Hk, 1, D]``, v ``[B, Hk, 1, Dv]``; ``key_padding_mask
    [B, 1]`` (False: padding, kept out). Returns ``(y [B, Hq, 1, Dv], new state)``."""
    b, hq, _, d = q.shape
    hk, window = k.shape[1], state.keys.shape[2]
    mask = check_key_padding_mask("hybrid_step", key_padding_mask, b, 1, q.device)
    new_real = torch.ones(b, 1, dtype=torch.bool, device=q.device) if mask is None else mask
    # the oldest window slot leaves the window: fold it into the linear state
    leaving = feature_map_q.pair(feature_map_k, q, state.keys[:, :, :1], key_shift=state.key_shift,
                                 key_padding_mask=state.real[:, :1])
    linear, shift = _fold_into_state(state.linear, state.key_shift, leaving, state.values[:, :, :1], state.real[:, :1])
    keys = torch.cat([state.keys[:, :, 1:], k.to(state.keys.dtype)], dim=2)
    values = torch.cat([state.values[:, :, 1:], v.to(state.values.dtype)], dim=2)
    real = torch.cat([state.real[:, 1:], new_real], dim=1)
    # query features against the linear state's key shift (the key of this pair is masked out of the shift)
    pair = feature_map_q.pair(feature_map_k, q, keys[:, :, -1:], key_shift=shift,
                              key_padding_mask=torch.zeros(b, 1, dtype=torch.bool, device=q.device))
    acc = linear.S.dtype
    s = torch.einsum("bhgd,bhjd->bhgj", _grouped(q[:, :, 0].to(acc), hk), keys.to(acc)) * _scale(scale, d)
    s = s.masked_fill(~real[:, None, None, :], -torch.inf)
    qf = _grouped(pair.q[:, :, 0].to(acc), hk)  # [B, Hk, G, F]
    log_q = torch.zeros(b, hq, dtype=acc, device=q.device) if pair.q_log_scale is None else pair.q_log_scale[:, :, 0].to(acc)
    lin_num = torch.einsum("bhgf,bhfd->bhgd", qf, linear.S)
    lin_den = torch.einsum("bhgf,bhf->bhg", qf, linear.z)
    beta = _beta(log_balance, hk, acc).expand_as(lin_den)
    out = combine(s, values.to(acc)[:, :, None], lin_num, lin_den, _grouped(log_q, hk), beta)
    out = out.reshape(b, hq, 1, v.shape[-1]).to(v.dtype)
    return out, HybridState(linear, pair.key_shift, keys, values, real, state.seen + 1)


class WindowBalance(nn.Module):
    """The hybrid's per-head balance ``beta [Hq]`` (``lam = exp(beta)``), owned by an attention layer.

    ``calibrate`` sets beta once from data (``calibrated_log_balance``; averaged over processes in a distributed
    run), so that training starts from a linear part at softmax's scale rather than wherever the untrained feature
    map's scale happens to be; ``calibrated`` (a buffer, saved with the weights) records that it happened.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.log_balance = nn.Parameter(torch.zeros(num_heads))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self._calibrated = False  # a host copy of the buffer: reading a GPU buffer every forward would sync

    @property
    def needs_calibration(self) -> bool:
        return not self._calibrated

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calibrated = bool(self.calibrated)

    @torch.no_grad()
    def calibrate(self, q: Tensor, k: Tensor, features: FeaturePair, *, window: int, causal: bool,
                  key_padding_mask: Tensor | None = None, scale: float | None = None) -> None:
        beta = calibrated_log_balance(q, k, features, window=window, causal=causal,
                                      key_padding_mask=key_padding_mask, scale=scale).to(self.log_balance)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(beta)
            beta /= torch.distributed.get_world_size()
        self.log_balance.copy_(beta)
        self.calibrated.fill_(True)
        self._calibrated = True

    def extra_repr(self) -> str:
        return f"num_heads={self.log_balance.numel()}, calibrated={bool(self.calibrated)}"
