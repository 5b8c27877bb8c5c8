"""The end-to-end speed script on a tiny random Llama (CPU): training and generation rows for every arm, and the
one-step profile that separates the attention's time per layer from the rest of the model."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_smoke(out: Path, *args: str) -> dict:
    """``experiments/efficiency.py --smoke --arms softmax,hedgehog *args`` writing into ``out``; its JSON."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "efficiency.py"), "--smoke", "--arms", "softmax,hedgehog",
         *args, "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "efficiency.json").read_text())


def test_efficiency_smoke_with_profile(tmp_path):
    result = run_smoke(tmp_path, "--profile-seq-len", "64")
    assert result["complete"] and set(result["train"]) == {"softmax", "hedgehog"}
    for arm in ("softmax", "hedgehog"):
        assert all(row["tokens_per_s"] > 0 for row in result["train"][arm])
        profile = result["profile"][arm]
        assert profile["layers"] == 2 and profile["seq_len"] == 64
        # the attention function's own time is found and is part of the step
        assert 0 < profile["attention_fwd_ms_per_layer"] * profile["layers"] < profile["step_ms"]
        assert profile["top_kernels"]


def test_generation_grid_over_prompt_lengths_and_batches(tmp_path):
    """One run measures every arm at every prompt length and batch (batch 1 always) with both decoding loops
    (transformers' generate and the captured step), each row saying which; the captured step's rows carry the
    time per decoded token."""
    result = run_smoke(tmp_path, "--prompt-len", "16,32")
    for arm in ("softmax", "hedgehog"):
        rows = result["generate"][arm]
        for decoder in ("generate", "graph"):
            mine = [r for r in rows if r["decoder"] == decoder]
            assert sorted((r["prompt_len"], r["batch"]) for r in mine) == [(16, 1), (16, 2), (32, 1), (32, 2)]
        assert all(r["tokens_per_s"] > 0 and r["new_tokens"] == 8 for r in rows)
        # a difference of two timings: its sign is noise-prone on a busy CPU, so only its presence is checked
        assert all(r["prefill_s"] > 0 and isinstance(r["step_ms"], float) for r in rows if r["decoder"] == "graph")
    assert (tmp_path / "figures" / "efficiency_generate.png").is_file()
