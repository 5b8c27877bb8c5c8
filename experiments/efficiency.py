"""Experiment 6: end-to-end speed and memory of converted SmolLM2-135M against its softmax original.

For softmax (SDPA) and each linear attention (``hedgehog.convert``; Hedgehog runs the fused Triton kernels on
CUDA, and once more on the PyTorch reference path for comparison) we time

- **training**: one full fine-tuning step (forward, backward, AdamW) in bf16-mixed precision (fp32 weights, bf16
  autocast, as ``trainer=gpu`` trains) on ``batch x seq_len`` tokens of
  random ids, at several sequence lengths with the same number of tokens per batch; reported as tokens/s and
  peak memory. (The attention maths are what change between arms; the data do not matter for speed.)
- **generation**: greedy decoding of exactly ``--new-tokens`` tokens after a ``--prompt-len`` prompt, batch 1 and
  ``--gen-batch``, after a short warm-up generation; tokens/s (new tokens over wall time, prefill included) and
  peak memory. Softmax decodes with
  transformers' growing key/value cache, converted models with the constant-size recurrent state
  (``LinearAttentionCache``).

Training timings are the median of ``--repeats`` steps after ``--warmup`` untimed ones; generation timings the
median of ``--gen-repeats`` runs. Writes
``<out>/efficiency.json`` and ``<figures>/efficiency_{train,generate}.png``::

    python experiments/efficiency.py --model-path "$SMOLLM2_GGUF" --out $OUT/efficiency
    python experiments/efficiency.py --smoke        # tiny random Llama on CPU, checks the script end to end
    python experiments/efficiency.py --random-weights benchmarks/smollm2_135m_config.json   # SmolLM2's shape, random

``--random-weights`` builds SmolLM2-135M's architecture with random weights, for a host without the GGUF file:
speed and memory do not depend on the weights' values (generation always decodes exactly ``--new-tokens``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def timed(fn, device, warmup: int, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_base(args, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.smoke:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          pad_token_id=0, eos_token_id=1, bos_token_id=1)
        return LlamaForCausalLM(cfg).to(device), "tiny random Llama (smoke test)"
    if args.random_weights:
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        cfg = AutoConfig.from_pretrained(args.random_weights)
        return AutoModelForCausalLM.from_config(cfg).to(device), f"SmolLM2-135M architecture, random weights ({Path(args.random_weights).name})"
    from hedgehog.models.pretrained import load_pretrained

    model = load_pretrained(args.model_path, task="causal_lm", dtype="float32")
    return model.to(device), "SmolLM2-135M-Instruct"


def arm_model(base, arm: str):
    """A copy of ``base`` in the arm's attention; arm ``hedgehog-torch`` is Hedgehog on the PyTorch path."""
    import hedgehog

    model = copy.deepcopy(base)
    name = arm.split("-")[0]
    if name != "softmax":
        hedgehog.convert(model, attention=name)
    return model


def backend_for(arm: str):
    from hedgehog.attention.backend import use_backend

    return use_backend("torch" if arm.endswith("-torch") else "auto")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp32 weights, bf16 matmuls: what ``trainer=gpu`` trains with); nothing on CPU."""
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def training_step(model, device, batch: int, seq_len: int, vocab: int):
    """One full fine-tuning step (forward, backward, AdamW) on random ids, as a function of no arguments."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, vocab, (batch, seq_len), device=device)

    def step():
        with autocast(device):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def train_throughput(model, device, batch: int, seq_len: int, warmup: int, repeats: int, vocab: int) -> dict:
    step = training_step(model, device, batch, seq_len, vocab)
    reset_peak(device)
    seconds = timed(step, device, warmup, repeats)
    return {"batch": batch, "seq_len": seq_len, "step_s": round(seconds, 5),
            "tokens_per_s": round(batch * seq_len / seconds, 1), "peak_mib": peak_mib(device)}


@torch.no_grad()
def generate_throughput(model, device, batch: int, prompt_len: int, new_tokens: int, warmup: int, repeats: int,
                        vocab: int, decoder: str = "generate") -> dict:
    """Tokens/s of greedy decoding (prefill included). ``decoder``: ``generate`` (transformers' loop, one launch
    per kernel) or ``graph`` (``hedgehog.conversion.decode.greedy_decode``: the step replayed from a CUDA graph,
    softmax on a static key/value cache); the graph rows also give ``step_ms``, the time per decoded token
    without the prefill (from a run decoding one token)."""
    from hedgehog.conversion.decode import greedy_decode

    model.eval()
    ids = torch.randint(2, vocab, (batch, prompt_len), device=device)
    mask = torch.ones_like(ids)
    lengths = []

    def gen(n=new_tokens):
        with autocast(device):
            if decoder == "graph":
                out = greedy_decode(model, ids, n, attention_mask=mask, cuda_graph=device.type == "cuda")
            else:
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                     do_sample=False, pad_token_id=0)
        lengths.append(out.shape[1] - prompt_len)

    for _ in range(warmup):  # short warm-up generations: kernels compiled, caches allocated
        gen(min(8, new_tokens))
    lengths.clear()
    reset_peak(device)
    seconds = timed(gen, device, 0, repeats)
    row = {"batch": batch, "prompt_len": prompt_len, "decoder": decoder, "new_tokens": int(statistics.median(lengths)),
           "seconds": round(seconds, 4), "tokens_per_s": round(batch * new_tokens / seconds, 1),
           "peak_mib": peak_mib(device)}
    if decoder == "graph" and new_tokens > 1:
        first = timed(lambda: gen(1), device, 0, repeats)
        row["prefill_s"] = round(first, 4)
        row["step_ms"] = round(1000 * (seconds - first) / (new_tokens - 1), 3)
    return row


ATTENTION_RANGE = "efficiency::attention"


def _wrap_attention_functions():
    """Wrap every registered attention function of transformers in a profiler range, so that the forward kernels
    of attention (softmax SDPA or the converted layers) can be told apart from the rest of the model."""
    import contextlib

    from transformers import AttentionInterface

    originals = dict(AttentionInterface._global_mapping)

    def wrap(fn):
        def wrapped(*args, **kwargs):
            with torch.profiler.record_function(ATTENTION_RANGE):
                return fn(*args, **kwargs)
        return wrapped

    for name, fn in originals.items():
        AttentionInterface._global_mapping[name] = wrap(fn)

    @contextlib.contextmanager
    def restore():
        try:
            yield
        finally:
            AttentionInterface._global_mapping.update(originals)
    return restore()


def profile_step(model, device, batch: int, seq_len: int, vocab: int, layers: int) -> dict:
    """One profiled training step (after two untimed ones): the step's CUDA time, the attention's forward and
    backward CUDA time per layer (forward: kernels launched inside the attention function; backward: the
    autograd nodes of attention), and the 15 kernels that took longest."""
    from torch.profiler import ProfilerActivity, profile

    step = training_step(model, device, batch, seq_len, vocab)
    with _wrap_attention_functions():
        for _ in range(2):
            step()
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            sync(device)
    events = prof.key_averages()

    on_gpu = device.type == "cuda"  # on a CPU (the smoke check) the same sums are taken over CPU time

    def device_ms(event) -> float:
        return (event.device_time_total if on_gpu else event.cpu_time_total) / 1000.0

    def self_device_ms(event) -> float:
        return (event.self_device_time_total if on_gpu else event.self_cpu_time_total) / 1000.0

    fwd = sum(device_ms(e) for e in events if e.key == ATTENTION_RANGE)
    bwd = sum(device_ms(e) for e in events if e.key.startswith("autograd::engine::evaluate_function:")
              and any(t in e.key for t in ("AttentionFunctionBackward", "ScaledDotProduct", "FlashAttention",
                                           "EfficientAttention", "CudnnAttention")))
    kind = "CUDA" if on_gpu else "CPU"
    kernels = sorted((e for e in events if self_device_ms(e) > 0 and e.device_type.name == kind),
                     key=self_device_ms, reverse=True)
    step_ms = sum(self_device_ms(e) for e in events if e.device_type.name == kind)
    return {
        "batch": batch, "seq_len": seq_len, "layers": layers, "time": "cuda" if on_gpu else "cpu",
        "step_ms": round(step_ms, 2),
        "attention_fwd_ms_per_layer": round(fwd / layers, 3), "attention_bwd_ms_per_layer": round(bwd / layers, 3),
        "attention_ms_per_layer": round((fwd + bwd) / layers, 3),
        "top_kernels": [{"kernel": e.key[:120], "calls": e.count, "ms": round(self_device_ms(e), 3)} for e in kernels[:15]],
    }


def draw(result: dict, fig_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    arms = list(result["train"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm in arms:
        rows = [r for r in result["train"][arm] if "tokens_per_s" in r]
        axes[0].plot([r["seq_len"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=arm)
        axes[1].plot([r["seq_len"] for r in rows], [r["peak_mib"] or 0 for r in rows], marker="o", label=arm)
    for ax, label in zip(axes, ("training tokens / s", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (same tokens per batch)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['model']}: training step (full fine-tuning, {result['dtype']}) on {result['device']}", fontsize=9)
    fig.tight_layout()
    path = fig_dir / "efficiency_train.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(str(path))

    settings = sorted({(r.get("prompt_len", 0), r["batch"]) for rows in result["generate"].values() for r in rows
                       if "tokens_per_s" in r})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(settings)), 3.6))
    series = sorted({(a, r.get("decoder", "generate")) for a in arms for r in result["generate"].get(a, [])},
                    key=lambda s: (arms.index(s[0]), s[1]))  # one bar per arm and decoding loop
    width = 0.8 / max(1, len(series))
    for i, (arm, decoder) in enumerate(series):
        vals = {(r.get("prompt_len", 0), r["batch"]): r["tokens_per_s"] for r in result["generate"][arm]
                if "tokens_per_s" in r and r.get("decoder", "generate") == decoder}
        ax.bar([j + i * width for j in range(len(settings))], [vals.get(k, 0) for k in settings], width,
               label=f"{arm} ({decoder})")
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(settings))],
                  [f"prompt {p}\nbatch {b}" for p, b in settings], fontsize=7)
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"greedy generation, {result['new_tokens']} new tokens after the prompt", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / "efficiency_generate.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", default=os.environ.get("SMOLLM2_GGUF", "smollm2"))
    ap.add_argument("--arms", default="softmax,hedgehog,hedgehog-torch,t2r,elu")
    ap.add_argument("--tokens-per-batch", type=int, default=16384)
    ap.add_argument("--seq-lens", default="1024,4096,8192")
    ap.add_argument("--prompt-len", default="256", help="prompt length(s) of the generation rows, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--gen-batch", default="16",
                    help="generation batch(es) besides batch 1, comma-separated: one row per prompt length and batch")
    ap.add_argument("--decoders", default="generate,graph",
                    help="generation loops, comma-separated: generate (transformers) and/or graph (CUDA-graph step)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed training steps per setting (median)")
    ap.add_argument("--gen-repeats", type=int, default=1, help="timed generations per setting (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "efficiency"))
    ap.add_argument("--figures", default=None, help="default: <out>/figures")
    ap.add_argument("--smoke", action="store_true", help="tiny random Llama, short sequences (CPU check)")
    ap.add_argument("--profile-seq-len", type=int, default=None,
                    help="also profile one training step per arm at this length (attention time per layer)")
    ap.add_argument("--random-weights", default=None, metavar="CONFIG_JSON",
                    help="random weights in this Hugging Face config's architecture instead of --model-path")
    args = ap.parse_args(argv)
    if args.smoke:
        args.tokens_per_batch, args.seq_lens, args.new_tokens = 256, "64,128", 8
        args.prompt_len, args.gen_batch = ("16,32", "2") if "," in args.prompt_len else ("16", "2")
        args.warmup, args.repeats = 1, 1

    device = torch.device(args.device)
    t0 = time.time()
    base, model_name = load_base(args, device)
    vocab = int(base.config.vocab_size)
    arms = [a for a in args.arms.split(",") if a]
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    prompt_lens = [int(s) for s in str(args.prompt_len).split(",")]
    gen_batches = sorted({1, *(int(b) for b in str(args.gen_batch).split(","))})
    result = {
        "experiment": "efficiency", "model": model_name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": "bf16-mixed (fp32 weights, bf16 autocast)" if device.type == "cuda" else "fp32", "tokens_per_batch": args.tokens_per_batch,
        "prompt_len": prompt_lens[0] if len(prompt_lens) == 1 else prompt_lens, "new_tokens": args.new_tokens, "warmup": args.warmup, "repeats": args.repeats,
        "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "train": {}, "generate": {}, "profile": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(done: bool) -> None:  # after every arm, so that a run stopped by a timeout keeps what it measured
        result["complete"] = done
        result["wall_time_s"] = round(time.time() - t0, 1)
        (out / "efficiency.json").write_text(json.dumps(result, indent=2))

    for arm in arms:
        result["train"][arm], result["generate"][arm] = [], []
        for seq_len in seq_lens:
            batch = max(1, args.tokens_per_batch // seq_len)
            model = arm_model(base, arm)
            try:
                with backend_for(arm):
                    row = train_throughput(model, device, batch, seq_len, args.warmup, args.repeats, vocab)
            except torch.OutOfMemoryError as error:
                row = {"batch": batch, "seq_len": seq_len, "error": f"out of memory: {str(error).splitlines()[0]}"}
            except Exception as error:  # keep measuring the other settings; the error is recorded
                row = {"batch": batch, "seq_len": seq_len, "error": f"{type(error).__name__}: {error}"[:300]}
            del model
            result["train"][arm].append(row)
            print(f"[efficiency] train {arm:15s} {row}", flush=True)
        if args.profile_seq_len:
            seq_len = args.profile_seq_len
            batch = max(1, args.tokens_per_batch // seq_len)
            model = arm_model(base, arm)
            try:
                with backend_for(arm):
                    row = profile_step(model, device, batch, seq_len, vocab, int(base.config.num_hidden_layers))
            except Exception as error:
                row = {"batch": batch, "seq_len": seq_len, "error": f"{type(error).__name__}: {error}"[:300]}
            del model
            result["profile"][arm] = row
            print(f"[efficiency] profile {arm:13s} {({k: v for k, v in row.items() if k != 'top_kernels'})}", flush=True)
        # generation has its own kernel path: one Hedgehog row is enough there, none for the -torch arm
        decoders = [d for d in args.decoders.split(",") if d]
        grid = [] if arm.endswith("-torch") or args.new_tokens == 0 else [
            (p, b, d) for d in decoders for p in prompt_lens for b in gen_batches]
        for prompt_len, batch, decoder in grid:
            model = arm_model(base, arm)
            try:
                row = generate_throughput(model, device, batch, prompt_len, args.new_tokens, 1, args.gen_repeats, vocab,
                                          decoder)
            except torch.OutOfMemoryError as error:
                row = {"batch": batch, "prompt_len": prompt_len, "decoder": decoder,
                       "error": f"out of memory: {str(error).splitlines()[0]}"}
            except Exception as error:
                row = {"batch": batch, "prompt_len": prompt_len, "decoder": decoder,
                       "error": f"{type(error).__name__}: {error}"[:300]}
            del model
            result["generate"][arm].append(row)
            print(f"[efficiency] generate {arm:12s} {row}", flush=True)
        save(False)
    result["figures"] = [os.path.basename(f) for f in draw(result, Path(args.figures or out / "figures"))]
    save(True)
    print(f"[efficiency] wrote {out / 'efficiency.json'} in {result['wall_time_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
