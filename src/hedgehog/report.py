"""Turn the ``results.json`` files of a sweep into a markdown table and a plot.

    python -m hedgehog.report logs/train/multiruns/<sweep folder> [--metrics test/acc test/ppl] [--out DIR]

Every ``results.json`` under the folder becomes one row (attention, experiment, the chosen metrics, wall
time, run folder, and ``code``: empty when the run's code was a commit on main, else what it was, e.g.
``uncommitted changes (1a2b3c4d)`` or ``not on main (5e6f7a8b)``; ``hedgehog.utils.provenance``). Writes ``report.md`` and ``report.png`` (one bar chart per metric, one bar per run) into
``--out`` (default: the folder itself) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from hedgehog.utils.provenance import code_label, code_version
from hedgehog.utils.results import RESULTS_FILE

# Shown first when present, in this order; then every other test/ metric.
PREFERRED_METRICS = ("test/acc", "test/ppl", "test/loss", "test/score", "test/rouge1", "test/rouge2", "test/rougeL")


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every readable ``results.json`` under ``folder`` (sorted by path), each with ``run_dir`` set to its folder."""
    runs = []
    for path in sorted(Path(folder).rglob(RESULTS_FILE)):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"skipping {path}: {error}", file=sys.stderr)
            continue
        if isinstance(result, dict):
            result["run_dir"] = str(path.parent)
            runs.append(result)
    return runs


def pick_metrics(runs: list[dict[str, Any]], wanted: list[str] | None = None) -> list[str]:
    """``wanted`` if given, else the preferred test metrics present in any run, then the other test metrics."""
    if wanted:
        return list(wanted)
    present = {k for run in runs for k in run.get("metrics", {})}
    chosen = [m for m in PREFERRED_METRICS if m in present]
    chosen += sorted(m for m in present if m.startswith("test/") and m not in chosen)
    return chosen or sorted(present)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def markdown_table(runs: list[dict[str, Any]], metrics: list[str], root: str | Path | None = None,
                   repository: str | Path | None = None) -> str:
    """One row per run: attention, experiment, metrics, wall time, run folder (relative to ``root``), and where
    its code was not a commit on main of ``repository`` (default: the checkout of the imported package), which."""
    if repository is None:
        repository = code_version().get("repository") or "."
    header = ["attention", "experiment", *metrics, "wall time (s)", "run", "code"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        folder = Path(run.get("run_dir", ""))
        if root is not None:
            try:
                folder = folder.relative_to(Path(root))
            except ValueError:
                pass
        cells = [
            _format(run.get("attention")),
            _format(run.get("experiment")),
            *(_format(run.get("metrics", {}).get(m)) for m in metrics),
            _format(run.get("wall_time_s")),
            str(folder),
            code_label(run.get("git"), repository),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(run: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """The attention name, or the run folder's name where several runs share an attention type."""
    attention = str(run.get("attention"))
    if sum(str(r.get("attention")) == attention for r in runs) > 1:
        return f"{attention}\n{Path(run.get('run_dir', '')).name}"
    return attention


def plot(runs: list[dict[str, Any]], metrics: list[str], path: str | Path) -> Path:
    """One bar chart per metric (a bar per run), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics or ["wall_time_s"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 0.6 * len(runs) + 2) * len(metrics), 4), squeeze=False)
    labels = [_label(run, runs) for run in runs]
    for ax, metric in zip(axes[0], metrics):
        values = [run.get("metrics", {}).get(metric, run.get(metric)) for run in runs]
        values = [v if isinstance(v, (int, float)) and math.isfinite(v) else float("nan") for v in values]
        ax.bar(range(len(runs)), values, color="tab:blue")
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(folder: str | Path, metrics: list[str] | None = None, out: str | Path | None = None) -> tuple[str, Path | None]:
    """Write ``report.md`` and ``report.png`` for the runs under ``folder``; return (table, png path or None)."""
    folder = Path(folder)
    runs = collect(folder)
    if not runs:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {folder}: is it a run or sweep folder (logs/train/...)?")
    chosen = pick_metrics(runs, metrics)
    table = markdown_table(runs, chosen, root=folder)
    out = Path(out) if out else folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(f"# {folder.name}\n\n{len(runs)} runs.\n\n{table}")
    png = plot(runs, chosen, out / "report.png")
    return table, png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hedgehog.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run or multirun folder, e.g. logs/train/multiruns/<sweep>")
    parser.add_argument("--metrics", nargs="+", help="metric names to show (default: the test metrics)")
    parser.add_argument("--out", help="where report.md and report.png go (default: the folder)")
    args = parser.parse_args(argv)
    try:
        table, png = report(args.folder, args.metrics, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table)
    out = Path(args.out) if args.out else Path(args.folder)
    print(f"Wrote {out / 'report.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
