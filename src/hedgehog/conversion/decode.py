"""``greedy_decode``: greedy generation with the one-token step captured in a CUDA graph.

A decoding step of a small model is a few hundred tiny kernels; launched one by one from Python, the launches
cost more than the work (SmolLM2-135M: ~55 ms a token on the H200 host with ``generate``, softmax or linear).
Here the prompt is prefilled once (converted layers: the chunked kernels for the outputs, one product for the
state), then the step -- embedding, every layer, the head, the argmax, the position update -- is recorded once
with ``torch.cuda.graph`` and replayed per token. What a replay needs lives in fixed tensors:

the ``LinearAttentionCache`` with ``set_in_place(True)`` (each layer copies its new state into the tensors it
already holds) and ``cache.position`` (the token index read by position-aware maps). Softmax models are not
served here: their key/value cache grows, and transformers' own static cache (``cache_implementation="static"``
with ``torch.compile``) is their graph path; on the GPU host's transformers 5.17 its layout did not match this
loop (dtype taken from the weights, not the autocast), so it was left out rather than half supported.

The next token, the RoPE positions ``[B, 1]`` and ``cache_position`` ``[1]`` are fixed tensors updated inside the
graph. Without CUDA (or with ``cuda_graph=False``) the same step runs eagerly, which is what the CPU tests compare
with ``generate``. The sliding-window hybrid's window grows while it fills, so its state has no fixed shape: it
always decodes eagerly here.
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

    ``model``: a causal LM converted by ``hedgehog.convert``; ``input_ids [B, P]``;
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
    if not layers:
        raise ValueError(
            f"greedy_decode: {type(model).__name__} has no converted attention layer; it decodes converted models "
            "on their recurrent state (convert the model first, or use model.generate for a softmax model)"
        )
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
    cache = LinearAttentionCache(model.config)
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
    cache.set_in_place(True)
    cache.position = cache_position

    def step() -> None:  # padded prompt tokens never entered the state: the new tokens need no mask
        logits = model(input_ids=next_ids, position_ids=position_ids,
                       cache_position=cache_position, use_cache=True, **{key: cache}).logits
        next_ids.copy_(logits[:, -1].argmax(-1, keepdim=True))
        position_ids.add_(1)
        cache_position.add_(1)

    if cuda_graph:
        held = list(_flat_tensors(tuple((layer.state, layer.key_shift) for layer in cache.layers)))
        snapshot = [t.clone() for t in (*held, next_ids, position_ids, cache_position)]
        live = [*held, next_ids, position_ids, cache_position]
        graph = torch.cuda.CUDAGraph()
        with _autocast_as_now(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up: kernels compiled, workspaces allocated
                for _ in range(2):
                    step()
            torch.cuda.current_stream(device).wait_stream(side)
            for t, saved in zip(live, snapshot):  # the warm-up advanced the state: back to after the prefill
                t.copy_(saved)
            with torch.cuda.graph(graph):
                step()
            for _ in range(max_new_tokens - 1):
                graph.replay()
                tokens.append(next_ids.clone())
    else:
        for _ in range(max_new_tokens - 1):
            step()
            tokens.append(next_ids.clone())
    cache.set_in_place(False)  # leave the cache consistent for a caller who keeps it
    cache.position = None
    for layer in cache.layers:
        layer.seen = prompt + max_new_tokens - 1
    return torch.cat([input_ids, *tokens], dim=1)
