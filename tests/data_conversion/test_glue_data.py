import logging

import pytest
import torch

from hedgehog.data import glue as glue_module
from hedgehog.data.glue import GLUEDataModule, glue_task, read_glue_tsv

# (train rows, dev rows) of the files in the shared data folder. MRPC train holds 3,667 pairs there (the
# official release has 3,668); everything else matches the official GLUE counts.
SHIPPED = {
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3667, 408),
    "stsb": (5749, 1500),
    "rte": (2490, 277),
    "wnli": (635, 71),
}


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_files_parse_with_the_right_counts_and_label_types(data_dir, task):
    spec = glue_task(task)
    folder = data_dir / "glue" / spec.folder
    train, dev = read_glue_tsv(folder / "train.tsv", spec), read_glue_tsv(folder / "dev.tsv", spec)
    assert (len(train), len(dev)) == SHIPPED[task]
    for texts, label in train + dev:
        assert len(texts) == len(spec.text_columns) and all(isinstance(t, str) and t for t in texts)
        if spec.is_regression:
            assert isinstance(label, float) and 0.0 <= label <= 5.0
        else:
            assert isinstance(label, int) and 0 <= label < spec.num_labels
    labels = {label for _, label in train}
    assert len(labels) > (10 if spec.is_regression else 1)


def test_qnli_dev_parses_string_labels(data_dir):
    dev = read_glue_tsv(data_dir / "glue" / "QNLI" / "dev.tsv", "qnli")
    assert len(dev) == 5463
    assert dev[0] == (("What came into force after the new constitution was herald?",
                       "As of that day, the new constitution heralding the Second Republic came into force."), 0)
    assert {label for _, label in dev} == {0, 1}


def test_quirks_headerless_cola_bom_mrpc_string_rte(data_dir):
    cola = read_glue_tsv(data_dir / "glue" / "CoLA" / "train.tsv", "CoLA")
    assert cola[0] == (("Our friends won't buy this analysis, let alone the next one we propose.",), 1)
    mrpc = read_glue_tsv(data_dir / "glue" / "MRPC" / "dev.tsv", "MRPC")  # starts with a BOM
    assert mrpc[0][1] == 1 and mrpc[0][0][0].startswith("He said the foodservice pie business")
    rte = read_glue_tsv(data_dir / "glue" / "RTE" / "train.tsv", "rte")
    assert rte[0][1] == 1  # not_entailment
    assert rte[1][1] == 0  # entailment


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("sst_2", "sst2"), ("STS-B", "stsb"), ("MNLI", "mnli"), ("CoLA", "cola")])
def test_task_aliases(alias, name):
    assert glue_task(alias).name == name


def test_properties_before_setup(bert_tokenizer, tmp_path):
    dm = GLUEDataModule("STS-B", tmp_path, bert_tokenizer)
    assert (dm.num_labels, dm.metric_names, dm.is_regression) == (1, ("pearson", "spearmanr"), True)
    dm = GLUEDataModule("mnli", tmp_path, bert_tokenizer)
    assert (dm.num_labels, dm.metric_names) == (3, ("accuracy",))
    assert GLUEDataModule("mrpc", tmp_path, bert_tokenizer).metric_names == ("accuracy", "f1")


def test_splits_are_seeded_disjoint_and_test_is_dev(data_dir, bert_tokenizer):
    dm = GLUEDataModule("rte", data_dir, bert_tokenizer, val_fraction=0.1, seed=3)
    ex = dm.load_examples()
    assert dm.source == "local"
    assert (len(ex["train"]), len(ex["validation"]), len(ex["test"])) == (2241, 249, 277)
    assert ex["test"] == read_glue_tsv(data_dir / "glue" / "RTE" / "dev.tsv", "rte")
    train_texts = {t for t, _ in ex["train"]}
    assert not train_texts & {t for t, _ in ex["validation"]}
    again = GLUEDataModule("rte", data_dir, bert_tokenizer, val_fraction=0.1, seed=3).load_examples()
    other = GLUEDataModule("rte", data_dir, bert_tokenizer, val_fraction=0.1, seed=4).load_examples()
    assert again["validation"] == ex["validation"] and other["validation"] != ex["validation"]


def test_qnli_splits_dev_offline_and_warns(data_dir, bert_tokenizer, caplog):
    dm = GLUEDataModule("qnli", data_dir, bert_tokenizer, val_fraction=0.1, dev_test_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="hedgehog.data.glue"):
        ex = dm.load_examples()
    assert dm.source == "local-dev-split"
    assert "not comparable with published dev scores" in caplog.text
    sizes = [len(ex[k]) for k in ("train", "validation", "test")]
    assert sum(sizes) == 5463 and sizes[2] == round(0.2 * 5463)
    test_texts = {t for t, _ in ex["test"]}
    assert not test_texts & {t for t, _ in ex["train"] + ex["validation"]}


def test_batches_classification_and_regression(data_dir, bert_tokenizer):
    dm = GLUEDataModule("mrpc", data_dir, bert_tokenizer, max_length=32, batch_size=4,
                        max_train_samples=12, max_eval_samples=8)
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "validation", "test")] == [12, 8, 8]
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 32
    assert batch["labels"].dtype == torch.long
    # padding: pad id where the mask is 0; both segments present (token type 1 somewhere)
    pad = bert_tokenizer.pad_token_id
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == pad)
    assert batch["token_type_ids"].max() == 1
    first = dm.splits["test"][0]
    assert bert_tokenizer.decode(first["input_ids"], skip_special_tokens=True).startswith("he said the foodservice")

    dm = GLUEDataModule("stsb", data_dir, bert_tokenizer, batch_size=5, max_train_samples=5, max_eval_samples=5)
    batch = next(iter(dm.test_dataloader()))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([5.0, 4.75, 5.0, 2.4, 2.75])


def test_unknown_task_lists_the_eight(tmp_path, bert_tokenizer):
    with pytest.raises(ValueError) as err:
        GLUEDataModule("sts", tmp_path, bert_tokenizer)
    msg = str(err.value)
    assert "unknown GLUE task 'sts'" in msg
    for name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"):
        assert name in msg


def test_missing_columns_name_the_path_and_columns(tmp_path):
    folder = tmp_path / "glue" / "RTE"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ValueError) as err:
        read_glue_tsv(folder / "train.tsv", "rte")
    assert str(folder / "train.tsv") in str(err.value) and "['sentence1', 'sentence2']" in str(err.value)


def test_bad_label_names_the_line(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match=r"dev.tsv:3: label 'maybe'"):
        read_glue_tsv(path, "rte")


def test_missing_files_fall_back_to_the_hub_then_fail_clearly(tmp_path, bert_tokenizer, monkeypatch):
    calls = []

    def offline(spec, hub_dataset):
        calls.append((spec.name, hub_dataset))
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(glue_module, "_load_hub", offline)
    dm = GLUEDataModule("sst2", tmp_path, bert_tokenizer)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    assert calls == [("sst2", "nyu-mll/glue")]
    assert str(tmp_path / "glue" / "SST-2" / "train.tsv") in str(err.value) and "hub unreachable" in str(err.value)


def test_hub_fallback_builds_the_same_splits(tmp_path, bert_tokenizer, monkeypatch):
    train = [(("a good film",), 1), (("a bad film",), 0)] * 10
    dev = [(("fine",), 1), (("awful",), 0)]
    monkeypatch.setattr(glue_module, "_load_hub", lambda spec, hub: (train, dev))
    dm = GLUEDataModule("sst2", tmp_path, bert_tokenizer, val_fraction=0.25)
    ex = dm.load_examples()
    assert dm.source == "hub" and ex["test"] == dev
    assert (len(ex["train"]), len(ex["validation"])) == (15, 5)


def test_train_without_dev_is_an_error(tmp_path, bert_tokenizer):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\nok\t1\n")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        GLUEDataModule("sst2", tmp_path, bert_tokenizer).setup()
