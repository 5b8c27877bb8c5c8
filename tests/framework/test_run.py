"""``python run.py`` as a user runs it: one short run per regime, a multirun + report, 2-process DDP on CPU,
and the error paths (short message, exit status, no traceback)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from framework_helpers import REPO_ROOT, TINY_MQAR, run_py
from hedgehog.report import main as report_main
from hedgehog.utils.provenance import code_version
from hedgehog.train.validation import attention_choices

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "trainer.num_sanity_val_steps=0"]


def ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_mqar_run_writes_results_csv_and_offline_wandb(tmp_path):
    overrides = [o for o in TINY_MQAR if o != "logger=csv"] + ["logger=many", "attention=softmax"]
    result = run_py(overrides, tmp_path)
    ok(result)
    run_dir = next((tmp_path / "train" / "runs").iterdir())
    # deterministic folder: experiment plus the overrides (so the same command resumes the same run)
    assert run_dir.name.startswith("mqar__attention=softmax,data.batch_size=32,")
    assert f"Results: {run_dir / 'results.json'}" in result.stdout
    results = results_of(run_dir)
    assert results["status"] == "complete" and results["attention"] == "softmax"
    assert results["experiment"] == "mqar" and results["data"] == "mqar" and results["model"] == "gpt_tiny"
    assert results["attention_backend"] == os.environ.get("HEDGEHOG_ATTENTION_BACKEND", "auto")
    assert results["matmul_precision"] == "highest"  # torch's default unless matmul_precision= says otherwise
    assert results["stages"]["train"]["global_step"] == 6 and not results["resumed"]
    train = results["stages"]["train"]  # training throughput of the stage, validation time left out
    assert train["train_batches"] == 6 and train["train_tokens"] > 0 and train["train_tokens"] % 6 == 0
    assert 0 < train["train_seconds"] < results["wall_time_s"] and train["tokens_per_s"] > 0
    for key in ("test/acc", "test/loss", "test/ppl", "val/acc", "val/loss"):
        assert 0 <= results["metrics"][key] < float("inf"), key
    assert len(results["config_hash"]) == 12 and results["git"]["commit"]
    assert results["git"] == code_version()  # the checkout of the code that ran, and whether it was dirty
    assert results["data_files"] == [] and results["chance"]["acc"]  # MQAR reads no files; its chance levels
    assert results["device"]["world_size"] == 1 and results["wall_time_s"] > 0 and results["seed"] == 0
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / "csv" / "hparams.yaml").is_file()
    assert "attention" in (run_dir / "csv" / "hparams.yaml").read_text()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and any(offline[0].rglob("*.wandb")), "W&B should write an offline run to sync later"
    assert (run_dir / "checkpoints" / "train" / "last.ckpt").is_file()


@pytest.mark.slow
def test_multirun_over_attention_types_then_report(tmp_path, capsys):
    """Train-from-scratch on WikiText (offline: valid split, tested on test) for two attention types."""
    overrides = ["-m", "experiment=wikitext_gpt", "attention=softmax,hedgehog", "model=gpt_tiny", "data.seq_len=32",
                 "data.batch_size=8", "trainer.max_steps=4", "trainer.val_check_interval=2",
                 "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "regime.warmup_steps=1", *QUIET,
                 "logger=many"]
    ok(run_py(overrides, tmp_path))
    sweeps = list((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1 and sweeps[0].name.startswith("wikitext_gpt__attention=softmax,hedgehog,")
    runs = sorted(p.parent for p in sweeps[0].rglob("results.json"))
    assert [results_of(r)["attention"] for r in runs] == ["softmax", "hedgehog"]
    assert all(results_of(r)["metrics"]["test/ppl"] > 1 for r in runs)
    wandb_runs = [list((r / "wandb").glob("offline-run-*")) for r in runs]
    assert all(len(w) == 1 for w in wandb_runs), "each job of a multirun has its own W&B run"

    assert report_main([str(sweeps[0])]) == 0
    table = capsys.readouterr().out
    assert table.count("| wikitext_gpt |") == 2 and "test/ppl" in table
    assert (sweeps[0] / "report.png").stat().st_size > 1000


@pytest.mark.slow
def test_finetuned_conversion_run_trains_three_stages(tmp_path):
    overrides = ["experiment=glue_minilm_hedgehog", "data.max_train_samples=32", "data.max_eval_samples=32",
                 "data.batch_size=8", "data.max_length=32", "regime.finetune_steps=2", "regime.distill_steps=2",
                 "regime.finetune_linear_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
                 "trainer.limit_test_batches=2", *QUIET]
    ok(run_py(overrides, tmp_path))
    results = results_of(next((tmp_path / "train" / "runs").iterdir()))
    assert list(results["stages"]) == ["finetune", "distill", "finetune_linear"]
    assert all(stage["global_step"] == 2 for stage in results["stages"].values())
    # real (unpadded) tokens of 2 steps of 8 sentences of at most 32 tokens, each stage timed on its own
    assert all(0 < stage["train_tokens"] <= 2 * 8 * 32 and stage["tokens_per_s"] > 0 for stage in results["stages"].values())
    assert 0 <= results["metrics"]["test/accuracy"] <= 1 and "teacher/test/accuracy" in results["metrics"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, data_dir) -> Path:
    """A 2-layer Llama (GQA: 4 query / 2 key-value heads, RoPE) with a word-level tokenizer, saved as a local
    Hugging Face folder: the pretrained-conversion regime end to end in seconds instead of minutes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_llama")
    words = Counter((data_dir / "wikitext" / "wiki.valid.tokens").read_text().split())
    tokens = dict.fromkeys(["<unk>", "<s>", "</s>"] + [w for w, _ in words.most_common(500)])
    vocab = {w: i for i, w in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="</s>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_pretrained_conversion_run_distils_then_finetunes(tmp_path, tiny_llama):
    overrides = ["experiment=wikitext_smollm2_hedgehog", f"model.name_or_path={tiny_llama}", "data.seq_len=32",
                 "data.teacher.tokens=0", "data.sources=[wikitext_valid]", f"paths.cache_dir={tmp_path / 'cache'}",
                 "data.batch_size=4", "data.eval_batch_size=4", "data.max_train_blocks=16", "data.max_eval_blocks=4",
                 "regime.distill_steps=2", "regime.finetune_steps=2", "trainer.val_check_interval=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *QUIET]
    ok(run_py(overrides, tmp_path))
    results = results_of(next((tmp_path / "train" / "runs").iterdir()))
    assert list(results["stages"]) == ["distill", "finetune"]
    assert all(stage["global_step"] == 2 for stage in results["stages"].values())
    # tokens per stage: 2 steps of 4 x 32 tokens, each stage timed on its own
    assert all(stage["train_tokens"] == 2 * 4 * 32 and stage["tokens_per_s"] > 0 for stage in results["stages"].values())
    assert results["metrics"]["test/ppl"] > 1


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    overrides = TINY_MQAR + ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=4",
                             "trainer.val_check_interval=2"]
    result = run_py(overrides, tmp_path)
    ok(result)
    assert result.stdout.count("Results: ") == 1, "only the main process reports"
    run_dir = next((tmp_path / "train" / "runs").iterdir())
    results = results_of(run_dir)
    assert results["device"]["world_size"] == 2 and results["stages"]["train"]["global_step"] == 4
    assert 0 <= results["metrics"]["test/acc"] <= 1
    assert (run_dir / "checkpoints" / "train" / "final.ckpt").is_file()


def test_cli_bad_attention_name_exits_2_with_one_paragraph(tmp_path):
    result = run_py(["attention.name=hedgehogg", *QUIET], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: attention.name: unknown attention type 'hedgehogg'" in result.stderr
    assert all(name in result.stderr for name in attention_choices())
    assert not (tmp_path / "train").exists() or not list((tmp_path / "train").rglob("*.ckpt"))


def test_cli_unknown_experiment_lists_the_choices_compactly(tmp_path):
    result = run_py(["experiment=mqar_hedgehogg"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown experiment 'mqar_hedgehogg' (did you mean 'mqar_hedgehog'?)" in result.stderr
    # every experiment file is covered by the compact list: a name, or a family <name>_<attention>
    message = result.stderr
    for path in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"):
        head, _, tail = path.stem.rpartition("_")
        assert path.stem in message or (tail in attention_choices() and f"{head}_<attention>" in message), path.stem
    assert len(message.strip().splitlines()) == 1, "one paragraph"


def test_matmul_precision_is_applied_and_recorded(tmp_path):
    ok(run_py([*TINY_MQAR, "attention=softmax", "matmul_precision=high"], tmp_path))
    results = results_of(next((tmp_path / "train" / "runs").iterdir()))
    assert results["matmul_precision"] == "high"
