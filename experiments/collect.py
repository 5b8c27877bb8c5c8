"""Gather the runs of the reproduction batches into tidy tables and figures.

    python experiments/collect.py OUT_A/batch_a.tar.gz OUT_B/batch_b.tar.gz [more tarballs or folders]
    python experiments/collect.py                 # only re-tabulate what is already under experiments/results/runs

1. Each tarball (from ``experiments/gpu_batch_{a,b,c,d}.sh``; a folder works too) is unpacked into
   ``experiments/results/runs/<batch>/``, keeping small files only: ``results.json``, CSV metrics, Hydra configs,
   generations, the runner's job logs and summaries, and the offline W&B run folders without their debug logs
   (files over 2 MiB are dropped).
2. Every ``results.json`` under ``experiments/results/runs`` becomes a row of ``runs.csv`` (one row per run, every
   metric a column), jobs that produced no results are listed in ``jobs.csv`` with the runner's status, and
   each experiment gets a table (``<name>.csv`` and ``.md``): MQAR accuracy, WikiText perplexity, GLUE scores and
   % of softmax recovered, SmolLM2 WikiText perplexity and SAMSum ROUGE, ablations, efficiency, attention
   analysis.
3. Figures (PNG) go to ``experiments/figures/``.

A run's experiment is the folder it ran in (the batch scripts name them): ``mqar``, ``wikitext``, ``glue``,
``ablation_mqar``, ``ablation_glue``, ``wikitext_smollm2``, ``samsum_smollm2``, ``cpu_mqar``, ``mqar_recipe``,
``mqar_recipe_long`` and ``ablation_mqar_recipe`` (MQAR on CPU with the recipe that learns: lr 1e-3, no weight
decay; 2,000 and 6,000 steps), and the multi-seed families ``mqar_seeds`` / ``ablation_mqar_seeds`` (run names
``<setting>_s<seed>``; WikiText runs named that way get a seed table too); the analysis and
efficiency scripts write their own JSON (``analysis/analysis_<model>.json``, ``efficiency/efficiency.json``).
When the same run exists in several batches, tables use the latest batch (by name) and say which.

Every table says in its ``code`` column which rows come from code that is not a commit on main (of this
repository): ``uncommitted changes (<commit>)`` for a run whose checkout had uncommitted changes, ``not on main
(<commit>)`` for a commit that main does not contain, ``unknown`` where the run recorded no commit; the column is
empty for runs of code on main (``hedgehog.utils.provenance``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from hedgehog.utils.provenance import code_label  # noqa: E402
sys.path.insert(0, str(ROOT / "experiments"))
from claims import Arm, claims, compare, write_report_block  # noqa: E402
RESULTS = ROOT / "experiments" / "results"
REPORT = ROOT / "experiments" / "REPORT.md"
FIGURES = ROOT / "experiments" / "figures"
ATTENTION_ORDER = ["softmax", "hedgehog", "taylor", "elu", "performer", "cosformer", "t2r"]
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte", "qnli"]
KEEP_SUFFIXES = (".json", ".jsonl", ".csv", ".yaml", ".yml", ".log", ".txt", ".wandb", ".md", ".tsv")
MAX_BYTES = 2 * 2**20


# ---------------------------------------------------------------------------------------------------------------
# 1. unpack
# ---------------------------------------------------------------------------------------------------------------
def _keep(rel: Path, size: int) -> bool:
    parts = rel.parts
    if "checkpoints" in parts or size > MAX_BYTES:
        return False
    if "teachers" in parts:  # exported teacher models: keep their config only (weights and tokenizer are large)
        return rel.name == "config.json"
    if "wandb" in parts:
        return "logs" not in parts and rel.name not in ("output.log", "requirements.txt", "debug.log", "debug-internal.log")
    return rel.suffix in KEEP_SUFFIXES


def _is_figure(rel: Path) -> bool:
    """PNG figures drawn on the GPU host by the analysis and efficiency scripts (``<dir>/figures/*.png``)."""
    return rel.suffix == ".png" and len(rel.parts) >= 2 and rel.parts[-2] == "figures"


def unpack(source: Path, runs_dir: Path, fig_dir: Path = FIGURES) -> str:
    """Copy the small files of a batch tarball/folder into ``runs_dir/<batch>`` (figures into ``fig_dir``);
    returns the batch name."""
    if source.is_dir():
        batch = source.name
        dest = runs_dir / batch
        for path in source.rglob("*"):
            rel = path.relative_to(source)
            if path.is_file() and _is_figure(rel):
                fig_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, fig_dir / rel.name)
            elif path.is_file() and _keep(rel, path.stat().st_size):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
        return batch
    with tarfile.open(source) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        if not members:
            raise SystemExit(f"collect: {source} holds no files")
        batch = Path(members[0].name).parts[0]
        for m in members:
            rel = Path(m.name)
            if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != batch:
                continue
            inner = Path(*rel.parts[1:])
            if _is_figure(inner):
                fig_dir.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as fh:
                    (fig_dir / inner.name).write_bytes(fh.read())
                continue
            if not _keep(inner, m.size):
                continue
            out = runs_dir / batch / inner
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as fh:
                out.write_bytes(fh.read())
    return batch


# ---------------------------------------------------------------------------------------------------------------
# 2. tables
# ---------------------------------------------------------------------------------------------------------------
def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def load_runs(runs_dir: Path, repository: Path = ROOT) -> pd.DataFrame:
    """One row per run: its record's fields, every metric, and ``code`` (see the module docstring)."""
    rows = []
    for path in sorted(runs_dir.rglob("results.json")):
        rel = path.parent.relative_to(runs_dir)
        if "wandb" in rel.parts:
            continue
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        batch, family = rel.parts[0], rel.parts[1] if len(rel.parts) > 1 else ""
        name = "/".join(rel.parts[2:]) or family
        data = str(r.get("data") or "")
        row = {
            "batch": batch, "family": family, "name": name, "run_dir": str(rel),
            "experiment": r.get("experiment"), "attention": r.get("attention"), "data": data,
            "task": data.split("/")[-1] if data.startswith("glue") else None,
            "status": r.get("status"), "seed": r.get("seed"), "lr": r.get("lr"), "wall_time_s": r.get("wall_time_s"),
            "resumed": r.get("resumed"), "num_parameters": r.get("num_parameters"),
            "accelerator": (r.get("device") or {}).get("accelerator"),
            "setting": _setting((r.get("device") or {}).get("accelerator"), (r.get("device") or {}).get("name")),
            "device_name": (r.get("device") or {}).get("name"),
            "precision": (r.get("device") or {}).get("precision"),
            "git_commit": (r.get("git") or {}).get("commit"),
            "code": code_label(r.get("git"), repository),
            "config_hash": r.get("config_hash"),
            "steps": ";".join(f"{k}:{v.get('global_step')}" for k, v in (r.get("stages") or {}).items()),
            "attention_options": json.dumps(r.get("attention_options") or {}, sort_keys=True),
            "overrides": " ".join(r.get("overrides") or []),
        }
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)):
                row[k] = v
        rows.append(row)
    rows += _csv_only_runs(runs_dir, {runs_dir / r["run_dir"] for r in rows})
    return pd.DataFrame(rows)


SETTINGS = (("cpu", "", "CPU"), ("gpu", "_gpu", "H100"), ("h200", "_h200", "H200"))


def _setting(accelerator, device_name=None) -> str:
    """``cpu``, ``h200`` for runs on an H200, ``gpu`` for other CUDA devices (the H100 batches of 2026-11-23): each
    setting has its own sizes, budgets and device, so each gets its own tables (suffixes in ``SETTINGS``)."""
    if str(accelerator or "").lower() not in ("cuda", "gpu"):
        return "cpu"
    return "h200" if "H200" in str(device_name or "").upper() else "gpu"


def _csv_only_runs(runs_dir: Path, have: set[Path]) -> list[dict]:
    """Runs that trained and tested but wrote no results.json (e.g. a crash while writing it): their final
    metrics are the last logged value of each ``test/*``, ``teacher/*`` and ``val/*`` column of csv/metrics.csv."""
    import yaml

    rows = []
    for cfg_path in sorted(runs_dir.rglob(".hydra/config.yaml")):
        run = cfg_path.parent.parent
        metrics_csv = run / "csv" / "metrics.csv"
        if run in have or not metrics_csv.is_file() or "wandb" in run.parts:
            continue
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
            overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
            log = pd.read_csv(metrics_csv)
        except Exception:
            continue
        final = {}
        for col in log.columns:
            if col.startswith(("test/", "teacher/", "val/")):
                vals = log[col].dropna()
                if len(vals):
                    final[col] = float(vals.iloc[-1])
        if not any(k.startswith("test/") for k in final):
            continue  # never reached its test: not a result
        rel = run.relative_to(runs_dir)
        exp = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
        data = cfg.get("data") or {}
        task = data.get("task")
        rows.append({
            "batch": rel.parts[0], "family": rel.parts[1] if len(rel.parts) > 1 else "",
            "name": "/".join(rel.parts[2:]) or (rel.parts[1] if len(rel.parts) > 1 else ""), "run_dir": str(rel),
            "experiment": exp, "attention": (cfg.get("attention") or {}).get("name"),
            "setting": _setting((cfg.get("trainer") or {}).get("accelerator")),
            "data": f"glue/{task}" if task else None, "task": task, "status": "csv-only", "seed": cfg.get("seed"),
            "attention_options": json.dumps((cfg.get("attention") or {}).get("options") or {}, sort_keys=True),
            "overrides": " ".join(overrides), "steps": f"last logged step {int(log['step'].max())}" if "step" in log else "",
            "code": code_label(None, runs_dir),
            **final,
        })
    return rows


def load_jobs(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(runs_dir.glob("*/_jobs/summary.json")):
        batch = path.parts[-3]
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for j in summary.get("jobs", []):
            rows.append({"batch": batch, "job": j["name"], "status": j["status"], "seconds": j.get("seconds"),
                         "returncode": j.get("returncode"), "command": j.get("command")})
    return pd.DataFrame(rows)


def by_setting(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(table-name suffix, runs) per setting that has runs, with the suffixes of ``SETTINGS``."""
    out = []
    for setting, suffix, _ in SETTINGS:
        sub = runs[runs["setting"] == setting] if "setting" in runs.columns else runs.iloc[0:0]
        if not sub.empty:
            out.append((suffix, sub))
    return out


def latest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys``: the run of the latest batch, a complete one (results.json) before a csv-only one."""
    if df.empty:
        return df
    df = df[df["status"].isin(["complete", "csv-only"])].copy()
    df["_rank"] = (df["status"] == "complete").astype(int)
    df = df.sort_values(["_rank", "batch"])
    return df.drop_duplicates(keys, keep="last").drop(columns="_rank")


def _order(values) -> list:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda a: (ATTENTION_ORDER.index(a) if a in ATTENTION_ORDER else 99, str(a)))


def write_table(df: pd.DataFrame, name: str, out: Path, floatfmt: str = ".4g") -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{name}.csv", index=False)
    try:
        md = df.to_markdown(index=False, floatfmt=floatfmt)
    except ImportError:  # tabulate missing: a plain pipe table
        cols = list(df.columns)
        lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
        for _, r in df.iterrows():
            lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
        md = "\n".join(lines)
    (out / f"{name}.md").write_text(md + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([float("nan")] * len(df), index=df.index)


def _code(df: pd.DataFrame) -> pd.Series:
    """The ``code`` mark of each run (empty for code on main)."""
    return df["code"].fillna("") if "code" in df.columns else pd.Series([""] * len(df), index=df.index)


def _marks(values) -> str:
    """The distinct non-empty ``code`` marks of several runs, for a row that combines them."""
    return "; ".join(sorted({str(v) for v in values if isinstance(v, str) and v}))


def table_mqar(runs: pd.DataFrame, family: str) -> pd.DataFrame:
    df = latest(runs[runs["family"] == family], ["name"])
    if df.empty:
        return df
    t = pd.DataFrame({"attention": df["attention"], "test_acc": _col(df, "test/acc"), "val_acc": _col(df, "val/acc"),
                      "test_loss": _col(df, "test/loss"), "steps": df["steps"], "seed": df["seed"],
                      "device": df["device_name"], "wall_time_s": df["wall_time_s"], "batch": df["batch"],
                      "code": _code(df)})
    return t.set_index("attention").loc[_order(t["attention"])].reset_index()


def table_wikitext(runs: pd.DataFrame) -> pd.DataFrame:
    df = latest(runs[runs["family"] == "wikitext"], ["name"])
    if df.empty:
        return df
    t = pd.DataFrame({"attention": df["attention"], "test_ppl": _col(df, "test/ppl"), "test_loss": _col(df, "test/loss"),
                      "steps": df["steps"], "seed": df["seed"], "device": df["device_name"],
                      "wall_time_s": df["wall_time_s"], "batch": df["batch"], "code": _code(df)})
    return t.set_index("attention").loc[_order(t["attention"])].reset_index()


def _seed_stem(name: str) -> str:
    """``hedgehog_s1`` -> ``hedgehog``: the run name without its ``_s<seed>`` suffix."""
    head, sep, tail = str(name).rpartition("_s")
    return head if sep and tail.isdigit() else str(name)


def table_seeds(runs: pd.DataFrame, family: str, metric: str, label: str = "attention") -> pd.DataFrame:
    """One row per setting of a multi-seed family (run names ``<setting>_s<seed>``): the metric of every seed, its
    mean and standard deviation, and the steps each seed ran (runs stopped by a deadline ran fewer)."""
    df = latest(runs[runs["family"] == family], ["name"])
    if df.empty:
        return pd.DataFrame()
    df = df.assign(_stem=df["name"].map(_seed_stem), _value=_col(df, metric)).sort_values(["_stem", "seed"])
    rows = []
    for stem, g in df.groupby("_stem", sort=False):
        vals = g["_value"].astype(float)
        rows.append({
            label: stem, "seeds": len(g), f"{metric}_mean": vals.mean(),
            f"{metric}_std": vals.std(ddof=1) if len(g) > 1 else float("nan"),
            "per_seed": " ".join(f"s{int(sd)}={v:.4g}" for sd, v in zip(g["seed"], vals)),
            "steps_per_seed": " ".join(f"s{int(sd)}={st.split(':')[-1]}" for sd, st in zip(g["seed"], g["steps"])),
            "batches": " ".join(sorted(set(g["batch"]))),
            "code": _marks(_code(g)),
        })
    t = pd.DataFrame(rows)
    if label == "attention":
        t = t.set_index(label).loc[_order(t[label])].reset_index()
        if "softmax" in set(t[label]):  # each type against softmax: a difference within the spread is a tie
            lower_is_better = any(k in metric for k in ("ppl", "loss"))
            arms = {r[label]: Arm(tuple(float(v) for v in re.findall(r"=(\S+)", r["per_seed"]))) for _, r in t.iterrows()}
            t["vs_softmax"] = [None if a == "softmax" else compare(arms[a], arms["softmax"], not lower_is_better)
                               for a in t[label]]
    return t


def table_mqar_zoology(runs: pd.DataFrame, family: str = "mqar_zoology") -> tuple[pd.DataFrame, pd.DataFrame]:
    """MQAR in the paper's setting: (the learning-rate sweep: one row per attention x lr with validation and test
    accuracy over seeds, ``chosen`` marking each type's best validation accuracy at seed 0; the seed table at the
    chosen learning rates, in ``table_seeds``' columns). Test accuracy never takes part in the choice."""
    df = latest(runs[runs["family"] == family], ["name"])
    if df.empty or "lr" not in df:
        return pd.DataFrame(), pd.DataFrame()
    df = df.assign(_val=_col(df, "val/acc"), _test=_col(df, "test/acc"), lr=df["lr"].astype(float))
    rows = []
    for (att, lr), g in df.groupby(["attention", "lr"]):
        first = g[g["seed"] == 0]
        rows.append({"attention": att, "lr": lr, "seeds": len(g), "val_acc_seed0": first["_val"].mean() if len(first) else float("nan"),
                     "val_acc_mean": g["_val"].mean(), "test_acc_mean": g["_test"].mean(),
                     "steps": " ".join(sorted(set(g["steps"]))), "code": _marks(_code(g))})
    sweep = pd.DataFrame(rows)
    best = sweep.dropna(subset=["val_acc_seed0"]).sort_values("lr").groupby("attention")["val_acc_seed0"].idxmax()
    sweep["chosen"] = sweep.index.isin(best.values)
    sweep = sweep.assign(_a=sweep["attention"].map({a: i for i, a in enumerate(_order(sweep["attention"]))}))
    sweep = sweep.sort_values(["_a", "lr"]).drop(columns="_a").reset_index(drop=True)
    chosen = sweep[sweep["chosen"]][["attention", "lr"]]
    picked = df.merge(chosen, on=["attention", "lr"])
    if picked.empty:
        return sweep, pd.DataFrame()
    picked = picked.assign(family="_chosen", name=picked["attention"] + "_s" + picked["seed"].astype(int).astype(str))
    seeds = table_seeds(picked, "_chosen", "test/acc")
    seeds.insert(1, "lr", seeds["attention"].map(dict(zip(chosen["attention"], chosen["lr"]))))
    return sweep, seeds


def table_glue(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long table: one row per task x attention, wide table: attention x task scores + average + % recovered)."""
    df = latest(runs[runs["family"] == "glue"], ["task", "attention"])
    if df.empty:
        return df, df
    long = pd.DataFrame({"task": df["task"], "attention": df["attention"], "score": _col(df, "test/score"),
                         "teacher_score": _col(df, "teacher/test/score"), "steps": df["steps"], "seed": df["seed"],
                         "batch": df["batch"], "code": _code(df)})
    long["recovered_pct"] = 100 * long["score"] / long["teacher_score"]
    tasks = [t for t in GLUE_TASKS if t in set(long["task"])] + sorted(set(long["task"]) - set(GLUE_TASKS))
    wide = long.pivot_table(index="attention", columns="task", values="score").reindex(columns=tasks)
    # averages only over the full set of tasks: a row with a task missing gets none (tasks_run says how many ran)
    wide["tasks_run"] = wide[tasks].notna().sum(axis=1)
    wide["average"] = wide[tasks].mean(axis=1, skipna=False)
    rec = long.pivot_table(index="attention", columns="task", values="recovered_pct").reindex(columns=tasks)
    wide["recovered_pct_avg"] = rec.mean(axis=1, skipna=False)  # mean of the per-task ratios
    if "softmax" in wide.index:  # ratio of the averages: the headline "% of softmax"
        wide["recovered_pct_of_average"] = 100 * wide["average"] / wide.loc["softmax", "average"]
    wide["code"] = long.groupby("attention")["code"].agg(_marks)
    wide = wide.loc[_order(wide.index)].reset_index()
    att_rank = {a: i for i, a in enumerate(_order(long["attention"]))}
    task_rank = {t: i for i, t in enumerate(tasks)}
    long = long.assign(_t=long["task"].map(task_rank), _a=long["attention"].map(att_rank))
    long = long.sort_values(["_t", "_a"]).drop(columns=["_t", "_a"])
    return long.reset_index(drop=True), wide


def table_glue_seeds(runs: pd.DataFrame, family: str = "glue_seeds") -> pd.DataFrame:
    """GLUE over seeds (batch I): per attention, each task's score as mean ± std over seeds, the six-task average
    per seed (only for seeds with every task), its mean and std, the per-seed scores, and ``recovered_pct_of_average``:
    the ratio of the mean averages to softmax's (the headline "% of softmax"), with ``vs_softmax`` saying whether the
    difference of the averages is beyond their spread."""
    df = latest(runs[runs["family"] == family], ["name"])
    if df.empty:
        return pd.DataFrame()
    df = df.assign(_score=_col(df, "test/score"))
    tasks = [t for t in GLUE_TASKS if t in set(df["task"])] + sorted(set(df["task"].dropna()) - set(GLUE_TASKS))
    averages: dict[str, Arm] = {}
    rows = []
    for att, g in df.groupby("attention"):
        row: dict = {"attention": att}
        for task in tasks:
            vals = g[g["task"] == task]["_score"].astype(float)
            row[task] = Arm(tuple(vals)).show("{:.1f}") if len(vals) else "-"
        per_seed = g.pivot_table(index="seed", columns="task", values="_score").reindex(columns=tasks)
        complete = per_seed.dropna()
        arm = Arm(tuple(complete.mean(axis=1).astype(float)))
        averages[att] = arm
        row.update({"seeds": arm.n, "average_mean": arm.mean, "average_std": arm.std,
                    "per_seed": " ".join(f"s{int(sd)}={v:.4g}" for sd, v in zip(complete.index, arm.values)),
                    "steps": " ".join(sorted(set(g["steps"]))), "code": _marks(_code(g))})
        rows.append(row)
    t = pd.DataFrame(rows)
    if "softmax" in averages:
        soft = averages["softmax"]
        t["recovered_pct_of_average"] = [100 * averages[a].mean / soft.mean for a in t["attention"]]
        t["vs_softmax"] = [None if a == "softmax" else compare(averages[a], soft) for a in t["attention"]]
    return t.set_index("attention").loc[_order(t["attention"])].reset_index()


def _ablation_label(row) -> str:
    name = str(row["name"])
    opts = json.loads(row["attention_options"] or "{}")
    head = name.split("/")[0]
    if head in ("feature_dim", "activation", "init"):
        return f"{head}={opts.get(head)}"
    return head


def ablation_reference(runs: pd.DataFrame, family: str, reference_families: tuple[str, ...]) -> pd.DataFrame:
    """The default Hedgehog runs that an ablation family is compared with: same batch (so same setting and
    budget) and, for GLUE, the same tasks."""
    abl = runs[runs["family"] == family]
    ref = runs[runs["family"].isin(reference_families) & (runs["attention"] == "hedgehog") & runs["batch"].isin(set(abl["batch"]))]
    if "task" in abl.columns and abl["task"].notna().any():
        ref = ref[ref["task"].isin(set(abl["task"].dropna()))]
    return latest(ref, ["family", "name"])


def table_ablations(runs: pd.DataFrame, family: str, reference: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    df = latest(runs[runs["family"] == family], ["name"])
    rows = []
    if reference is not None and not reference.empty:
        for _, r in reference.iterrows():
            rows.append({"setting": "hedgehog (default)", "task": r.get("task"), metric: r.get(metric),
                         "teacher_score": r.get("teacher/test/score"), "steps": r["steps"], "batch": r["batch"],
                         "run": r["run_dir"], "code": r.get("code") or ""})
    for _, r in df.iterrows():
        label = {"reference": "hedgehog (default)", "teacher": "softmax (teacher)"}.get(_ablation_label(r), _ablation_label(r))
        rows.append({"setting": label, "task": r.get("task"), metric: r.get(metric),
                     "teacher_score": r.get("teacher/test/score"), "steps": r["steps"], "batch": r["batch"],
                     "run": r["run_dir"], "code": r.get("code") or ""})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t = t.drop_duplicates("run")
    first = {"hedgehog (default)": 0, "softmax (teacher)": 2}
    t = t.assign(_o=t["setting"].map(lambda x: first.get(x, 1))).sort_values(["_o", "setting"]).drop(columns="_o")
    if t["task"].isna().all():
        t = t.drop(columns=["task", "teacher_score"])
    return t


# Batches that ran the conversion recipe at equal budgets (experiments/gpu_batch_g.sh: text_mix corpus, output-MSE
# attention transfer, LoRA; runs named <arm>_s<seed>): their own tables, not mixed with the earlier recipe's.
RECIPE_BATCHES = ("gpu_2026-12-02_g", "gpu_2026-12-02_g2")


def _recipe_arm(name: str) -> tuple[str, int | None]:
    stem, _, seed = str(name).rpartition("_s")
    return (stem, int(seed)) if stem and seed.isdigit() else (str(name), None)


def table_smollm2_recipe(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recipe's WikiText-2 test perplexity and SAMSum ROUGE per arm: mean and standard deviation over the seeds
    that finished, their count, and the ratio to (difference from) softmax + LoRA of the same seeds."""
    sub = runs[runs["batch"].isin(RECIPE_BATCHES)]
    out = []
    for family, metric, compare in (("wikitext_smollm2", "test/ppl", "ratio"), ("samsum_smollm2", "test/rouge1", "difference")):
        df = latest(sub[sub["family"] == family], ["batch", "name"])
        if df.empty:
            out.append(pd.DataFrame())
            continue
        df = df.assign(_arm=[_recipe_arm(n)[0] for n in df["name"]], _seed=[_recipe_arm(n)[1] for n in df["name"]],
                       _value=_col(df, metric))
        soft = df[df["_arm"] == "softmax"].set_index("_seed")["_value"]
        rows = []
        for arm, g in df.groupby("_arm", sort=False):
            vals = g["_value"].astype(float)
            row = {"arm": arm, "seeds": len(vals), "seed_list": ",".join(str(int(x)) for x in g["_seed"].dropna()),
                   "mean": vals.mean(), "std": vals.std(ddof=1) if len(vals) > 1 else float("nan"),
                   "steps": g["steps"].iloc[0]}
            paired = [v for v, sd in zip(vals, g["_seed"]) if sd in soft.index]
            ref = [soft[sd] for sd in g["_seed"] if sd in soft.index]
            if paired and arm not in ("softmax", "zeroshot"):
                row[f"{compare}_to_softmax"] = (sum(paired) / sum(ref)) if compare == "ratio" else (sum(paired) - sum(ref)) / len(ref)
            if family == "wikitext_smollm2":
                for key in ("throughput/distill/tokens_per_s", "throughput/finetune/tokens_per_s"):
                    if key in g:
                        row[key.split("/")[1] + "_tokens_per_s"] = g[key].astype(float).mean()
            rows.append(row)
        t = pd.DataFrame(rows)
        t = t.set_index("arm").loc[_order(t["arm"])].reset_index()
        out.append(t)
    return out[0], out[1]


def recipe_curves(runs_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Validation perplexity of the LoRA stage against the tokens it has trained on, per recipe run (CSV logs)."""
    curves = {}
    for batch in RECIPE_BATCHES:
        for path in sorted((runs_dir / batch / "wikitext_smollm2").glob("*/csv/metrics.csv")):
            df = pd.read_csv(path)
            if "finetune/val/ppl" not in df or "finetune/val/tokens" not in df:
                continue
            pts = df[["finetune/val/tokens", "finetune/val/ppl"]].dropna()
            if len(pts):
                curves[path.parents[1].name] = [(float(a), float(b)) for a, b in pts.itertuples(index=False)]
    return curves


def figure_recipe_curves(curves: dict[str, list[tuple[float, float]]], path: Path) -> Path | None:
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in sorted(curves.items()):
        arm, seed = _recipe_arm(name)
        color = {"softmax": "#222222", "hedgehog": "#c44e52", "hedgehog_window": "#4c72b0", "t2r": "#55a868",
                 "performer": "#8172b2", "elu": "#937860", "cosformer": "#da8bc3", "taylor": "#ccb974"}.get(arm, "#8c8c8c")
        main = arm in ("softmax", "hedgehog", "hedgehog_window")
        ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], marker="o" if main else ".", color=color,
                label=f"{arm} (seed {seed})", linestyle="-" if main else "--", markersize=6 if arm != "softmax" else 9,
                zorder=3 if arm == "hedgehog_window" else 2)
    ax.set_yscale("log")
    ax.set_xlabel("LoRA tokens seen (millions)")
    ax.set_ylabel("validation perplexity (text_mix held-out)")
    ax.set_title("SmolLM2-135M converted: LoRA stage (after 3.3M tokens of transfer)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def table_smollm2(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = runs[~runs["batch"].isin(RECIPE_BATCHES)]
    wt = latest(runs[runs["family"] == "wikitext_smollm2"], ["name"])
    rows = []
    for _, r in wt.iterrows():
        arm, _, phase = str(r["name"]).partition("_")
        rows.append({"arm": arm, "phase": phase, "test_ppl": r.get("test/ppl"), "steps": r["steps"],
                     "resumed_from_distilled": bool(r.get("resumed")), "batch": r["batch"], "code": r.get("code") or ""})
    wiki = pd.DataFrame(rows)
    if not wiki.empty:
        codes = wiki.groupby("arm")["code"].agg(_marks)
        wiki = wiki.pivot_table(index="arm", columns="phase", values="test_ppl", aggfunc="first")
        wiki = wiki.reindex(columns=[c for c in ("zeroshot", "distilled", "lora") if c in wiki.columns])
        wiki["code"] = codes
        wiki = wiki.loc[_order(wiki.index)].reset_index()
    ss = latest(runs[runs["family"] == "samsum_smollm2"], ["name"])
    rows = []
    for _, r in ss.iterrows():
        rows.append({"arm": r["name"], "attention": r["attention"], "rouge1": r.get("test/rouge1"),
                     "rouge2": r.get("test/rouge2"), "rougeL": r.get("test/rougeL"), "rougeLsum": r.get("test/rougeLsum"),
                     "steps": r["steps"], "batch": r["batch"], "code": r.get("code") or ""})
    samsum = pd.DataFrame(rows)
    if not samsum.empty:
        base = samsum.loc[samsum["arm"] == "zeroshot", "rouge1"]
        if len(base):
            samsum["rouge1_vs_base"] = samsum["rouge1"] - float(base.iloc[0])
    return wiki, samsum


def table_efficiency(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict | None]:
    """Training and generation rows of every ``efficiency.json`` under ``results_dir`` (one per device and
    session), each row with the device and date of its run; the last file's JSON is returned."""
    paths = sorted(results_dir.rglob("efficiency.json"))
    if not paths:
        return pd.DataFrame(), pd.DataFrame(), None
    train, gen, eff = [], [], None
    for path in paths:
        eff = json.loads(path.read_text())
        where = {"device": eff.get("device"), "date": str(eff.get("date", ""))[:10]}
        train += [{**where, "arm": a, **r} for a, rows in eff["train"].items() for r in rows]
        gen += [{**where, "arm": a, **r} for a, rows in eff["generate"].items() for r in rows]
    return pd.DataFrame(train), pd.DataFrame(gen), eff


def table_analysis(results_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted(results_dir.rglob("analysis_*.json")):
        res = json.loads(path.read_text())
        if res.get("experiment") != "analysis_attention":
            continue
        rows = [{"map": "softmax (teacher)", "entropy": res["teacher"]["entropy"], "monotonicity": 1.0, "kl": 0.0}]
        rows += [{"map": arm, "entropy": m["entropy"], "monotonicity": m["monotonicity"], "kl": m["kl"]}
                 for arm, m in res["arms"].items() if arm != "softmax"]
        key = path.stem.replace("analysis_", "")
        # the same model analysed in several places (CPU commit, GPU batch): keep the one with more distillation
        steps = max([c.get("steps", 0) for c in res.get("distillation", {}).values()] or [0])
        if key in out and out[key][1] >= steps:
            continue
        out[key] = (pd.DataFrame(rows), steps, res)
    return {k: v[0] for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# 3. figures
# ---------------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seed_values(per_seed) -> list[float]:
    """The values of a seed table's ``per_seed`` cell (``s0=0.96 s1=0.26``)."""
    return [float(item.split("=", 1)[1]) for item in str(per_seed).split() if "=" in item]


def _bars(values: pd.Series, labels, ylabel: str, title: str, path: Path, highlight="hedgehog", fmt="{:.2f}", log=False,
          std=None, per_seed=None):
    """Bars of ``values``; ``std``: an error bar of one standard deviation over seeds; ``per_seed``: each seed's
    value as a dot (the seed tables' ``per_seed`` column), so that the spread is visible."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(values), 3.4))
    colors = ["#c44e52" if str(l).startswith(highlight) else "#222222" if str(l).startswith("softmax") else "#8c8c8c"
              for l in labels]
    errors = None if std is None else [0.0 if e != e else float(e) for e in std]
    bars = ax.bar(range(len(values)), values, color=colors, yerr=errors, capsize=3 if errors else 0)
    for b, v in zip(bars, values):
        if v == v:
            ax.annotate(fmt.format(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    for i, cell in enumerate(per_seed if per_seed is not None else []):
        points = _seed_values(cell)
        ax.scatter([i] * len(points), points, s=10, color="#4c72b0", zorder=3)
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _grouped_bars(table: pd.DataFrame, label_col: str, series: list[str], ylabel: str, title: str, path: Path,
                  figsize=(6, 3.4), log=False, rotation=0) -> Path:
    """One group of bars per row of ``table`` (labelled by ``label_col``), one bar per column in ``series``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / max(1, len(series))
    for i, col in enumerate(series):
        ax.bar([j + i * width for j in range(len(table))], table[col], width, label=col)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(table))], table[label_col], rotation=rotation)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def figures(tables: dict, fig_dir: Path) -> list[Path]:
    fig_dir.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    made = []
    for key, title in (("mqar", "MQAR recall accuracy (test)"), ("cpu_mqar", "MQAR, CPU-sized setting (test)"),
                       ("mqar_recipe", "MQAR, CPU-sized, lr 1e-3, 2,000 steps (test)"),
                       ("mqar_recipe_long", "MQAR, CPU-sized, lr 1e-3, 6,000 steps (test)")):
        t = tables.get(key)
        if t is not None and not t.empty:
            made.append(_bars(t["test_acc"], list(t["attention"]), "accuracy", title, fig_dir / f"{key}_accuracy.png"))
    for _, suffix, where in SETTINGS:  # one set of figures per setting
        t = tables.get("wikitext" + suffix)
        if t is not None and not t.empty:
            made.append(_bars(t["test_ppl"], list(t["attention"]), "test perplexity (lower is better)",
                              f"GPT from scratch on WikiText-2 (trained on valid split; {where})", fig_dir / f"wikitext_ppl{suffix}.png", fmt="{:.0f}",
                              log=True))
        long = tables.get("glue_long" + suffix)
        if long is not None and not long.empty:
            tasks = [t for t in GLUE_TASKS if t in set(long["task"])]
            atts = _order(long["attention"])
            atts = ["softmax"] + [a for a in atts if a != "softmax"] if "softmax" in atts else atts
            for value, ylabel, name in (("score", "GLUE score (x100)", f"glue_scores{suffix}.png"),
                                        ("recovered_pct", "% of softmax teacher", f"glue_recovered{suffix}.png")):
                fig, ax = plt.subplots(figsize=(10, 3.6))
                width = 0.8 / max(1, len(atts))
                for i, a in enumerate(atts):
                    vals = [long[(long["task"] == t) & (long["attention"] == a)][value].mean() for t in tasks]
                    ax.bar([j + i * width for j in range(len(tasks))], vals, width, label=a,
                           color="#c44e52" if a == "hedgehog" else "#222222" if a == "softmax" else None)
                ax.set_xticks([j + width * (len(atts) - 1) / 2 for j in range(len(tasks))], tasks)
                ax.set_ylabel(ylabel)
                if value == "recovered_pct":
                    ax.axhline(100, color="k", lw=0.8, ls="--")
                ax.legend(fontsize=7, ncol=len(atts))
                ax.set_title(f"MiniLM finetuned-conversion on GLUE ({where}): {ylabel}", fontsize=9)
                fig.tight_layout()
                fig.savefig(fig_dir / name, dpi=130)
                plt.close(fig)
                made.append(fig_dir / name)
        wiki = tables.get("smollm2_wikitext" + suffix)
        if wiki is not None and not wiki.empty:
            phases = [c for c in ("zeroshot", "distilled", "lora") if c in wiki.columns]
            made.append(_grouped_bars(wiki, "arm", phases, "WikiText-2 test perplexity",
                                      f"SmolLM2-135M converted ({where}): after distillation and after LoRA",
                                      fig_dir / f"smollm2_wikitext_ppl{suffix}.png", figsize=(6, 3.4), log=True))
        ss = tables.get("samsum" + suffix)
        if ss is not None and not ss.empty:
            metrics = [m for m in ("rouge1", "rouge2", "rougeL") if m in ss.columns]
            made.append(_grouped_bars(ss, "arm", metrics, "ROUGE F1 (x100)",
                                      f"SmolLM2-135M on SAMSum ({where}; subset of train split as test)",
                                      fig_dir / f"samsum_rouge{suffix}.png", figsize=(7, 3.4), rotation=20))
    for key, col, ylabel, title in (("mqar_seeds", "test/acc_mean", "MQAR test accuracy (mean over seeds)",
                                     "MQAR, lr 1e-3 recipe, several seeds (steps differ: see table)"),
                                    ("wikitext_seeds_h200", "test/ppl_mean", "test perplexity (mean over seeds)",
                                     "GPT from scratch on WikiText-2 (trained on valid split; H200)"),
                                    ("ablations_mqar_seeds", "test/acc_mean", "MQAR test accuracy",
                                     "Hedgehog ablations on MQAR, H200 (steps differ: see table)")):
        t = tables.get(key)
        if t is not None and not t.empty and col in t.columns:
            first = t.columns[0]
            std_col = col.replace("_mean", "_std")
            made.append(_bars(t[col], list(t[first]), ylabel.replace("(mean over seeds)", "(mean ± std)"),
                              f"{title}; dots: seeds", fig_dir / f"{key}.png", highlight="hedgehog", fmt="{:.3g}", log="ppl" in col,
                              std=list(t[std_col]) if std_col in t.columns else None,
                              per_seed=list(t["per_seed"]) if "per_seed" in t.columns else None))
    for key, metric, ylabel in (("ablations_mqar", "test_acc", "MQAR test accuracy"),
                                ("ablations_mqar_recipe", "test_acc", "MQAR test accuracy (lr 1e-3; steps in the table)"),
                                ("ablations_glue", "score", "GLUE test score")):
        t = tables.get(key)
        if t is not None and not t.empty and metric in t.columns:
            tasks_col = t["task"] if "task" in t.columns else pd.Series([None] * len(t))
            labels = [s if r is None or pd.isna(r) else f"{s} ({r})" for s, r in zip(t["setting"], tasks_col)]
            made.append(_bars(t[metric], labels, ylabel, f"Hedgehog ablations: {ylabel}", fig_dir / f"{key}.png",
                              highlight="hedgehog (default)"))
    return made


# ---------------------------------------------------------------------------------------------------------------
def collect(sources: list[Path], results_dir: Path = RESULTS, fig_dir: Path = FIGURES, repository: Path = ROOT,
            report: Path | None = None) -> dict:
    """Unpack ``sources``, tabulate every run under ``results_dir/runs``, write the claims table (also into
    ``report`` between its markers) and draw the figures; ``repository`` is the git checkout whose main branch the
    ``code`` columns compare run commits with."""
    runs_dir = results_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for src in sources:
        batch = unpack(src, runs_dir, fig_dir)
        print(f"collect: unpacked {src} -> {runs_dir / batch}")
    runs = load_runs(runs_dir, repository)
    jobs = load_jobs(runs_dir)
    tables: dict[str, pd.DataFrame] = {}
    if not runs.empty:
        write_table(runs, "runs", results_dir)
        tables["mqar"] = table_mqar(runs, "mqar")
        tables["cpu_mqar"] = table_mqar(runs, "cpu_mqar")
        tables["mqar_recipe"] = table_mqar(runs, "mqar_recipe")
        tables["mqar_recipe_long"] = table_mqar(runs, "mqar_recipe_long")
        tables["mqar_seeds"] = table_seeds(runs, "mqar_seeds", "test/acc")
        abl = table_seeds(runs, "ablation_mqar_seeds", "test/acc", label="setting")
        if not abl.empty:  # the default Hedgehog runs of that family are its reference
            abl["setting"] = abl["setting"].replace({"hedgehog": "hedgehog (default)"})
            abl = abl.assign(_o=(abl["setting"] != "hedgehog (default)").astype(int)).sort_values(["_o", "setting"]).drop(columns="_o")
        tables["ablations_mqar_seeds"] = abl
        for suffix, sub in by_setting(runs):
            tables["wikitext" + suffix] = table_wikitext(sub)
            seeds = table_seeds(sub, "wikitext", "test/ppl")
            if not seeds.empty and (seeds["seeds"] > 1).any():  # a seed table only where some type ran several
                tables["wikitext_seeds" + suffix] = seeds
            tables["glue_long" + suffix], tables["glue" + suffix] = table_glue(sub)
            tables["smollm2_wikitext" + suffix], tables["samsum" + suffix] = table_smollm2(sub)
        acc = runs.rename(columns={"test/acc": "test_acc"})
        ref_mqar = ablation_reference(acc, "ablation_mqar", ("mqar", "cpu_mqar"))
        tables["ablations_mqar"] = table_ablations(acc, "ablation_mqar", ref_mqar, "test_acc")
        ref_recipe = ablation_reference(acc, "ablation_mqar_recipe", ("mqar_recipe", "mqar_recipe_long"))
        tables["ablations_mqar_recipe"] = table_ablations(acc, "ablation_mqar_recipe", ref_recipe, "test_acc")
        tables["smollm2_recipe_wikitext"], tables["smollm2_recipe_samsum"] = table_smollm2_recipe(runs)
        ref_glue = ablation_reference(runs, "ablation_glue", ("glue",)).rename(columns={"test/score": "score"})
        tables["ablations_glue"] = table_ablations(runs.rename(columns={"test/score": "score"}), "ablation_glue", ref_glue, "score")
        tables["mqar_zoology_lr"], tables["mqar_zoology"] = table_mqar_zoology(runs)
        tables["glue_seeds"] = table_glue_seeds(runs)
    if not jobs.empty:
        write_table(jobs, "jobs", results_dir)
    train, gen, eff = table_efficiency(results_dir)
    if eff is not None:
        tables["efficiency_train"], tables["efficiency_generate"] = train, gen
    for key, t in table_analysis(results_dir).items():
        tables[f"analysis_{key}"] = t
    for key, t in tables.items():
        if t is not None and not t.empty:
            write_table(t, key, results_dir)
    summary = claims(tables)
    write_table(summary, "claims", results_dir, floatfmt="")
    if report is not None and write_report_block(report, summary):
        print(f"collect: the claims table at the top of {report.name} rewritten")
    made = figures(tables, fig_dir)
    curve = figure_recipe_curves(recipe_curves(runs_dir), fig_dir / "smollm2_recipe_curves.png")
    if curve is not None:
        made.append(curve)
    print(f"collect: {len(runs)} runs, {len(jobs)} jobs; tables: {', '.join(k for k, t in tables.items() if t is not None and not t.empty)}")
    print(f"collect: figures: {', '.join(p.name for p in made)}")
    for key in ("mqar", "mqar_recipe", "mqar_recipe_long", "ablations_mqar_recipe", "wikitext", "glue", "smollm2_wikitext", "samsum", "wikitext_gpu", "glue_gpu",
                "smollm2_wikitext_gpu", "samsum_gpu", "ablations_mqar", "ablations_glue", "mqar_seeds", "ablations_mqar_seeds",
                "wikitext_seeds_h200", "glue_h200", "smollm2_recipe_wikitext", "smollm2_recipe_samsum",
                "efficiency_train", "efficiency_generate"):
        t = tables.get(key)
        if t is not None and not t.empty:
            print(f"\n## {key}\n{(results_dir / f'{key}.md').read_text()}")
    if not jobs.empty:
        bad = jobs[jobs["status"] != "ok"]
        if len(bad):
            print("\n## jobs that did not end ok\n" + bad[["batch", "job", "status", "seconds"]].to_string(index=False))
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="*", type=Path, help="batch tarballs (or folders) to add")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--figures", type=Path, default=FIGURES)
    ap.add_argument("--report", type=Path, default=REPORT,
                    help="the report whose claims block (between its markers) is rewritten")
    args = ap.parse_args(argv)
    for s in args.sources:
        if not s.exists():
            raise SystemExit(f"collect: {s} does not exist")
    collect(args.sources, args.results, args.figures, report=args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
