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
