"""``greedy_decode``: greedy generation with the one-token step captured in a CUDA graph.

A decoding step of a small model is a few hundred tiny kernels; launched one by one from Python, the launches
cost more than the work (SmolLM2-135M: ~70 ms a token on the H200 host with ``generate``, softmax or linear).
Here the prompt is prefilled once, then the step -- embedding, every layer, the head, the argmax, the position
update -- is recorded once with ``torch.cuda.graph`` and replayed per token. What a replay needs lives in fixed
tensors:

- converted causal LMs: the ``LinearAttentionCache`` with ``set_in_place(True)`` (each layer copies its new
  state into the tensors it already holds) and ``cache.position`` (the token index read by position-aware maps);
  the prefill runs the chunked kernels for the outputs and one product for the state;
- softmax models: transformers' ``StaticCache`` (keys and values written in place at the cache's own position
  counter), given one storage dtype: under autocast RoPE returns float32 keys beside 16-bit values, which the
  cache would otherwise store in two dtypes.

The next token, the RoPE positions ``[B, 1]`` and ``cache_position`` ``[1]`` are fixed tensors updated inside the
graph. The warm-up steps before the capture advance every counter and state; they are put back before the
capture. Without CUDA (or with ``cuda_graph=False``) the same step runs eagerly, which is what the CPU tests
compare with ``generate``. The sliding-window hybrid's window grows while it fills, so its state has no fixed
shape: it always decodes eagerly here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from hedgehog.conversion.cache import LinearAttentionCache, _flat_tensors
from hedgehog.conversion.convert import cache_argument, converted_layers


def _positions(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """RoPE positions of the prompt ``[B, P]``: counted over real tokens only (left padding), as ``generate``."""
    if attention_mask is None:
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def _storage_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype a static key/value cache stores: the autocast dtype when autocast is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def _static_cache(model: nn.Module, max_len: int, dtype: torch.dtype):
    """transformers' ``StaticCache`` that stores keys and values in ``dtype`` (cast on the way in)."""
    from transformers import StaticCache

    class OneDtypeStaticCache(StaticCache):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.to(dtype), value_states.to(dtype), *args, **kwargs)

    return OneDtypeStaticCache(config=model.config, max_cache_len=max_len)


def _counters(cache) -> list[Tensor]:
    """The position counters a static cache's layers advance by themselves (``cumulative_length``), which the
    warm-up steps move and which must be put back before the capture."""
    counters = (getattr(layer, "cumulative_length", None) for layer in getattr(cache, "layers", []))
    return [c for c in counters if isinstance(c, Tensor)]


def _autocast_as_now(device: torch.device):
    """The caller's autocast state without the weight-cast cache (a graph must not read cached casts that the
    cache may free)."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=False)


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    attention_mask: Tensor | None = None,
    cuda_graph: bool | None = None,
) -> Tensor:
    """Greedy decoding of exactly ``max_new_tokens`` tokens (no stop at end-of-sequence).

    ``model``: a causal LM, converted by ``hedgehog.convert`` or softmax; ``input_ids [B, P]``;
    ``attention_mask [B, P]`` (1 = real token; left padding). ``cuda_graph``: capture the step (default: on CUDA,
    unless the model has sliding-window hybrid layers). Runs under the caller's autocast, if any.
    Returns ``[B, P + max_new_tokens]``, like ``generate``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"greedy_decode: max_new_tokens must be >= 1, got {max_new_tokens}")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"greedy_decode: input_ids must be [B, P] with P >= 1, got shape {list(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"greedy_decode: attention_mask must match input_ids {list(input_ids.shape)}, got {list(attention_mask.shape)}"
        )
    device = input_ids.device
    layers = converted_layers(model)
    windowed = any(layer.window is not None for layer in layers)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and not windowed
    if cuda_graph and (device.type != "cuda" or windowed):
        raise ValueError(
            "greedy_decode: cuda_graph=True needs CUDA inputs and a state of fixed shape (the sliding-window "
            "hybrid's window grows while it fills); pass cuda_graph=False"
        )
    batch, prompt = input_ids.shape
    limits = [m.max_positions for layer in layers for m in (layer.feature_map_q, layer.feature_map_k)
              if isinstance(getattr(m, "max_positions", None), int)]
    if limits and prompt + max_new_tokens > min(limits):
        raise ValueError(
            f"greedy_decode: {prompt} prompt + {max_new_tokens} new tokens exceed the feature maps' max_positions="
            f"{min(limits)}; convert with a larger max_positions or decode fewer tokens"
        )
    model.eval()
    linear = bool(layers)
    cache = LinearAttentionCache(model.config) if linear else _static_cache(
        model, prompt + max_new_tokens, _storage_dtype(model, device))
    key = cache_argument(model)

    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(input_ids, attention_mask),
                cache_position=torch.arange(prompt, device=device), use_cache=True, **{key: cache})
    next_ids = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
    tokens = [next_ids.clone()]
    if max_new_tokens == 1:
        return torch.cat([input_ids, next_ids], dim=1)

    lengths = attention_mask.long().sum(-1) if attention_mask is not None else torch.full((batch,), prompt, device=device)
    position_ids = lengths[:, None].clone()  # [B, 1]: RoPE position of the token fed next
    cache_position = torch.tensor([prompt], device=device)  # [1]: its slot in the sequence
    step_mask = None
    if linear:
        cache.set_in_place(True)
        cache.position = cache_position
    elif attention_mask is not None:  # the key/value slots of padded prompt tokens stay masked
        step_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, max_new_tokens)], dim=1)

    def step() -> None:  # a linear state holds no padded token: its new tokens need no mask
        logits = model(input_ids=next_ids, attention_mask=step_mask, position_ids=position_ids,
                       cache_position=cache_position, use_cache=True, **{key: cache}).logits
        next_ids.copy_(logits[:, -1].argmax(-1, keepdim=True))
        position_ids.add_(1)
        cache_position.add_(1)

    # what the warm-up steps move: the recurrent states, or a static cache's position counters (its key/value
    # slots are overwritten anyway), and the step's inputs
    if linear:
        held = list(_flat_tensors(tuple((layer.state, layer.key_shift) for layer in cache.layers)))
    else:
        held = _counters(cache)
    live = [*held, next_ids, position_ids, cache_position]
    if cuda_graph:
        graph = torch.cuda.CUDAGraph()
        with _autocast_as_now(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up: kernels compiled, workspaces allocated
                _warm_up(step, live)
            torch.cuda.current_stream(device).wait_stream(side)
            with torch.cuda.graph(graph):
                step()
            for _ in range(max_new_tokens - 1):
                graph.replay()
                tokens.append(next_ids.clone())
    else:
        if _REHEARSE_WARM_UP:  # tests: the warm-up and its undoing, without a GPU to capture on
            _warm_up(step, live)
        for _ in range(max_new_tokens - 1):
            step()
            tokens.append(next_ids.clone())
    if linear:  # leave the cache consistent for a caller who keeps it
        cache.set_in_place(False)
        cache.position = None
        for layer in cache.layers:
            layer.seen = prompt + max_new_tokens - 1
    return torch.cat([input_ids, *tokens], dim=1)


_REHEARSE_WARM_UP = False


def _warm_up(step, live: list[Tensor], steps: int = 2) -> None:
    """Run ``step`` ``steps`` times (compiling kernels, allocating workspaces), then put every tensor of ``live``
    back to its value before."""
    snapshot = [t.clone() for t in live]
    for _ in range(steps):
        step()
    for t, saved in zip(live, snapshot):
        t.copy_(saved)
