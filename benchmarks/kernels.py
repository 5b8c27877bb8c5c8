"""Hedgehog attention kernels against SDPA (FlashAttention), flash-linear-attention and our PyTorch path.

    python benchmarks/kernels.py --out benchmarks/results/kernels_h100.json        # on a CUDA host
    python benchmarks/kernels.py --dry-run                                         # tiny shapes on CPU

N from 1K to 128K at a fixed number of tokens per batch (B = tokens / N, at least 1), causal by default,
16 heads, head dim 64, Hedgehog features 128 (= 2 x 64), bfloat16. For every N and method: forward and
forward+backward time (``triton.testing.do_bench`` median, ms) and the peak memory of forward+backward
(``torch.cuda.max_memory_allocated``, inputs and the upstream gradient included). Methods:

* ``hedgehog_fused`` -- ours: ``hedgehog.kernels.hedgehog_attention`` with the maps' own arguments (feature map
  inside the kernels; what ``attend`` calls on CUDA), gradients to q, k, v and both maps' weight and bias;
* ``hedgehog_fused_bf16w`` -- the same with the projection weight rounded to bf16 (one product instead of the
  fp32-accurate two: ``HEDGEHOG_KERNELS_SPLIT_WEIGHTS=0``);
* ``hedgehog_torch`` -- ``hedgehog.attention.attend`` with the PyTorch backend (the reference path);
* ``linear_features`` -- our unfused kernel (``hedgehog.kernels.linear_attention``) on ready-made features;
* ``sdpa_flash`` -- ``scaled_dot_product_attention`` with the FlashAttention backend (softmax);
* ``fla_chunk`` -- flash-linear-attention's ``chunk_linear_attn`` on ready-made features, when importable.

Writes JSON (device, date, versions, every shape; rewritten after every N so a cut-off run keeps what it
measured), prints a markdown table, and draws time vs N with ``plot_kernels.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

METHODS = ("hedgehog_fused", "hedgehog_fused_bf16w", "hedgehog_torch", "linear_features", "sdpa_flash", "fla_chunk")
# most informative first (a run cut short by its budget keeps these): the issue quotes 1K, 16K and 64K
DEFAULT_LENGTHS = [1024, 65536, 16384, 4096, 131072, 2048, 8192, 32768]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=None, help=f"sequence lengths (default {DEFAULT_LENGTHS})")
    p.add_argument("--tokens", type=int, default=65536, help="tokens per batch: B = max(1, tokens // N)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default = --heads")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64, help="Hedgehog feature_dim (features = 2 x hidden)")
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--bidirectional", action="store_true", help="non-causal (default causal)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--warmup", type=float, default=25.0, help="do_bench warm-up, ms")
    p.add_argument("--rep", type=float, default=100.0, help="do_bench repetition time, ms")
    p.add_argument("--budget", type=float, default=None, help="stop starting new lengths after this many seconds")
    p.add_argument("--slow-ms", type=float, default=2000.0, help="drop a method for longer N once it exceeds this")
    p.add_argument("--profile-lengths", type=int, nargs="*", default=[1024, 65536],
                   help="lengths at which to record per-kernel CUDA times of hedgehog_fused forward+backward")
    p.add_argument("--accuracy-lengths", type=int, nargs="*", default=[4096],
                   help="lengths (besides the first) at which to check values and gradients against PyTorch")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default: none)")
    p.add_argument("--png", type=Path, default=None, help="plot output (default: next to --out)")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU through the Triton interpreter")
    args = p.parse_args(argv)
    if args.dry_run:
        args.lengths = args.lengths or [64, 128]
        args.tokens, args.heads, args.head_dim, args.hidden = 128, 2, 16, 16
        args.profile_lengths = []
    args.lengths = args.lengths or DEFAULT_LENGTHS
    args.kv_heads = args.kv_heads or args.heads
    return args


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    try:
        import fla
        out["fla"] = getattr(fla, "__version__", "unknown")
    except Exception:
        out["fla"] = None
    return out


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": platform.processor() or "cpu", "type": "cpu"}
    prop = torch.cuda.get_device_properties(device)
    return {"name": prop.name, "type": "cuda", "capability": f"{prop.major}.{prop.minor}",
            "sms": prop.multi_processor_count, "memory_gib": round(prop.total_memory / 2**30, 1)}


def load_fla():
    """``chunk_linear_attn`` and how to call it, or (None, reason)."""
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except Exception as error:  # not installed, or its kernels fail to import here
        return None, f"{type(error).__name__}: {error}"
    params = inspect.signature(chunk_linear_attn).parameters
    kwargs = {}
    if "scale" in params:
        kwargs["scale"] = 1.0  # features are ready-made: no 1/sqrt(K) on top
    if "normalize" in params:
        kwargs["normalize"] = True
    if "head_first" in params:
        kwargs["head_first"] = False
    return (chunk_linear_attn, kwargs), None


class Case:
    """Inputs of one (N, B) shape, shared by every method (made once, outside the timed region)."""

    def __init__(self, args, n: int, device: torch.device):
        from hedgehog.attention import build_feature_map

        self.n, self.b = n, max(1, args.tokens // n)
        self.causal = not args.bidirectional
        dtype = getattr(torch, args.dtype)
        gen = torch.Generator(device=device).manual_seed(n)
        shape = lambda h, d: (self.b, h, n, d)  # noqa: E731
        rand = lambda *s: torch.randn(*s, device=device, dtype=dtype, generator=gen)  # noqa: E731
        self.q = (0.5 * rand(*shape(args.heads, args.head_dim))).requires_grad_()
        self.k = (0.5 * rand(*shape(args.kv_heads, args.head_dim))).requires_grad_()
        self.v = rand(*shape(args.kv_heads, args.head_dim)).requires_grad_()
        self.dout = rand(*shape(args.heads, args.head_dim))
        self.fq = build_feature_map("hedgehog", args.heads, args.head_dim, feature_dim=args.hidden, init="random").to(device)
        self.fk = build_feature_map("hedgehog", args.kv_heads, args.head_dim, feature_dim=args.hidden, init="random").to(device)
        with torch.no_grad():  # ready-made features for the feature-only methods, [B, H, N, F]
            self.qf = self.fq(self.q, is_query=True).to(dtype)
            self.kf = self.fk(self.k).to(dtype)
        self.qf.requires_grad_()
        self.kf.requires_grad_()
        self.params = [self.q, self.k, self.v, *self.fq.parameters(), *self.fk.parameters()]


def make_method(name: str, case: Case, device: torch.device, fla_fn):
    """(forward callable, inputs to differentiate) for one method, or raise with the reason it cannot run."""
    from hedgehog.attention import attend
    from hedgehog.attention.backend import use_backend

    c = case
    if name == "hedgehog_fused_bf16w":
        inner, inputs = make_method("hedgehog_fused", case, device, fla_fn)

        def fwd():
            previous = os.environ.get("HEDGEHOG_KERNELS_SPLIT_WEIGHTS")
            os.environ["HEDGEHOG_KERNELS_SPLIT_WEIGHTS"] = "0"
            try:
                return inner()
            finally:
                if previous is None:
                    del os.environ["HEDGEHOG_KERNELS_SPLIT_WEIGHTS"]
                else:
                    os.environ["HEDGEHOG_KERNELS_SPLIT_WEIGHTS"] = previous
        return fwd, inputs
    if name == "hedgehog_fused":
        from hedgehog.kernels import chunked

        args = c.fq.fused_kernel_args(c.fk, c.q, c.k)  # what ``attend`` hands the kernel
        if args is None:
            raise RuntimeError("the Hedgehog maps declined the fused kernel")
        args.pop("window")
        tiles = {} if device.type == "cuda" else {"chunk_size": 16, "segment_size": 32}

        def fwd():
            return chunked.hedgehog_attention(c.q, c.k, c.v, causal=c.causal, **args, **tiles)
        return fwd, c.params
    if name == "hedgehog_torch":
        def fwd():
            with use_backend("torch"):
                return attend(c.q, c.k, c.v, feature_map_q=c.fq, feature_map_k=c.fk, causal=c.causal)
        return fwd, c.params
    if name == "linear_features":
        from hedgehog.kernels import chunked

        tiles = {} if device.type == "cuda" else {"chunk_size": 16, "segment_size": 32}

        def fwd():
            return chunked.linear_attention(c.qf, c.kf, c.v, causal=c.causal, **tiles)
        return fwd, [c.qf, c.kf, c.v]
    if name == "sdpa_flash":
        import torch.nn.functional as F

        def fwd():
            if device.type == "cuda":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(c.q, c.k, c.v, is_causal=c.causal,
                                                          enable_gqa=c.q.shape[1] != c.k.shape[1])
            return F.scaled_dot_product_attention(c.q, c.k, c.v, is_causal=c.causal)
        return fwd, [c.q, c.k, c.v]
    if name == "fla_chunk":
        if fla_fn is None:
            raise RuntimeError("flash-linear-attention is not importable")
        if not c.causal:
            raise RuntimeError("chunk_linear_attn is causal only")
        if c.q.shape[1] != c.k.shape[1]:
            raise RuntimeError("chunk_linear_attn has no grouped-query heads")
        fn, kwargs = fla_fn
        # fla wants [B, T, H, K]; the transposes are views and their copies are not timed: made once here
        qf, kf, v = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (c.qf, c.kf, c.v))

        def fwd():
            out = fn(qf, kf, v, **kwargs)
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
        return fwd, [qf, kf, v]
    raise ValueError(name)


def timer(args, device):
    if device.type == "cuda":
        import triton

        def bench(fn):
            fn()  # compile / autotune outside the measurement
            torch.cuda.synchronize()
            return triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")
    else:
        def bench(fn):
            fn()
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
    return bench


def peak_memory(fwd, inputs, dout, device) -> tuple[float | None, float | None]:
    """Peak bytes (MiB) of one forward+backward: total, and above what was allocated before (inputs, dout)."""
    if device.type != "cuda":
        return None, None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    grads = torch.autograd.grad(fwd(), inputs, dout)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device)
    del grads
    return peak / 2**20, (peak - base) / 2**20


def profile_kernels(fwd, inputs, dout, device, repeats: int = 5) -> list[dict]:
    """Per-kernel CUDA time of forward+backward (average over ``repeats``), largest first."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            torch.autograd.grad(fwd(), inputs, dout)
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        total_us = getattr(event, "device_time_total", None)
        if total_us is None:
            total_us = getattr(event, "cuda_time_total", 0.0)
        if total_us and total_us > 0:
            rows.append({"kernel": event.key[:120], "calls_per_iter": event.count / repeats,
                         "ms_per_iter": total_us / 1e3 / repeats})
    rows.sort(key=lambda r: -r["ms_per_iter"])
    return rows[:25]


def accuracy(case: Case, device: torch.device, fla_fn) -> dict:
    """Relative errors against the PyTorch path on this case's inputs: every linear method's output, and
    the fused kernel's gradients (q, k, v, both maps' weight and bias) -- a check that the timed (and tuned)
    kernels compute the right thing. Both sides are 16-bit here: expect a few 1e-3."""
    out = {}
    fwd_ref, inputs = make_method("hedgehog_torch", case, device, fla_fn)
    ref = fwd_ref()
    ref_grads = torch.autograd.grad(ref, inputs, case.dout)
    for name in ("hedgehog_fused", "hedgehog_fused_bf16w", "linear_features", "fla_chunk"):
        try:
            fwd, ins = make_method(name, case, device, fla_fn)
            y = fwd()
            out[name] = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            if name.startswith("hedgehog_fused"):
                grads = torch.autograd.grad(y, ins, case.dout)
                labels = ("dq", "dk", "dv", "dWq", "dbq", "dWk", "dbk")
                out[name + "_grads"] = {
                    lab: ((g.float() - r.float()).norm() / r.float().norm()).item()
                    for lab, g, r in zip(labels, grads, ref_grads)
                }
        except Exception as error:
            out[name] = f"{type(error).__name__}: {error}"[:200]
    return out


def markdown(rows: list[dict]) -> str:
    lengths = sorted({r["N"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]

    def cell(n, m, key):
        r = next((r for r in rows if r["N"] == n and r["method"] == m), None)
        if r is None:
            return "-"
        if r.get(key) is None:
            return "err" if r.get("error") else "-"
        return f"{r[key]:.2f}" if key.endswith("ms") else f"{r[key]:.0f}"

    lines = []
    for key, title in (("fwd_ms", "forward (ms)"), ("fwdbwd_ms", "forward+backward (ms)"),
                       ("peak_mib", "peak memory of forward+backward (MiB, inputs included)")):
        lines.append(f"\n{title}\n")
        lines.append("| N | B | " + " | ".join(methods) + " |")
        lines.append("| --- | --- |" + " --- |" * len(methods))
        for n in lengths:
            b = next(r["B"] for r in rows if r["N"] == n)
            lines.append(f"| {n} | {b} | " + " | ".join(cell(n, m, key) for m in methods) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("needs a CUDA device (or --dry-run)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
    started = time.time()
    fla_fn, fla_reason = load_fla() if "fla_chunk" in args.methods else (None, "not requested")
    bench = timer(args, device)
    result = {
        "benchmark": "hedgehog attention kernels",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "fla": {"available": fla_fn is not None, "reason": fla_reason,
                "call": None if fla_fn is None else {k: v for k, v in fla_fn[1].items()}},
        "env": {k: v for k, v in os.environ.items() if k.startswith(("HEDGEHOG_", "TRITON_"))},
        "rows": [], "accuracy": {}, "profiles": {}, "tuned_configs": {},
    }

    def save():
        try:
            from hedgehog.kernels.launch import tuned_configs
            result["tuned_configs"] = tuned_configs()
        except Exception:
            pass
        result["elapsed_s"] = round(time.time() - started, 1)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))

    dropped: dict[str, str] = {}
    if fla_fn is None and "fla_chunk" in args.methods:
        dropped["fla_chunk"] = f"flash-linear-attention not importable: {fla_reason}"[:300]
    for n in args.lengths:
        if args.budget is not None and time.time() - started > args.budget:
            print(f"budget of {args.budget:.0f} s spent: stopping before N={n}", flush=True)
            result["stopped_before_N"] = n
            break
        case = Case(args, n, device)
        for name in args.methods:
            row = {"N": n, "B": case.b, "tokens": case.b * n, "method": name}
            if name in dropped:
                row["error"] = dropped[name]
                result["rows"].append(row)
                continue
            try:
                fwd, inputs = make_method(name, case, device, fla_fn)
                with torch.no_grad():
                    row["fwd_ms"] = bench(fwd)
                row["fwdbwd_ms"] = bench(lambda: torch.autograd.grad(fwd(), inputs, case.dout))
                row["peak_mib"], row["peak_above_inputs_mib"] = peak_memory(fwd, inputs, case.dout, device)
                if device.type == "cuda" and name == "hedgehog_fused" and n in args.profile_lengths:
                    result["profiles"][str(n)] = profile_kernels(fwd, inputs, case.dout, device)
                if row["fwdbwd_ms"] > args.slow_ms:
                    dropped[name] = f"dropped after {row['fwdbwd_ms']:.0f} ms at N={n}"
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {error}"[:300]
                if isinstance(error, torch.OutOfMemoryError):
                    dropped[name] = f"out of memory at N={n}"
                traceback.print_exc()
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            save()
        if n in args.accuracy_lengths or n == args.lengths[0]:
            try:
                result["accuracy"][str(n)] = accuracy(case, device, fla_fn)
                print(f"relative error vs PyTorch path at N={n}: {result['accuracy'][str(n)]}", flush=True)
            except Exception as error:
                result["accuracy"][str(n)] = f"{type(error).__name__}: {error}"[:300]
        del case
        save()
    save()
    print(markdown(result["rows"]))
    if args.out is not None:
        png = args.png or args.out.with_suffix(".png")
        try:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from plot_kernels import plot

            plot(result, png)
            print(f"wrote {args.out} and {png}")
        except Exception:
            traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
