"""Experiment 2: spikiness, monotonicity and fidelity of each feature map on a real model's attention.

The paper's analysis (Zhang et al., ICLR 2024, Sec. 3.2-3.3, Figs. 2-4) asks two questions of a linear
attention: are its weights *spiky* (low entropy, as softmax's are) and *monotonic* in q.k (a larger dot
product never gets a smaller weight)? And, for Hedgehog, how close does distillation bring its weights to the
softmax teacher's (KL)? We answer them on the queries and keys that a real pretrained model produces on real
text:

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers x 12 heads, bidirectional) on GLUE sentences (train split for
  distillation, dev split for the measurements);
- ``smollm2``: SmolLM2-135M-Instruct (Llama, 30 layers, 9 query / 3 key-value heads, RoPE, causal) on WikiText
  (``wiki.valid.tokens`` for distillation, ``wiki.test.raw`` for the measurements).

For every layer we take the model's own q and k (after RoPE) and compare the teacher's softmax weights with the
weights of every feature map: fresh (untrained) maps for all types, and distilled maps for the trainable ones
(Hedgehog, T2R), trained with ``hedgehog.conversion``'s attention distillation (soft cross-entropy, only the
feature maps learn, the network sees the teacher's activations). Metrics per map and layer, averaged over real
(non-padded) queries and heads: attention entropy, monotonicity (Spearman correlation of the weights with q.k
per query) and KL(softmax || map).

Writes ``<out>/analysis_<model>.json`` and PNG figures ``<figures>/analysis_<model>_*.png``::

    python experiments/analysis_attention.py --model minilm                       # CPU, a few minutes
    python experiments/analysis_attention.py --model smollm2 --device cuda \\
        --model-path "$SMOLLM2_GGUF" --distill-steps 300
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAINABLE = ("hedgehog", "t2r")


# --------------------------------------------------------------------------------------------------------------
# models and text
# --------------------------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> str:
    """Lay out, write (130 dpi) and close ``fig``; returns the path written."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return str(path)


def default_model_path(name: str) -> str:
    """$MINILM_DIR / $SMOLLM2_GGUF if set, else the alias itself, which ``resolve_pretrained`` turns into the
    pip-installed package's folder or GGUF file (with the install hint when it is missing)."""
    return os.environ.get("MINILM_DIR" if name == "minilm" else "SMOLLM2_GGUF") or name


def load_model(name: str, path: str):
    """(model in fp32 eval mode, tokenizer) from a folder, a ``.gguf`` file (dequantised) or an alias."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from hedgehog.models.pretrained import resolve_pretrained

    folder, gguf_file = resolve_pretrained(path)  # also takes the aliases "minilm" and "smollm2"
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(folder, **kw)
    cls = AutoModel if name == "minilm" else AutoModelForCausalLM
    model = cls.from_pretrained(folder, dtype=torch.float32, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok  # loaded in fp32 (a GGUF model refuses .float(): it counts as quantized)


def glue_texts(data_dir: Path, split: str, limit: int, seed: int) -> list[tuple[str, ...]]:
    """Sentences and sentence pairs from several GLUE tasks' ``split`` file, shuffled with ``seed``."""
    from hedgehog.data.glue import read_glue_tsv

    rows: list[tuple[str, ...]] = []
    for task, folder in (("sst2", "SST-2"), ("cola", "CoLA"), ("mrpc", "MRPC"), ("rte", "RTE"), ("stsb", "STS-B")):
        path = data_dir / "glue" / folder / f"{split}.tsv"
        rows += [texts for texts, _ in read_glue_tsv(path, task)]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def wikitext_blocks(data_dir: Path, file: str, tok, seq_len: int, limit: int) -> list[torch.Tensor]:
    """Contiguous ``seq_len``-token blocks of a WikiText file under the model's tokenizer (detokenised)."""
    from hedgehog.data.text import wikitext_detokenize

    text = (data_dir / "wikitext" / file).read_text(encoding="utf-8")
    ids = tok(wikitext_detokenize(text), return_tensors="pt").input_ids[0]
    n = min(limit, len(ids) // seq_len)
    return [ids[i * seq_len:(i + 1) * seq_len] for i in range(n)]


def batches(name: str, tok, rows, batch_size: int, max_len: int):
    """Yield model inputs (dicts of tensors) for GLUE rows or WikiText blocks."""
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        if name == "minilm":
            first = [r[0] for r in chunk]
            second = [r[1] for r in chunk] if all(len(r) > 1 for r in chunk) else None
            yield dict(tok(first, second, padding=True, truncation=True, max_length=max_len, return_tensors="pt"))
        else:
            ids = torch.stack(chunk)
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# --------------------------------------------------------------------------------------------------------------
# capturing q, k and measuring
# --------------------------------------------------------------------------------------------------------------
def capture_qk(model, inputs: dict) -> list[dict]:
    """Per converted layer: q (after RoPE), k, key-padding mask, causal flag and the model's softmax scale.

    ``model`` is converted and in distillation mode, so every layer passes the softmax output on and the q, k
    of later layers are exactly the original model's.
    """
    from hedgehog.conversion import converted_layers, pop_distillation_loss
    from hedgehog.conversion.layer import key_padding_mask

    records: list[dict] = []

    def hook(layer, args, kwargs):
        q, k, _, attention_mask = args[:4]
        records.append({
            "q": q.detach().float(), "k": k.detach().float(),
            "mask": key_padding_mask(attention_mask, k.shape[2]),
            "causal": bool(kwargs["causal"]), "scaling": kwargs.get("scaling"),
        })

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in converted_layers(model)]
    try:
        with torch.no_grad():
            model(**inputs)
        pop_distillation_loss(model)
    finally:
        for h in handles:
            h.remove()
    return records


def query_input(rec: dict) -> torch.Tensor:
    """q as the feature maps see it (``ConvertedAttention`` rescales when the model's scale is not 1/sqrt(D))."""
    q, scaling = rec["q"], rec["scaling"]
    d = q.shape[-1]
    if scaling is not None and not math.isclose(scaling * math.sqrt(d), 1.0, rel_tol=1e-9):
        q = q * (scaling * math.sqrt(d))
    return q


def scores_of(rec: dict) -> torch.Tensor:
    """Scaled dot products q.k ``[B, Hq, N, N]`` (key/value heads repeated for grouped-query attention)."""
    q, k = rec["q"], rec["k"]
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = rec["scaling"] if rec["scaling"] is not None else 1 / math.sqrt(q.shape[-1])
    return torch.einsum("bhid,bhjd->bhij", q, k) * scale


def teacher_of(rec: dict) -> torch.Tensor:
    from hedgehog.attention import softmax_weights

    return softmax_weights(rec["q"], rec["k"], rec["causal"], key_padding_mask=rec["mask"], scale=rec["scaling"])


def student_of(rec: dict, fq, fk) -> torch.Tensor:
    from hedgehog.attention import attention_weights

    with torch.no_grad():
        qf = fq(query_input(rec), is_query=True)
        kf = fk(rec["k"])
        return attention_weights(qf, kf, rec["causal"], key_padding_mask=rec["mask"])


def measure(teacher: torch.Tensor, student: torch.Tensor, scores: torch.Tensor, rec: dict) -> dict[str, float]:
    from hedgehog.attention import attention_entropy, fidelity_kl, monotonicity

    mask, causal = rec["mask"], rec["causal"]
    return {
        "entropy": float(attention_entropy(student, mask)),
        "monotonicity": float(monotonicity(scores, student, mask, causal=causal)),
        "kl": float(fidelity_kl(teacher, student, mask)),
    }


def fresh_maps(name: str, rec: dict, seed: int, device):
    """A fresh (q, k) feature-map pair of ``name`` for a layer's geometry, seeded."""
    from hedgehog.attention import build_feature_map

    torch.manual_seed(seed)
    hq, hk, d = rec["q"].shape[1], rec["k"].shape[1], rec["q"].shape[-1]
    return build_feature_map(name, hq, d).to(device), build_feature_map(name, hk, d).to(device)


# --------------------------------------------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------------------------------------------
def distil(base, name: str, train_batches, steps: int, lr: float, device, seed: int, log_every: int = 25):
    """A copy of ``base`` converted to ``name`` whose feature maps are distilled for ``steps`` steps.

    Returns (model, loss curve [(step, loss)]). AdamW on the feature maps only, constant ``lr``, batches cycled.
    """
    import hedgehog
    from hedgehog.conversion import distillation, freeze_except_feature_maps, pop_distillation_loss

    torch.manual_seed(seed)
    model = hedgehog.convert(copy.deepcopy(base), attention=name)
    model.to(device)
    params = freeze_except_feature_maps(model)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    curve = []
    model.eval()  # no dropout: distillation matches the teacher's deterministic attention
    with distillation(model, metrics=False):
        for step in range(steps):
            inputs = {k: v.to(device) for k, v in train_batches[step % len(train_batches)].items()}
            model(**inputs)
            loss = pop_distillation_loss(model)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % log_every == 0 or step == steps - 1:
                curve.append((step, loss.item()))
                print(f"  distil {name} step {step:4d}  loss {loss.item():.4f}", flush=True)
    return model, curve


# --------------------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------------------
def draw(result: dict, example: dict, fig_dir: Path, tag: str) -> list[str]:
    """Entropy / monotonicity / KL bars, per-layer KL, an attention-map panel and a weight-vs-q.k scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    arms = result["arms"]
    labels = list(arms)
    colors = ["#4c72b0" if a.endswith("(distilled)") else "#bbbbbb" if a != "softmax" else "#222222" for a in labels]

    for metric, ylabel in (("entropy", "attention entropy (nats)"), ("monotonicity", "monotonicity (Spearman)"),
                           ("kl", "KL(softmax || map)")):
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 3.4))
        vals = [arms[a][metric] for a in labels]
        ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        if metric == "entropy":
            ax.axhline(result["teacher"]["entropy"], color="k", ls="--", lw=1, label="softmax teacher")
            ax.legend(fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{result['model_name']}: {metric} (mean over layers, heads, queries)", fontsize=9)
        written.append(_save(fig, fig_dir / f"analysis_{tag}_{metric}.png"))

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for a in labels:
        if a == "softmax":
            continue
        ax.plot(range(len(arms[a]["per_layer"])), [r["kl"] for r in arms[a]["per_layer"]], marker="o", ms=3,
                label=a, ls="-" if a.endswith("(distilled)") else ":")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("KL(softmax || map)")
    ax.set_title(f"{result['model_name']}: fidelity per layer", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    written.append(_save(fig, fig_dir / f"analysis_{tag}_kl_per_layer.png"))

    maps = example["maps"]
    n = len(maps)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    import numpy as np

    for ax, (label, w) in zip(axes.flat, maps.items()):
        # colour scale up to the 99th percentile: the first rows of a causal map (weight 1 on a single key) and
        # attention sinks would otherwise flatten everything else
        ax.imshow(w, cmap="viridis", interpolation="nearest", vmin=0.0, vmax=max(float(np.quantile(w, 0.99)), 1e-6))
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{result['model_name']} layer {example['layer']} head {example['head']}: attention weights "
                 "(colour scale clipped at each map's 99th percentile)", fontsize=9)
    written.append(_save(fig, fig_dir / f"analysis_{tag}_attention_maps.png"))

    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.2 * rows), squeeze=False)
    for ax, (label, w) in zip(axes.flat, example["query_rows"].items()):
        ax.scatter(example["query_scores"], w, s=6)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"weight vs q.k for one query (layer {example['layer']}, head {example['head']})", fontsize=9)
    written.append(_save(fig, fig_dir / f"analysis_{tag}_weight_vs_qk.png"))
    return written


# --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("minilm", "smollm2"), default="minilm")
    ap.add_argument("--model-path", default=None, help="HF folder or .gguf file (default: $MINILM_DIR / $SMOLLM2_GGUF / the pip package)")
    ap.add_argument("--data-dir", default=os.environ.get("HEDGEHOG_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "analysis"))
    ap.add_argument("--figures", default=str(ROOT / "experiments" / "figures"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--maps", default="elu,performer,cosformer,taylor,t2r,hedgehog")
    ap.add_argument("--distill-steps", type=int, default=200)
    ap.add_argument("--distill-lr", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128, help="max tokens per GLUE example / WikiText block length")
    ap.add_argument("--num-train", type=int, default=2048, help="distillation examples (blocks for smollm2)")
    ap.add_argument("--num-eval", type=int, default=64, help="measured examples (blocks for smollm2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="file tag (default: the model name)")
    args = ap.parse_args(argv)

    import hedgehog
    from hedgehog.conversion import converted_layers, set_distillation

    t0 = time.time()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    tag = args.tag or args.model
    data_dir = Path(args.data_dir)
    path = args.model_path or default_model_path(args.model)
    print(f"[analysis] loading {args.model} from {path}", flush=True)
    base, tok = load_model(args.model, path)
    if args.model == "minilm":
        train_rows = glue_texts(data_dir, "train", args.num_train, args.seed)
        eval_rows = glue_texts(data_dir, "dev", args.num_eval, args.seed)
        text_desc = "GLUE sentences/pairs (SST-2, CoLA, MRPC, RTE, STS-B): train split for distillation, dev split measured"
    else:
        train_rows = wikitext_blocks(data_dir, "wiki.valid.tokens", tok, args.seq_len, args.num_train)
        eval_rows = wikitext_blocks(data_dir, "wiki.test.raw", tok, args.seq_len, args.num_eval)
        text_desc = f"WikiText-2: {args.seq_len}-token blocks of wiki.valid.tokens for distillation, wiki.test.raw measured"
    train_batches = list(batches(args.model, tok, train_rows, args.batch_size, args.seq_len))
    eval_batches = list(batches(args.model, tok, eval_rows, args.batch_size, args.seq_len))

    # q, k of the original model on the measured text (a converted copy in distillation mode = the teacher)
    probe = hedgehog.convert(copy.deepcopy(base), attention="hedgehog").to(device)
    set_distillation(probe, True, metrics=False)
    layers_qk = [capture_qk(probe, {k: v.to(device) for k, v in b.items()}) for b in eval_batches]
    num_layers = len(layers_qk[0])
    del probe
    print(f"[analysis] captured q, k of {num_layers} layers on {len(eval_rows)} examples", flush=True)

    maps = [m for m in args.maps.split(",") if m]
    arm_maps: dict[str, list] = {}  # arm label -> per layer (fq, fk)
    for name in maps:
        arm_maps[name] = [fresh_maps(name, layers_qk[0][i], args.seed + i, device) for i in range(num_layers)]
    curves = {}
    for name in maps:
        if name in TRAINABLE and args.distill_steps > 0:
            t = time.time()
            model, curve = distil(base, name, train_batches, args.distill_steps, args.distill_lr, device, args.seed)
            curves[name] = {"steps": args.distill_steps, "lr": args.distill_lr, "loss": curve, "seconds": time.time() - t}
            arm_maps[f"{name} (distilled)"] = [(l.feature_map_q.eval(), l.feature_map_k.eval()) for l in converted_layers(model)]

    # measurements
    sums: dict[str, list[dict[str, float]]] = {a: [dict(entropy=0.0, monotonicity=0.0, kl=0.0) for _ in range(num_layers)]
                                                 for a in ["softmax", *arm_maps]}
    teacher_sum = [dict(entropy=0.0) for _ in range(num_layers)]
    counts = [0] * num_layers
    example = None
    ex_layer, ex_head = num_layers // 2, 0
    first_mask = layers_qk[0][0]["mask"]
    ex_item = int(first_mask.sum(-1).argmax()) if first_mask is not None else 0  # the longest example
    for bi, recs in enumerate(layers_qk):
        for li, rec in enumerate(recs):
            with torch.no_grad():
                teacher = teacher_of(rec)
                scores = scores_of(rec)
                weight = float(rec["q"].shape[0])
                counts[li] += weight
                t_metrics = measure(teacher, teacher, scores, rec)
                teacher_sum[li]["entropy"] += weight * t_metrics["entropy"]
                for key, val in t_metrics.items():
                    sums["softmax"][li][key] += weight * val
                students = {}
                for arm, per_layer in arm_maps.items():
                    fq, fk = per_layer[li]
                    students[arm] = student_of(rec, fq, fk)
                    for key, val in measure(teacher, students[arm], scores, rec).items():
                        sums[arm][li][key] += weight * val
            if bi == 0 and li == ex_layer:
                n_real = int(rec["mask"][ex_item].sum()) if rec["mask"] is not None else rec["q"].shape[2]
                n_show = min(n_real, 48)
                qi = n_show - 1 if rec["causal"] else min(n_show // 2, n_real - 1)
                kmax = qi + 1 if rec["causal"] else n_real
                example = {
                    "layer": li, "head": ex_head,
                    "maps": {"softmax": teacher[ex_item, ex_head, :n_show, :n_show].cpu().numpy()},
                    "query_scores": scores[ex_item, ex_head, qi, :kmax].cpu().numpy(),
                    "query_rows": {"softmax": teacher[ex_item, ex_head, qi, :kmax].cpu().numpy()},
                }
                for arm, w in students.items():
                    example["maps"][arm] = w[ex_item, ex_head, :n_show, :n_show].cpu().numpy()
                    example["query_rows"][arm] = w[ex_item, ex_head, qi, :kmax].cpu().numpy()
            del teacher, scores

    arms = {}
    for arm, per_layer in sums.items():
        rows = [{"layer": li, **{k: v / counts[li] for k, v in r.items()}} for li, r in enumerate(per_layer)]
        arms[arm] = {k: sum(r[k] for r in rows) / num_layers for k in ("entropy", "monotonicity", "kl")}
        arms[arm]["per_layer"] = rows
    teacher = {"entropy": sum(r["entropy"] / counts[i] for i, r in enumerate(teacher_sum)) / num_layers}

    result = {
        "experiment": "analysis_attention",
        "model": args.model,
        "model_name": {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M-Instruct"}[args.model],
        "model_path": str(path),
        "text": text_desc,
        "num_layers": num_layers,
        "num_eval_examples": len(eval_rows),
        "num_distill_examples": len(train_rows),
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "teacher": teacher,
        "arms": arms,
        "distillation": curves,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({platform.machine()})"),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(time.time() - t0, 1),
        "command": " ".join([Path(sys.argv[0]).as_posix() if argv is None else "analysis_attention.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw(result, example, Path(args.figures), tag)
    result["figures"] = [os.path.relpath(f, ROOT) if Path(f).is_relative_to(ROOT) else f for f in figures]
    (out / f"analysis_{tag}.json").write_text(json.dumps(result, indent=2))
    print(f"[analysis] {tag}: wrote {out / f'analysis_{tag}.json'} and {len(figures)} figures in {result['wall_time_s']} s")
    for arm, m in arms.items():
        print(f"  {arm:22s} entropy {m['entropy']:.3f}  monotonicity {m['monotonicity']:.3f}  KL {m['kl']:.4f}")
    print(f"  teacher entropy {teacher['entropy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
