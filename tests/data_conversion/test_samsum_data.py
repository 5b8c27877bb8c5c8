import json

import pytest
import torch

from hedgehog.data.samsum import SAMSumDataModule, read_samsum_jsonl


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


ROWS = [
    {"id": str(i), "dialogue": f"Ann: shall we meet at {i}?\r\nBob: yes, see you at {i}.", "summary": f"Ann and Bob meet at {i}."}
    for i in range(10)
]


@pytest.fixture
def samsum_dir(tmp_path):
    write_jsonl(tmp_path / "samsum" / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "samsum" / "test.jsonl", ROWS[:3])
    return tmp_path


def test_shipped_files(data_dir):
    train = read_samsum_jsonl(data_dir / "samsum" / "train.jsonl")
    test = read_samsum_jsonl(data_dir / "samsum" / "test.jsonl")
    assert (len(train), len(test)) == (1024, 1024)
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert all(r["dialogue"] and r["summary"] for r in train + test)
    assert all("\r" not in r["dialogue"] for r in train)


def test_labels_only_on_summary_tokens(samsum_dir, decoder_tokenizer):
    tok = decoder_tokenizer
    dm = SAMSumDataModule(samsum_dir, tok, max_length=64, max_new_tokens=16, batch_size=3, val_fraction=0.2)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "validation", "test")] == [8, 2, 3]
    batch = next(iter(dm.train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    for i in range(len(ids)):
        scored = labels[i] != -100
        n = int(mask[i].sum())
        # labels are the next input token wherever both are real; the last label is the EOS
        assert torch.equal(labels[i, : n - 1][scored[: n - 1]], ids[i, 1:n][scored[: n - 1]])
        assert labels[i, n - 1] == tok.eos_token_id and not scored[n:].any()
        summary_text = tok.decode(labels[i][scored], skip_special_tokens=True)
        row = next(r for r in ROWS if summary_text == tok.decode(tok(r["summary"], add_special_tokens=False)["input_ids"]))
        n_summary = len(tok(row["summary"], add_special_tokens=False)["input_ids"]) + 1
        assert int(scored.sum()) == n_summary
        # everything before the summary is the prompt: BOS first, the template's cue right before the summary
        first = int(scored.nonzero()[0])
        prompt = tok.decode(ids[i, : first + 1])
        assert ids[i, 0] == tok.bos_token_id and prompt.rstrip().endswith("summary :")


def test_eval_batches_are_left_padded_prompts(samsum_dir, decoder_tokenizer):
    dm = SAMSumDataModule(samsum_dir, decoder_tokenizer, max_length=64, max_new_tokens=16, batch_size=3)
    batch = next(iter(dm.test_dataloader()))
    assert batch["references"] == [r["summary"] for r in ROWS[:3]] and batch["ids"] == ["0", "1", "2"]
    assert batch["attention_mask"][:, -1].all()  # every prompt ends at the right edge
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        assert not batch["attention_mask"][i, : -n].any()
    text = decoder_tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text.startswith("summarize this dialog") and "ann and bob" not in text


def test_long_dialogues_are_cut_but_keep_frame_and_summary(tmp_path, decoder_tokenizer):
    long = [{"id": "x", "dialogue": "Ann: " + "blah " * 500, "summary": "Ann talks a lot."}]
    write_jsonl(tmp_path / "samsum" / "train.jsonl", long * 4)
    write_jsonl(tmp_path / "samsum" / "test.jsonl", long)
    dm = SAMSumDataModule(tmp_path, decoder_tokenizer, max_length=48, max_new_tokens=8, val_fraction=0.25)
    dm.setup()
    item = dm.splits["train"][0]
    assert len(item["input_ids"]) == 48
    assert decoder_tokenizer.decode([t for t in item["labels"] if t != -100], skip_special_tokens=True) == "ann talks a lot."
    prompt = dm.splits["test"][0]["input_ids"]
    assert len(prompt) == 48 - 8 and decoder_tokenizer.decode(prompt).endswith("summary :")


def test_missing_columns_and_files(tmp_path, decoder_tokenizer, monkeypatch):
    write_jsonl(tmp_path / "samsum" / "train.jsonl", [{"id": "1", "dialogue": "a: b"}])
    write_jsonl(tmp_path / "samsum" / "test.jsonl", ROWS[:1])
    with pytest.raises(ValueError, match=r"train.jsonl:1 lacks columns \['summary'\]"):
        SAMSumDataModule(tmp_path, decoder_tokenizer).setup()
    from hedgehog.data import samsum

    monkeypatch.setattr(samsum, "_load_hub", lambda names: (_ for _ in ()).throw(FileNotFoundError("offline")))
    with pytest.raises(FileNotFoundError, match="no .*empty.*samsum.*train.jsonl"):
        SAMSumDataModule(tmp_path / "empty", decoder_tokenizer).setup()


def test_bad_arguments(tmp_path, decoder_tokenizer):
    with pytest.raises(ValueError, match="dialogue"):
        SAMSumDataModule(tmp_path, decoder_tokenizer, prompt_template="Summarize: {text}")
    with pytest.raises(ValueError, match="max_new_tokens"):
        SAMSumDataModule(tmp_path, decoder_tokenizer, max_length=32, max_new_tokens=32)
