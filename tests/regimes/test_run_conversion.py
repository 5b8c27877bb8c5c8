"""Both conversion regimes end to end through run.py on tiny models, asserting on results.json."""

import json
from pathlib import Path

from regime_support import QUIET, run_py


def test_glue_finetuned_conversion(tiny_bert_dir, tmp_path):
    proc, results = run_py([
        "experiment=glue_minilm_hedgehog", f"model.name_or_path={tiny_bert_dir}", "data=glue/mrpc",
        "data.max_train_samples=32", "data.max_eval_samples=16", "data.max_length=48", "data.batch_size=8",
        "regime.finetune_steps=2", "regime.distill_steps=2", "regime.finetune_linear_steps=2",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=2", *QUIET,
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["status"] == "complete" and results["attention"] == "hedgehog"
    assert results["experiment"] == "glue_minilm_hedgehog" and results["data"] == "glue/mrpc"
    metrics = results["metrics"]
    for key in ("test/accuracy", "test/f1", "test/score", "teacher/test/accuracy", "teacher/test/f1",
                "teacher/test/score", "val/score"):
        assert isinstance(metrics[key], float), key
    assert metrics["test/score"] == 50 * (metrics["test/accuracy"] + metrics["test/f1"])
    stages = results["stages"]
    assert list(stages) == ["finetune", "distill", "finetune_linear"]
    assert all(stages[s]["global_step"] == 2 for s in stages)
    assert {"val/loss", "val/kl", "val/teacher_entropy", "val/student_entropy"} <= set(stages["distill"]["metrics"])
    assert "val/score" in stages["finetune"]["metrics"]


def test_samsum_pretrained_conversion(tiny_llama_dir, tmp_path):
    proc, results = run_py([
        "experiment=samsum_smollm2_hedgehog", f"model.name_or_path={tiny_llama_dir}",
        "data.max_train_samples=8", "data.max_eval_samples=4", "data.max_length=96", "data.max_new_tokens=6",
        "data.batch_size=4", "regime.distill_steps=2", "regime.finetune_steps=2",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1", *QUIET,
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["status"] == "complete" and results["attention"] == "hedgehog"
    assert {"test/rouge1", "test/rouge2", "test/rougeL", "test/rougeLsum"} <= set(results["metrics"])
    assert list(results["stages"]) == ["distill", "finetune"]
    assert results["stages"]["finetune"]["global_step"] == 2 and "val/ppl" in results["stages"]["finetune"]["metrics"]
    rows = (Path(results["run_dir"]) / "generations.jsonl").read_text().splitlines()
    assert len(rows) == 4 and {"prediction", "reference"} <= set(json.loads(rows[0]))


def test_wikitext_zero_shot_arm(tiny_llama_dir, tmp_path):
    proc, results = run_py([
        "experiment=wikitext_smollm2_zeroshot", f"model.name_or_path={tiny_llama_dir}",
        "data.seq_len=32", "data.max_train_blocks=8", "data.max_eval_blocks=4", "data.batch_size=4", *QUIET,
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["attention"] == "softmax"
    assert all(stage.get("skipped") for stage in results["stages"].values())
    assert results["metrics"]["test/ppl"] > 1.0 and "test/loss" in results["metrics"]


def test_wikitext_text_mix_hybrid_then_samsum_from_the_same_transfer(tiny_llama_dir, tmp_path):
    """The conversion recipe end to end: text_mix corpus (shipped text + the teacher's own samples), output-MSE
    attention transfer of the sliding-window hybrid, LoRA; then SAMSum reuses that transfer (distilled_from)."""
    common = [f"model.name_or_path={tiny_llama_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
              "trainer.val_check_interval=2", "trainer.limit_val_batches=1", *QUIET]
    proc, results = run_py([
        "experiment=wikitext_smollm2_hedgehog_window", "attention.options.window=4", "data.sources=[wikitext_valid]",
        "data.teacher.tokens=64", "data.teacher.batch_size=4", "data.teacher.max_new_tokens=16",
        "data.seq_len=32", "data.batch_size=4", "data.max_eval_blocks=4",
        "regime.distill_steps=2", "regime.finetune_steps=2", "hydra.run.dir=" + str(tmp_path / "wikitext"), *common,
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = results["metrics"]
    assert results["attention"] == "hedgehog_window" and metrics["test/ppl"] > 1.0
    assert metrics["data/tokens/wikitext_valid"] > 0 and metrics["data/tokens/teacher"] >= 64
    for stage in ("distill", "finetune"):
        assert metrics[f"throughput/{stage}/tokens_per_s"] > 0
        assert metrics[f"tokens/{stage}"] == 2 * 4 * 32  # steps x batch x seq_len
        assert results["stages"][stage]["metrics"]["val/tokens"] == 2 * 4 * 32
    shards = list((tmp_path / "cache" / "text_mix").glob("teacher-*/shard-*.pt"))
    assert shards, "the teacher's samples are cached in shards"

    proc, results = run_py([
        "experiment=samsum_smollm2_hedgehog_window", "attention.options.window=4",
        f"regime.distilled_from={tmp_path / 'wikitext'}", "data.max_train_samples=8", "data.max_eval_samples=4",
        "data.max_length=96", "data.max_new_tokens=6", "data.batch_size=4", "regime.finetune_steps=2",
        "hydra.run.dir=" + str(tmp_path / "zsamsum"), *common,
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["stages"]["distill"].get("skipped") and results["stages"]["finetune"]["global_step"] == 2
    assert "test/rouge1" in results["metrics"]
