"""hedgehog.report: results.json files of a sweep -> markdown table + PNG."""

from __future__ import annotations

import json

from hedgehog.report import collect, main, markdown_table, pick_metrics


def fake_sweep(root):
    for i, (attention, acc) in enumerate([("softmax", 0.99), ("hedgehog", 0.97), ("taylor", 0.61)]):
        run = root / f"{i}__attention={attention}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({
            "status": "complete", "attention": attention, "experiment": "mqar", "wall_time_s": 10.0 + i,
            "metrics": {"test/acc": acc, "test/loss": 1 - acc, "val/acc": acc},
        }))
    (root / "not_a_run").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "results.json").write_text("{not json")


def test_table_has_one_row_per_run_with_its_metrics(tmp_path):
    fake_sweep(tmp_path)
    runs = collect(tmp_path)
    assert [r["attention"] for r in runs] == ["softmax", "hedgehog", "taylor"]
    metrics = pick_metrics(runs)
    assert metrics == ["test/acc", "test/loss"]
    table = markdown_table(runs, metrics, root=tmp_path)
    lines = table.strip().splitlines()
    assert lines[0] == "| attention | experiment | test/acc | test/loss | wall time (s) | run | code |"
    assert len(lines) == 2 + 3
    assert lines[3] == "| hedgehog | mqar | 0.97 | 0.03 | 11 | 1__attention=hedgehog | unknown |"  # no commit recorded


def test_cli_writes_markdown_and_png(tmp_path, capsys):
    fake_sweep(tmp_path)
    assert main([str(tmp_path), "--metrics", "test/acc", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| taylor | mqar | 0.61 |" in printed
    assert (tmp_path / "out" / "report.md").read_text().count("| mqar |") == 3
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_cli_on_a_folder_without_results(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
