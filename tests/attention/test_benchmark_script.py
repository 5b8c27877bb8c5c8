import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention.py"


def test_benchmark_runs_every_type_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("attention_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    result = bench.main(["--device", "cpu", "--seq-lens", "16", "40", "--heads", "2", "--kv-heads", "1",
                         "--head-dim", "8", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"]))
    assert {r["type"] for r in saved["results"]} == set(bench.ATTENTION_NAMES)
    assert all(r["status"] == "ok" and r["fwd_ms"] > 0 and r["fwd_bwd_peak_mb"] > 0 for r in saved["results"])
    assert saved["device_type"] == "cpu" and saved["torch"] and saved["date"]
    assert "| hedgehog | 16 | 40 |" in capsys.readouterr().out


def test_layer_path_benchmark_times_each_way_and_writes_json(tmp_path, capsys):
    """The layer's call built up step by step (on a CPU: dispatch, the layer under autocast, the projected call)."""
    spec = importlib.util.spec_from_file_location("layer_path", SCRIPT.parent / "layer_path.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "layer_path.json"
    assert bench.main(["--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--seq-len", "16", "--tokens", "32",
                       "--repeats", "1", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [r["way"] for r in saved["rows"]] == ["attend", "layer", "layer_projected"]
    assert all(r["ms"] > 0 and r["batch"] == 2 and r["seq_len"] == 16 for r in saved["rows"])
    assert "layer_projected" in capsys.readouterr().out
