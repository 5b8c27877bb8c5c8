import json

import pytest

from hedgehog.data.text_mix import TextMixDataModule

WORDS = "apple river stone cloud amber violet meadow lantern copper harbor willow ember quartz falcon".split()


@pytest.fixture
def data_root(tmp_path):
    """A data root with a SAMSum training file of 40 distinct dialogues and a WikiText-style test file."""
    rows = []
    for i in range(40):
        words = [WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(30)]
        rows.append({"id": str(i), "dialogue": f"A: {' '.join(words)} {i}", "summary": f"summary number {i}"})
    (tmp_path / "samsum").mkdir()
    (tmp_path / "samsum" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "wiki.test.raw").write_text(" = Heading = \n" + " the test text is about something else entirely . \n" * 20)
    return tmp_path


def test_loaders_full_training_batches_ordered_evaluation(data_root, decoder_tokenizer):
    dm = TextMixDataModule(decoder_tokenizer, data_root, data_root / "cache", sources=["samsum_train"],
                           test_file=data_root / "wiki.test.raw", seq_len=16, batch_size=3, eval_batch_size=2,
                           val_fraction=0.1)
    assert dm.vocab_size == len(decoder_tokenizer)
    train = list(dm.train_dataloader())
    assert len(train) == len(dm.datasets["train"]) // 3 and len(dm.datasets["train"]) % 3 != 0
    assert all(b["input_ids"].shape == b["labels"].shape == (3, 16) for b in train), "the last partial batch is dropped"
    val = list(dm.val_dataloader())
    assert len(val[0]["input_ids"]) == 2
    assert val[0]["input_ids"][1].tolist() == dm.datasets["validation"][1]["input_ids"].tolist()  # in order
    test = next(iter(dm.test_dataloader()))
    assert "test text" in decoder_tokenizer.decode(test["input_ids"][0])
    assert dm.token_counts()["data/tokens/samsum_train"] > 0


def test_without_a_test_file_the_test_loader_says_how_to_get_one(data_root, decoder_tokenizer):
    dm = TextMixDataModule(decoder_tokenizer, data_root, data_root / "cache", sources=["samsum_train"], seq_len=16,
                           batch_size=3)
    with pytest.raises(ValueError, match="text mix has no 'test' split; set data.test_file to evaluate"):
        dm.test_dataloader()


def test_tokenizer_is_resolved_on_first_use(data_root):
    dm = TextMixDataModule(42, data_root, data_root / "cache", sources=["samsum_train"])  # built without it
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer"):
        dm.tokenizer
