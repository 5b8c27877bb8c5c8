"""Plot the JSON of ``benchmarks/kernels.py``: time vs N (forward and forward+backward) and peak memory.

    python benchmarks/plot_kernels.py benchmarks/results/kernels_h100.json [--png out.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = {
    "hedgehog_fused": "Hedgehog, fused kernels (ours)",
    "hedgehog_fused_bf16w": "Hedgehog, fused, bf16 projection weight (ours)",
    "hedgehog_torch": "Hedgehog, PyTorch path",
    "linear_features": "linear attention on features (ours)",
    "sdpa_flash": "softmax, SDPA (FlashAttention)",
    "fla_chunk": "fla chunk_linear_attn on features",
}


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    methods = [m for m in LABELS if any(r["method"] == m for r in rows)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, key, title in zip(axes, ("fwd_ms", "fwdbwd_ms", "peak_mib"),
                              ("forward", "forward + backward", "peak memory, forward + backward")):
        for m in methods:
            pts = sorted((r["N"], r[key]) for r in rows if r["method"] == m and r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=LABELS[m])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N (tokens per batch fixed)")
        ax.set_ylabel("MiB" if key == "peak_mib" else "ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    cfg = result.get("config", {})
    device = result.get("device", {}).get("name", "?")
    fig.suptitle(
        f"{device}, {cfg.get('dtype')}, {'bidirectional' if cfg.get('bidirectional') else 'causal'}, "
        f"{cfg.get('heads')} heads, D {cfg.get('head_dim')}, features {2 * (cfg.get('hidden') or 0)}, "
        f"{cfg.get('tokens')} tokens per batch ({result.get('date', '')[:10]})"
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path)
    p.add_argument("--png", type=Path, default=None)
    args = p.parse_args(argv)
    plot(json.loads(args.json.read_text()), args.png or args.json.with_suffix(".png"))


if __name__ == "__main__":
    main()
