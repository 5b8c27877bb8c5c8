"""Where the converted layer's time goes between the bare kernel and the model's call.

The same attention (Hedgehog, fused kernels, causal) at one model shape, forward + backward, timed five ways that
add one difference of the model's call at a time:

1. ``kernel``          ``hedgehog.kernels.hedgehog_attention`` on contiguous ``[B, H, N, D]`` bf16 tensors;
2. ``kernel_layout``   the same on tensors stored as ``[B, N, H, D]`` (what ``view(...).transpose(1, 2)`` in the
                       model's attention module hands over);
3. ``attend``          ``hedgehog.attention.attend`` with the feature-map modules (dispatch, checks, weight splits);
4. ``layer``           ``ConvertedAttention`` under bf16 autocast with the model's ``scaling`` (casts, key padding);
5. ``layer_projected`` q, k, v made inside the timed region by a linear projection of ``[B, N, hidden]`` and
                       RoPE-like elementwise work, output transposed back and made contiguous, as in the model.

Prints a table (ms per call, median of CUDA-event timings) and writes JSON:

    python benchmarks/layer_path.py --heads 9 --kv-heads 3 --head-dim 64 --seq-len 4096 --batch 16 --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--seq-len", type=int, nargs="+", default=[4096])
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per batch (batch = tokens // seq_len)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="also list the top kernels of each way")
    ap.add_argument("--from-model", default=None, metavar="CONFIG_JSON",
                    help="also capture q, k, v and the output gradient of converted layers inside one training step "
                         "of this Hugging Face architecture (random weights, Hedgehog) and time the kernel on them")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, wall clock on a CPU) after two warm-up calls."""
    import time

    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def top_kernels(fn, device: torch.device, n: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    kind = "CUDA" if device.type == "cuda" else "CPU"
    events = [e for e in prof.key_averages() if e.device_type.name == kind]
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"kernel": e.key[:100], "calls": e.count, "ms": round(getattr(e, attr) / 1000, 3)} for e in events[:n]]


def ways(args, seq_len: int, device: torch.device) -> dict:
    """The five callables (each runs forward and backward once) at one sequence length."""
    from hedgehog.attention import attend, build_feature_map
    from hedgehog.conversion.layer import ConvertedAttention

    hq, hk, d = args.heads, args.kv_heads, args.head_dim
    b = max(1, args.tokens // seq_len)
    gen = torch.Generator(device=device).manual_seed(seq_len)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=device, generator=gen)).to(dtype)

    contiguous = [rand(b, h, seq_len, d, scale=s).requires_grad_() for h, s in ((hq, 0.5), (hk, 0.5), (hk, 1.0))]
    as_model = [rand(b, seq_len, h, d, scale=s).transpose(1, 2).requires_grad_() for h, s in ((hq, 0.5), (hk, 0.5), (hk, 1.0))]
    dout = rand(b, hq, seq_len, d)
    layer = ConvertedAttention("hedgehog", hq, hk, d, layer_idx=0).to(device)
    fq, fk = layer.feature_map_q, layer.feature_map_k
    args_fused = fq.fused_kernel_args(fk, contiguous[0], contiguous[1])
    args_fused.pop("window")
    hidden = hq * d
    x = rand(b, seq_len, hidden).requires_grad_()
    proj = torch.nn.Linear(hidden, (hq + 2 * hk) * d, bias=False, device=device)
    scaling = 1.0 / math.sqrt(d)

    def kernel(q, k, v):
        from hedgehog.kernels import chunked

        out = chunked.hedgehog_attention(q, k, v, causal=True, **args_fused)
        out.backward(dout)

    def attend_call():
        q, k, v = as_model
        out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=True)
        out.backward(dout)

    def layer_call():
        q, k, v = as_model
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = layer(q, k, v, None, causal=True, scaling=scaling)
        out.backward(dout)

    def layer_projected():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            qkv = proj(x)  # [B, N, (Hq + 2 Hk) D]
            q, k, v = qkv.split([hq * d, hk * d, hk * d], dim=-1)
            q = q.view(b, seq_len, hq, d).transpose(1, 2)
            k = k.view(b, seq_len, hk, d).transpose(1, 2)
            v = v.view(b, seq_len, hk, d).transpose(1, 2)
            q, k = q * 1.0001 + 0.0, k * 1.0001 + 0.0  # RoPE-like elementwise work keeping the layout
            out = layer(q, k, v, None, causal=True, scaling=scaling).transpose(1, 2).contiguous()
        out.float().sum().backward()

    out = {"batch": b}
    if device.type == "cuda":  # the Triton kernels run on a GPU only
        out.update(kernel=lambda: kernel(*contiguous), kernel_layout=lambda: kernel(*as_model))
    return {
        **out,
        "attend": attend_call,
        "layer": layer_call,
        "layer_projected": layer_projected,
    }


def describe(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "stride": list(t.stride()), "dtype": str(t.dtype).replace("torch.", ""),
            "offset_mod16": t.data_ptr() % 16, "absmax": float(t.detach().abs().max()),
            "finite": bool(torch.isfinite(t).all())}


def captured_ways(args, seq_len: int, device: torch.device) -> tuple[dict, dict]:
    """q, k, v, the feature maps and the output gradient of layers 0 and L/2 as one training step of the model
    passes them, and callables timing the fused kernel on them and on fresh random tensors stored alike."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import hedgehog
    from hedgehog.conversion.layer import ConvertedAttention
    from hedgehog.kernels import chunked

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.from_model)).to(device)
    hedgehog.convert(model, attention="hedgehog")
    layers = [m for m in model.modules() if isinstance(m, ConvertedAttention)]
    keep = {0: layers[0], len(layers) // 2: layers[len(layers) // 2]}
    seen: dict = {}

    def hook(index):
        def fn(module, inputs, kwargs, output):
            q, k, v = inputs[:3]
            seen[index] = {"q": q.detach().clone(), "k": k.detach().clone(), "v": v.detach().clone(),
                           "causal": kwargs.get("causal", True), "autocast": torch.is_autocast_enabled(device.type)}
            output.register_hook(lambda g: seen[index].__setitem__("dout", g.detach().clone()))
        return fn

    handles = [m.register_forward_hook(hook(i), with_kwargs=True) for i, m in keep.items()]
    b = max(1, args.tokens // seq_len)
    ids = torch.randint(0, model.config.vocab_size, (b, seq_len), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    info, calls = {}, {}
    for i, got in seen.items():
        layer = keep[i]
        q, k, v, dout = (got[n] for n in ("q", "k", "v", "dout"))
        q, k = q.to(v.dtype), k.to(v.dtype)  # what ConvertedAttention does under autocast
        info[f"layer{i}"] = {n: describe(t) for n, t in (("q", q), ("k", k), ("v", v), ("dout", dout))}
        info[f"layer{i}"]["autocast"] = got["autocast"]
        fused = layer.feature_map_q.fused_kernel_args(layer.feature_map_k, q, k)
        fused.pop("window")

        def run(q, k, v, dout, fused=fused):
            q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
            chunked.hedgehog_attention(q, k, v, causal=True, **fused).backward(dout)

        def alike(t):
            return torch.randn_like(t) * t.float().std().to(t.dtype)

        calls[f"captured_layer{i}"] = lambda q=q, k=k, v=v, d=dout: run(q, k, v, d)
        calls[f"captured_layer{i}_random_dout"] = lambda q=q, k=k, v=v, d=dout: run(q, k, v, alike(d))
        calls[f"captured_layer{i}_random_qkv"] = lambda q=q, k=k, v=v, d=dout: run(alike(q), alike(k), alike(v), d)
        calls[f"captured_layer{i}_contiguous"] = lambda q=q, k=k, v=v, d=dout: run(
            q.contiguous(), k.contiguous(), v.contiguous(), d.contiguous())
    return info, calls


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        print("layer_path: no CUDA device; timing the PyTorch path on the CPU (the kernels need a GPU)", file=sys.stderr)
    rows = []

    def measure(calls: dict, n: int, batch: int) -> None:
        for name, fn in calls.items():
            row = {"seq_len": n, "batch": batch, "way": name, "ms": round(timed(fn, args.repeats, device), 3)}
            if args.profile:
                row["top_kernels"] = top_kernels(fn, device)
            rows.append(row)
            print(f"N={n:6d} B={batch:3d} {name:30s} {row['ms']:9.3f} ms", flush=True)

    for n in args.seq_len:
        calls = ways(args, n, device)
        batch = calls.pop("batch")
        measure(calls, n, batch)
        if args.from_model and device.type == "cuda":
            info, captured = captured_ways(args, n, device)
            print(json.dumps(info, indent=1), flush=True)
            measure(captured, n, batch)
            rows.append({"seq_len": n, "captured": info})
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "heads": args.heads, "kv_heads": args.kv_heads,
              "head_dim": args.head_dim, "tokens": args.tokens, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
