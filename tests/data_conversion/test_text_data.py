import pytest
import torch

from hedgehog.data.text import TextLMDataModule, wikitext_detokenize


def test_detokenize():
    raw = " = Robert Boulter = \n The 1 @,@ 000 @-@ year old ship , built in 1 @.@ 5 years ( roughly ) , sailed . \n"
    assert wikitext_detokenize(raw) == " = Robert Boulter =\nThe 1,000-year old ship, built in 1.5 years (roughly), sailed.\n"


def test_blocks_from_wikitext(data_dir, bert_tokenizer):
    wiki = data_dir / "wikitext"
    dm = TextLMDataModule(bert_tokenizer, wiki / "wiki.valid.tokens", wiki / "wiki.test.raw", seq_len=64, batch_size=4, max_eval_blocks=6, val_fraction=0.05)
    assert dm.vocab_size == len(bert_tokenizer)
    dm.setup()
    train, val, test = (dm.datasets[k] for k in ("train", "validation", "test"))
    assert len(val) == len(test) == 6 and len(train) > 1000
    batch = next(iter(dm.test_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 64)
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    # test text is the raw test split, detokenised
    text = bert_tokenizer.decode(test[0]["input_ids"])
    assert "robert boulter" in text and "@" not in text
    # validation is the tail of the training text, not the test split
    assert bert_tokenizer.decode(val[0]["input_ids"]) != text


def test_missing_file_is_named(tmp_path, bert_tokenizer):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "wiki.valid.tokens")):
        TextLMDataModule(bert_tokenizer, tmp_path / "wiki.valid.tokens", tmp_path / "wiki.test.raw")
    with pytest.raises(ValueError, match="both"):
        TextLMDataModule(bert_tokenizer, tmp_path / "wiki.valid.tokens", None)
