"""Save the softmax teacher finetuned by a ``glue_minilm_softmax`` run as a Hugging Face folder.

The finetuned-conversion regime finetunes the softmax model in its ``finetune`` stage and keeps the weights in
``<run dir>/checkpoints/finetune/final.ckpt`` (a Lightning checkpoint). The linear arms of the experiment start
from that same teacher through ``regime.teacher_checkpoint=<folder>``, which takes a Hugging Face folder: this
script writes one (config.json with the task's ``num_labels``, fp32 weights, the tokenizer)::

    python experiments/export_teacher.py <run dir> <out folder> --model-path $MINILM_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def export(run_dir: Path, out: Path, model_path: str, stage: str = "finetune") -> Path:
    from hedgehog.models.pretrained import load_pretrained, load_tokenizer

    ckpt = run_dir / "checkpoints" / stage / "final.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"export_teacher: {ckpt} not found; did the softmax run's {stage!r} stage finish?")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    head = weights.get("classifier.weight")
    if head is None:
        raise SystemExit(f"export_teacher: {ckpt} holds no classifier.weight; is it a sequence-classification run?")
    model = load_pretrained(model_path, task="sequence_classification", num_labels=int(head.shape[0]), dtype="float32")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SystemExit(f"export_teacher: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    load_tokenizer(model_path).save_pretrained(out)
    print(f"export_teacher: {ckpt} -> {out} (num_labels={int(head.shape[0])})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model-path", default="minilm", help="the base model the run started from (folder or alias)")
    ap.add_argument("--stage", default="finetune")
    args = ap.parse_args(argv)
    export(args.run_dir, args.out, args.model_path, args.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
