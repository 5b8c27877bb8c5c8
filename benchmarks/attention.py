"""Time and peak memory of every attention type, forward and forward+backward, against softmax (SDPA).

    python benchmarks/attention.py --device cuda --dtype bfloat16 --out benchmarks/results/attention_h100.json
    python benchmarks/attention.py --device cpu --quick

Each row is one (attention type, N): the feature maps are included (``attend`` with fresh q/k maps built by
``build_feature_map``), causal by default. Times are medians: ``triton.testing.do_bench`` (or CUDA events) on
GPU, ``time.perf_counter`` on CPU. Peak memory on GPU is ``torch.cuda.max_memory_allocated`` above what the
inputs already hold; on CPU it is the peak of the bytes held by tensors created during the call (tracked with a
``TorchDispatchMode``). Prints a markdown table and writes JSON with the device, date and versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hedgehog.attention import ATTENTION_NAMES, attend, build_feature_map
from hedgehog.attention.backend import get_backend, set_backend

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--seq-lens", type=int, nargs="+", default=None, help=f"default: {DEFAULT_LENGTHS}")
    p.add_argument("--batch", type=int, default=None, help="default: 4 on cuda, 1 on cpu")
    p.add_argument("--heads", type=int, default=None, help="query heads (default: 16 on cuda, 4 on cpu)")
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default = --heads")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--types", nargs="+", default=list(ATTENTION_NAMES), choices=list(ATTENTION_NAMES))
    p.add_argument("--bidirectional", action="store_true", help="non-causal attention (default causal)")
    p.add_argument("--backend", choices=["auto", "torch", "triton"], default=None, help="hedgehog.attention backend")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats on cpu (default 5; 3 with --quick)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip longer N for a type once one forward+backward takes longer than this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="N <= 1024 and fewer repeats: a smoke run")
    p.add_argument("--note", default=None, help="free text stored in the JSON (e.g. which machine)")
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.batch = args.batch or (4 if cuda else 1)
    args.heads = args.heads or (16 if cuda else 4)
    args.kv_heads = args.kv_heads or args.heads
    if args.heads % args.kv_heads:
        p.error(f"--heads {args.heads} must be a multiple of --kv-heads {args.kv_heads}")
    lengths = args.seq_lens or DEFAULT_LENGTHS
    args.seq_lens = [n for n in lengths if n <= 1024] if args.quick else lengths
    args.repeats = args.repeats or (3 if args.quick else 5)
    return args


# ------------------------------------------------------------------ timing and memory
class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of CPU tensor storages created while the block runs (the CPU analogue of
    ``torch.cuda.max_memory_allocated``): every op output's storage is counted until it is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.storages.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.storages:
                    self.storages[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out


def peak_cpu_mb(fn) -> float:
    with LiveTensorBytes() as mem:
        fn()
    return mem.peak / 2**20


def time_cpu(fn, repeats: int) -> tuple[float, float]:
    """(median, min) wall time in ms; the min is the better estimate on a busy shared machine."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


def time_cuda(fn) -> float:
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        try:
            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        except TypeError:  # older triton: no return_mode
            return float(do_bench(fn, warmup=25, rep=100))
    for _ in range(3):
        fn()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_cuda_mb(fn) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    message = str(error).lower()
    return isinstance(error, oom_type) or "out of memory" in message or "can't allocate memory" in message


# ------------------------------------------------------------------ one case
def make_case(name: str, n: int, args, device: torch.device, dtype: torch.dtype):
    options = {"max_positions": max(n, 4096)} if name == "cosformer" else {}
    fq = build_feature_map(name, args.heads, args.head_dim, **options)
    fk = build_feature_map(name, args.kv_heads, args.head_dim, **options)
    if fq is not None:
        fq, fk = fq.to(device), fk.to(device)
    shape_q = (args.batch, args.heads, n, args.head_dim)
    shape_kv = (args.batch, args.kv_heads, n, args.head_dim)
    q = torch.randn(shape_q, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(shape_kv, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(shape_q[:3] + (args.head_dim,), device=device, dtype=dtype)
    params = [] if fq is None else [*fq.parameters(), *fk.parameters()]
    causal = not args.bidirectional

    def forward():
        with torch.no_grad():
            return attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=causal)

    def forward_backward():
        for t in (q, k, v, *params):
            t.grad = None
        out = attend(q, k, v, feature_map_q=fq, feature_map_k=fk, causal=causal)
        out.backward(grad)

    feature_dim = None if fq is None else fq.feature_dim
    return forward, forward_backward, feature_dim


def run_case(name: str, n: int, args, device, dtype) -> dict:
    row = {"type": name, "N": n, "B": args.batch, "H": args.heads, "Hk": args.kv_heads, "D": args.head_dim,
           "dtype": args.dtype, "causal": not args.bidirectional}
    try:
        forward, forward_backward, feature_dim = make_case(name, n, args, device, dtype)
        row["F"] = feature_dim
        if device.type == "cuda":
            row["fwd_ms"] = time_cuda(forward)
            row["fwd_peak_mb"] = peak_cuda_mb(forward)
            row["fwd_bwd_ms"] = time_cuda(forward_backward)
            row["fwd_bwd_peak_mb"] = peak_cuda_mb(forward_backward)
        else:
            row["fwd_ms"], row["fwd_ms_min"] = time_cpu(forward, args.repeats)
            row["fwd_peak_mb"] = peak_cpu_mb(forward)
            row["fwd_bwd_ms"], row["fwd_bwd_ms_min"] = time_cpu(forward_backward, args.repeats)
            row["fwd_bwd_peak_mb"] = peak_cpu_mb(forward_backward)
        row["status"] = "ok"
    except (RuntimeError, MemoryError) as error:
        if not (isinstance(error, MemoryError) or is_oom(error)):
            raise
        row["status"] = "oom"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------ report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| type | F | N | fwd ms | fwd+bwd ms | fwd peak MB | fwd+bwd peak MB | vs softmax fwd+bwd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    softmax = {r["N"]: r.get("fwd_bwd_ms") for r in rows if r["type"] == "softmax" and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['type']} | {r.get('F') or '-'} | {r['N']} | {r['status']} | | | | |")
            continue
        ratio = r["fwd_bwd_ms"] / softmax[r["N"]] if softmax.get(r["N"]) else None
        lines.append(
            f"| {r['type']} | {r['F'] or '-'} | {r['N']} | {fmt(r['fwd_ms'], 2)} | {fmt(r['fwd_bwd_ms'], 2)} | "
            f"{fmt(r['fwd_peak_mb'])} | {fmt(r['fwd_bwd_peak_mb'])} | {fmt(ratio, 2)}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.backend:
        set_backend(args.backend)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    rows, too_slow = [], set()
    for name in args.types:
        for n in args.seq_lens:
            if name in too_slow:
                rows.append({"type": name, "N": n, "status": f"skipped (> {args.max_seconds:g} s)"})
                continue
            row = run_case(name, n, args, device, dtype)
            rows.append(row)
            print(f"{name:>10} N={n:<6} " + ", ".join(f"{k}={fmt(row.get(k), 2)}" for k in ("fwd_ms", "fwd_bwd_ms")) + f" {row['status']}", flush=True)
            if row["status"] != "ok" or row["fwd_bwd_ms"] / 1e3 > args.max_seconds:
                too_slow.add(name)
    table = markdown(rows)
    print(table)
    result = {
        "device": device_name(device),
        "device_type": device.type,
        "note": args.note,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "attention_backend": get_backend(),
        "timing": "median (ms); triton.testing.do_bench or CUDA events on GPU, perf_counter on CPU (min also kept)",
        "memory": "torch.cuda.max_memory_allocated above inputs" if device.type == "cuda"
        else "peak bytes of tensors created during the call (TorchDispatchMode tracking)",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": rows,
        "table": table,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
