"""The first command, ``python run.py``, shows the method learning: Hedgehog attention trains a small language model
whose test perplexity the run puts beside what a model scores without using context (computed from the data)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from framework_helpers import compose_config, run_py
from hedgehog.data.mqar import MQARDataModule
from hedgehog.data.wikitext import WikiTextDataModule
from hedgehog.train.pipeline import context_lines


def test_the_default_job_is_the_quickstart_with_hedgehog_on_one_cpu_thread(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.attention.name == "hedgehog" and cfg.model.attention.name == "hedgehog"
    assert cfg.data._target_.endswith("WikiTextDataModule") and cfg.model._target_.endswith("GPT")
    assert cfg.trainer.accelerator == "cpu" and cfg.cpu_threads == 1
    assert OmegaConf.select(cfg, "logger.wandb.offline") is True


def test_mqar_chance_levels_follow_the_task_parameters():
    levels = MQARDataModule(vocab_size=64, seq_len=32, num_kv_pairs=4).chance_levels()["acc"]
    assert sorted(levels.values()) == [1 / 32, 1 / 4]
    levels = MQARDataModule(vocab_size=101, seq_len=32, num_kv_pairs=5).chance_levels()["acc"]
    assert sorted(levels.values()) == [1 / 51, 1 / 5]


def test_wikitext_chance_levels_are_uniform_and_unigram_perplexity(tmp_path):
    folder = tmp_path / "wikitext"
    folder.mkdir()
    (folder / "wiki.train.tokens").write_text("a a a b\nb c a a\n")
    (folder / "wiki.test.tokens").write_text("a b c d a a b a\n")
    data = WikiTextDataModule(data_dir=str(folder), seq_len=4, batch_size=1, val_split="test")
    data.setup("fit")
    data.setup("test")
    levels = data.chance_levels()["ppl"]
    vocab = data.vocab_size  # <unk>, <eos>, a, b, c
    assert vocab == 5 and levels["a uniform guess over the 5-token vocabulary"] == 5.0
    train = data.datasets["train"].tokens
    counts = torch.bincount(train, minlength=vocab).double() + 1
    test = data.datasets["test"].tokens
    scored = test[1: len(data.datasets["test"]) * 4 + 1]
    expected = math.exp(-float((counts[scored] / counts.sum()).log().mean()))
    unigram = next(v for k, v in levels.items() if "unigram" in k)
    assert unigram == pytest.approx(expected) and 1 < unigram < vocab


def test_context_line_compares_with_the_best_score_without_learning():
    lm = {"metrics": {"test/ppl": 280.0}, "chance": {"ppl": {"uniform": 13777.0, "unigram": 562.0}}}
    assert context_lines(lm) == ["In context: test/ppl = 280, 2.0x lower than the best a model scores without "
                                 "learning the task: 13,777 for uniform, 562 for unigram."]
    recall = {"metrics": {"test/acc": 0.75}, "chance": {"acc": {"any value": 1 / 64, "one of 4 in the sequence": 0.25}}}
    assert context_lines(recall) == ["In context: test/acc = 0.75, 3.0x higher than the best a model scores without "
                                     "learning the task: 0.0156 for any value, 0.25 for one of 4 in the sequence."]
    assert context_lines({"metrics": {"test/ppl": 3.0}, "chance": {}}) == []


@pytest.mark.slow
def test_the_default_job_learns_to_use_context(tmp_path):
    """``python run.py`` itself, shortened to 300 steps: already then the test perplexity is far below that of the
    unigram model, and the run prints the line that says so."""
    result = run_py(["trainer.max_steps=300", "trainer.enable_progress_bar=false"], tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "train" / "runs").iterdir())
    assert run_dir.name.startswith("quickstart_hedgehog")
    results = json.loads((run_dir / "results.json").read_text())
    ppl = results["metrics"]["test/ppl"]
    unigram = next(v for k, v in results["chance"]["ppl"].items() if "unigram" in k)
    uniform = next(v for k, v in results["chance"]["ppl"].items() if "uniform" in k)
    assert ppl < 0.9 * unigram < uniform, (ppl, unigram)
    line = next(line for line in result.stdout.splitlines() if line.startswith("In context: test/ppl = "))
    factor = float(re.search(r"(\d+\.\d)x lower", line).group(1))
    assert factor == pytest.approx(unigram / ppl, abs=0.06)
