"""Data identity: results record the files they were computed from (size, lines, sha256); a file that differs from
the data folder's checksums stops the run before training; a run folder's work is neither served nor resumed on
other data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from framework_helpers import run_py
from hedgehog.train import data_identity
from hedgehog.utils.errors import DataMismatchError

TINY_WIKITEXT = ["experiment=wikitext_gpt_softmax", "model=gpt_tiny", "model.d_model=16", "data.seq_len=32",
                 "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "regime.warmup_steps=1", "logger=csv",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 "trainer.num_sanity_val_steps=0"]
WIKITEXT_FILES = ("wiki.valid.tokens", "wiki.test.tokens")


def copy_wikitext(data_dir: Path, to: Path, with_checksums: bool) -> Path:
    """A data folder with WikiText's two files (and the shared folder's README.md and SHA256SUMS)."""
    (to / "wikitext").mkdir(parents=True)
    for name in WIKITEXT_FILES:
        shutil.copy(data_dir / "wikitext" / name, to / "wikitext" / name)
    if with_checksums:
        shutil.copy(data_dir / "README.md", to / "README.md")
        shutil.copy(data_dir / "SHA256SUMS", to / "SHA256SUMS")
    return to


def keep_first_half(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    return len(lines) // 2


def test_the_shared_data_folder_states_sizes_lines_and_hashes_that_its_files_match(data_dir):
    expected = data_identity.expected_identities(data_dir)
    assert len(expected) == 18 and expected["wikitext/wiki.valid.tokens"] == {
        "bytes": 1_121_681, "lines": 3_760,
        "sha256": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"}
    sums = dict(reversed(line.split()) for line in (data_dir / "SHA256SUMS").read_text().splitlines())
    assert {name: e["sha256"] for name, e in expected.items()} == {k.removeprefix("./"): v for k, v in sums.items()}
    identities = data_identity.identify([data_dir / name for name in expected], data_dir)
    assert data_identity.check_expected(identities, data_dir) == 18
    for found in identities:
        assert {k: found[k] for k in ("bytes", "lines")} == {k: expected[found["path"]][k] for k in ("bytes", "lines")}


def test_a_truncated_file_is_named_with_what_was_expected(data_dir, tmp_path):
    folder = copy_wikitext(data_dir, tmp_path / "data", with_checksums=True)
    kept = keep_first_half(folder / "wikitext" / "wiki.valid.tokens")
    identities = data_identity.identify([folder / "wikitext" / name for name in WIKITEXT_FILES], folder)
    with pytest.raises(DataMismatchError) as info:
        data_identity.check_expected(identities, folder)
    message = str(info.value)
    assert str(folder / "wikitext" / "wiki.valid.tokens") in message
    assert "3,760 lines, 1,121,681 bytes, sha256 f0737ed31fc1" in message and f"{kept:,} lines" in message
    assert "truncated or changed" in message and "SHA256SUMS" in message and "\n" not in message


def test_run_on_a_truncated_data_file_stops_before_training(data_dir, tmp_path):
    folder = copy_wikitext(data_dir, tmp_path / "data", with_checksums=True)
    keep_first_half(folder / "wikitext" / "wiki.valid.tokens")
    result = run_py(TINY_WIKITEXT + [f"paths.data_dir={folder}"], tmp_path / "logs")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr.strip()
    assert message.startswith(f"error: data file {folder / 'wikitext' / 'wiki.valid.tokens'} is not the expected file")
    assert not list((tmp_path / "logs").rglob("*.ckpt")) and not list((tmp_path / "logs").rglob("metrics.csv"))


def test_results_record_the_data_and_are_not_served_for_other_data(data_dir, tmp_path):
    folder = copy_wikitext(data_dir, tmp_path / "data", with_checksums=False)  # no checksums: nothing to check against
    command = TINY_WIKITEXT + [f"paths.data_dir={folder}"]
    first = run_py(command, tmp_path / "logs")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data_dir"] == str(folder)
    recorded = {item["path"]: item for item in results["data_files"]}
    assert set(recorded) == {"wikitext/wiki.valid.tokens", "wikitext/wiki.test.tokens"}
    assert recorded["wikitext/wiki.valid.tokens"]["lines"] == 3_760
    assert recorded["wikitext/wiki.valid.tokens"]["sha256"].startswith("f0737ed31fc1")

    original = (folder / "wikitext" / "wiki.valid.tokens").read_bytes()
    kept = keep_first_half(folder / "wikitext" / "wiki.valid.tokens")
    stale = run_py(command, tmp_path / "logs")
    assert stale.returncode == 2 and "Traceback" not in stale.stderr
    message = stale.stderr.strip()
    assert f"the run folder {run_dir} holds results computed on other data" in message
    assert "wikitext/wiki.valid.tokens was 3,760 lines" in message and f"it is now {kept:,} lines" in message
    assert "This run is complete already" not in stale.stdout

    (folder / "wikitext" / "wiki.valid.tokens").write_bytes(original)  # the same data again: served as before
    again = run_py(command, tmp_path / "logs")
    assert again.returncode == 0 and "This run is complete already" in again.stdout


def test_checkpoints_of_other_data_are_not_resumed(data_dir, tmp_path):
    folder = copy_wikitext(data_dir, tmp_path / "data", with_checksums=False)
    run_dir = tmp_path / "run"
    earlier = data_identity.identify([folder / "wikitext" / name for name in WIKITEXT_FILES], folder)
    earlier[0] = {**earlier[0], "sha256": "0" * 64, "lines": 10}
    data_identity.record(run_dir, earlier, folder)
    result = run_py(TINY_WIKITEXT + [f"paths.data_dir={folder}", f"hydra.run.dir={run_dir}"], tmp_path / "logs")
    assert result.returncode == 2 and "holds checkpoints trained on other data" in result.stderr
    assert "was 10 lines" in result.stderr and not (run_dir / "checkpoints").exists()


def test_each_data_module_lists_the_files_it_reads(data_dir, tmp_path):
    from hedgehog.data.glue import GLUEDataModule
    from hedgehog.data.mqar import MQARDataModule
    from hedgehog.data.samsum import SAMSumDataModule
    from hedgehog.data.wikitext import WikiTextDataModule

    wikitext = WikiTextDataModule(data_dir=str(data_dir / "wikitext"), train_split="valid", val_split="test")
    assert [p.name for p in data_identity.data_files(wikitext)] == ["wiki.test.tokens", "wiki.valid.tokens"]
    glue = GLUEDataModule(task="sst2", data_dir=str(data_dir), tokenizer="unused")
    assert [p.name for p in data_identity.data_files(glue)] == ["dev.tsv", "train.tsv"]
    qnli = GLUEDataModule(task="qnli", data_dir=str(data_dir), tokenizer="unused")  # ships dev.tsv only
    assert [p.relative_to(data_dir).as_posix() for p in data_identity.data_files(qnli)] == ["glue/QNLI/dev.tsv"]
    samsum = SAMSumDataModule(data_dir=str(data_dir), tokenizer="unused")
    assert [p.name for p in data_identity.data_files(samsum)] == ["test.jsonl", "train.jsonl"]
    assert data_identity.data_files(MQARDataModule(vocab_size=32, seq_len=16, num_kv_pairs=2)) == []

    # a DataModule without data_files(): the *_file / *_path values of its config that name files
    config = {"train_file": str(data_dir / "wikitext" / "wiki.valid.tokens"), "test_file": str(tmp_path / "absent"),
              "tokenizer": "smollm2"}
    assert [p.name for p in data_identity.data_files(object(), config)] == ["wiki.valid.tokens"]


def test_identity_and_comparison(tmp_path):
    path = tmp_path / "data" / "a.txt"
    path.parent.mkdir()
    path.write_bytes(b"one\ntwo\nthree")
    identity = data_identity.file_identity(path, tmp_path / "data")
    assert identity["path"] == "a.txt" and identity["bytes"] == 13 and identity["lines"] == 3
    assert data_identity.compare(None, [identity]) is None  # nothing recorded: nothing to compare
    assert data_identity.compare([identity], [dict(identity)]) is None
    assert "a.txt was 3 lines" in data_identity.compare([identity], [{**identity, "sha256": "f" * 64, "lines": 1}])
    assert data_identity.compare([identity], []) == "a.txt was read then and is not read now"
