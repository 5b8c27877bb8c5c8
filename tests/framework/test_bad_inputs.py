"""Every bad input of ``python run.py`` gets one voice: exit status 2, one short paragraph naming the problem and
the fix, no traceback, and nothing started (no W&B run, no checkpoint). The checks run before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework_helpers import REPO_ROOT, run_py

# (command-line arguments, fragments the message must contain). "{tmp}" is the test's temporary folder.
BAD_INPUTS = [
    (["experiment=nope"], ["unknown experiment 'nope'", "mqar_<attention>", "glue_minilm_<attention>",
                           "where <attention> is one of softmax, hedgehog", "experiment=<name>"]),
    (["experiment=mqar_hedgehogg"], ["did you mean 'mqar_hedgehog'?"]),
    (["attention=hedgehogg"], ["unknown attention 'hedgehogg'", "did you mean 'hedgehog'?", "performer, softmax"]),
    (["data=wikitext"], ["unknown data 'wikitext'", "wikitext2", "glue/<name> (cola, mnli"]),
    (["data=glue/sst"], ["unknown data 'glue/sst'", "sst2"]),
    (["model=gpt_huge"], ["unknown model 'gpt_huge'", "gpt_tiny", "minilm"]),
    (["trainer=tpu"], ["unknown trainer 'tpu'", "cpu", "ddp", "fsdp"]),
    (["logger=tensorboard"], ["unknown logger 'tensorboard'", "csv", "wandb"]),
    (["hparams_search=nope"], ["unknown hparams_search 'nope'", "mqar_attention_lr"]),
    (["hydra/launcher=basik"], ["unknown hydra/launcher 'basik' (did you mean 'basic'?)"]),
    (["foo.bar=1"], ["unknown key 'foo.bar'", "the config has no key 'foo'", "trainer", "+foo.bar=<value>"]),
    (["model.d_modle=32"], ["unknown key 'model.d_modle'", "did you mean 'd_model'?"]),
    (["+model.d_modle=32"], ["model.d_modle", "GPT takes no argument 'd_modle'", "did you mean 'd_model'?"]),
    (["+modle.d_model=3"], ["unknown top-level key 'modle'", "did you mean 'model'?"]),
    (["trainer.max_steps=abc"], ["trainer.max_steps: expected int", "'abc'"]),
    (["trainer.max_steps=-5"], ["trainer.max_steps: expected a value >= 0 (or -1", "-5"]),
    (["data.batch_size=-1"], ["data.batch_size: expected a value >= 0", "-1"]),
    (["experiment=mqar", "data.num_train=-100"], ["data.num_train: expected a value >= 0"]),
    (["regime.warmup_steps=-3"], ["regime.warmup_steps: expected a value >= 0"]),
    (["data.batch_size=1.5"], ["data.batch_size: expected int", "1.5"]),
    (["regime.lr=fast"], ["regime.lr: expected float", "'fast'"]),
    (["model.tie_embeddings=maybe"], ["model.tie_embeddings: expected bool"]),
    (["trainer.precision=bf17"], ["trainer.precision", "bf16-mixed"]),
    (["seed=one"], ["seed: expected an int"]),
    (["attention.name=hedgehogg"], ["attention.name: unknown attention type 'hedgehogg'", "t2r"]),
    (["+attention.options.feature_dimm=8"], ["unknown option 'feature_dimm'", "did you mean 'feature_dim'?"]),
    (["attention.options.bias=sometimes"], ["attention.options.bias: expected bool"]),
    (["attention_backend=cuda"], ["unknown attention backend 'cuda'", "auto, torch, triton"]),
    (["matmul_precision=tf32"], ["matmul_precision", "highest, high, medium", "'tf32'"]),
    (["experiment=mqar", "data.num_kv_pairs=???"], ["data.num_kv_pairs must be set"]),
    (["trainer.max_steps=["], ["cannot read the override 'trainer.max_steps=['", "key=value"]),
    (["callbacks.model_checkpoint.every_n_train_steps=-2"],
     ["callbacks.model_checkpoint.every_n_train_steps: expected a value >= 0"]),
    (["paths.log_dir={tmp}/a_file/logs"], ["cannot write", "a_file", "paths.log_dir=<folder>"]),
    (["experiment=wikitext_gpt_softmax", "paths.data_dir={tmp}/no_data"],
     ["data not found", "no_data/wikitext", "paths.data_dir=", "HEDGEHOG_DATA_DIR"]),
    (["experiment=glue_bert_hedgehog"],
     ["pretrained model 'bert-base-uncased' (model.name_or_path)", "the Hugging Face hub is unreachable",
      "model.name_or_path=<folder", "experiment=glue_minilm_hedgehog"]),
    (["experiment=wikitext_gpt2_hedgehog"], ["'gpt2'", "hub is unreachable", "experiment=wikitext_smollm2_hedgehog"]),
]


def one_paragraph(stderr: str) -> str:
    """The error paragraph; fails if stderr holds anything else (a traceback, a second message)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    text = stderr.strip()
    assert text.startswith("error: "), stderr[-3000:]
    assert "\n" not in text and len(text) < 1200, f"not one short paragraph: {text!r}"
    return text


@pytest.mark.parametrize("arguments, fragments", BAD_INPUTS, ids=[" ".join(args) for args, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_paragraph(arguments, fragments, tmp_path):
    (tmp_path / "a_file").write_text("a file where the log folder would be")
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    log_dir = tmp_path / "logs"
    result = run_py(arguments, log_dir, timeout=120, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    message = one_paragraph(result.stderr)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    started = [p for p in log_dir.rglob("*") if p.name == "wandb" or p.suffix == ".ckpt" or p.name == "csv"]
    assert not started, f"work was started before the error: {started}"


def test_config_checks_run_before_torch_wandb_or_lightning(tmp_path):
    """``python -X importtime`` lists every module a process imports: a bad value, a missing model and an unknown
    experiment are reported without importing torch, Lightning or W&B."""
    env = dict(os.environ, HEDGEHOG_LOG_DIR=str(tmp_path), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])))
    for arguments in (["trainer.max_steps=-5"], ["experiment=glue_bert_hedgehog"], ["experiment=nope"],
                      ["+attention.options.feature_dimm=8"]):
        result = subprocess.run([sys.executable, "-X", "importtime", str(REPO_ROOT / "run.py"), *arguments],
                                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-3000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
        assert imported, "no import timing lines: -X importtime did not run"
        assert "hedgehog.train.validation" in imported or arguments == ["experiment=nope"]
        for heavy in ("torch", "lightning", "wandb", "transformers"):
            assert heavy not in imported, f"{arguments}: {heavy} was imported before the error"


def test_a_good_command_still_runs_after_the_checks(tmp_path, tiny_mqar):
    """The checks do not stop a valid command: the tiny MQAR job trains and writes its results."""
    result = run_py(tiny_mqar, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Results: " in result.stdout
    assert list(Path(tmp_path).rglob("results.json"))


def test_readme_states_how_many_bad_inputs_are_checked():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"`tests/framework/test_bad_inputs.py` runs {len(BAD_INPUTS)} such commands" in " ".join(readme.split())


def test_a_hub_model_that_cannot_be_loaded_is_named_at_build_time_too(monkeypatch):
    """Behind the check before torch (say the hub answered it, then failed): loading raises an error that the
    pipeline reports as one paragraph, naming the model and the offline ways forward."""
    from hedgehog.models.pretrained import PretrainedNotAvailable, load_tokenizer
    from hedgehog.utils.errors import ModelNotFoundError
    from hedgehog.train.pipeline import build_errors

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        with build_errors("data"):
            load_tokenizer("nobody-here/no-such-model")
    message = str(info.value)
    assert isinstance(info.value.__context__, PretrainedNotAvailable)
    assert "'nobody-here/no-such-model' is not on this machine" in message and "minilm" in message
    assert "\n" not in message
