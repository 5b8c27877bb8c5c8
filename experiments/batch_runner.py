"""Run a batch of experiment jobs on one machine within a fixed wall-clock budget, then pack the results.

A *plan* is a text file, one job a line (``#`` comments and blank lines ignored)::

    name | timeout_s | after (comma-separated job names, or -) | command (run with bash -c)

Jobs start in file order on up to ``--workers`` parallel slots (small models do not fill a GPU, so several
runs share it). A job starts only when the jobs it comes ``after`` have succeeded (if one failed, it is marked
``blocked``; if one paused, ``waiting``), and only when the remaining budget leaves it at least ``--min-time``
seconds; its timeout is cut to what remains. A job over its timeout gets SIGTERM, then SIGKILL 15 s later (its
whole process group).

Sittings: with ``--pause-margin S`` every job sees ``HEDGEHOG_PAUSE_AT`` = its deadline - S, so a run that cannot
finish checkpoints after an optimizer step and exits 3 (``hedgehog.callbacks.sitting``): the job is ``paused``,
and running the same plan in the next sitting continues it (finished runs return at once). Every job sees its name
as ``HEDGEHOG_JOB_NAME`` (recorded in the run's ``progress.json``) and its deadline as ``HEDGEHOG_JOB_DEADLINE``
(read by ``experiments/deadline_stop.py``, the stop-and-test callback of the earlier batches A-D, whose runs ended
by the clock; new batches pause instead). ``estimate`` reads the runs' ``progress.json`` and says how many
sittings the work left needs, from each run's measured seconds per step.

When a job ends, model checkpoints (``*.ckpt``) of every finished run under ``--log-dir`` are deleted, so a
batch of many runs does not fill the disk (``results.json``, CSV and W&B files stay); a run folder holding a
``.keep_checkpoints`` file is spared (a job that still needs them removes that file itself).

Every job's output goes to ``<log dir>/_jobs/<name>.log``; ``<log dir>/_jobs/summary.json`` and
``summary.log`` say, per job, its status (ok, failed, timeout, paused, blocked, waiting, no-time), exit code and
seconds, and are rewritten as jobs end. With ``--history FILE`` every job that ends is also appended to FILE (one
JSON object a line), and the summary lists the jobs that other runs appended there before this run's: several runs
into one log folder (one after another, or at once) keep one summary of all their jobs. ``pack`` makes the tarball
of everything worth keeping (no checkpoints, no weights)::

    python experiments/batch_runner.py run plan.txt --log-dir logs/batch_a --workers 8 --budget 480 --pause-margin 60
    python experiments/batch_runner.py estimate --log-dir logs/batch_a --workers 8 --sitting 1500
    python experiments/batch_runner.py pack --log-dir logs/batch_a --out $OUT/batch_a.tar.gz
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

KEEP_SUFFIXES = (".json", ".jsonl", ".csv", ".yaml", ".yml", ".log", ".txt", ".wandb", ".md", ".png", ".tsv")
SKIP_SUFFIXES = (".ckpt", ".safetensors", ".bin", ".pt", ".pth", ".gguf")
MAX_FILE_BYTES = 4 * 1024 * 1024  # a bigger log is cut to its head and tail when packed
PAUSED_EXIT = 3  # run.py's exit status when a sitting ends before the run (hedgehog.utils.errors.RunPaused)


@dataclass
class Job:
    name: str
    timeout: float
    after: list[str]
    command: str
    status: str = "pending"
    returncode: int | None = None
    started: float | None = None
    ended: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    deadline: float | None = None
    killed_at: float | None = None


def read_plan(path: Path) -> list[Job]:
    jobs: list[Job] = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 3)]
        if len(parts) != 4:
            raise SystemExit(f"{path}:{line_no}: expected 'name | timeout_s | after | command', got {line!r}")
        name, timeout, after, command = parts
        if any(j.name == name for j in jobs):
            raise SystemExit(f"{path}:{line_no}: duplicate job name {name!r}")
        deps = [] if after in ("", "-") else [a.strip() for a in after.split(",") if a.strip()]
        unknown = [d for d in deps if not any(j.name == d for j in jobs)]
        if unknown:
            raise SystemExit(f"{path}:{line_no}: job {name!r} comes after unknown (or later) jobs {unknown}")
        jobs.append(Job(name, float(timeout), deps, command))
    return jobs


def clean_checkpoints(log_dir: Path) -> int:
    """Delete ``*.ckpt`` inside every run folder whose results.json says complete; returns bytes freed."""
    freed = 0
    for results in log_dir.rglob("results.json"):
        try:
            if json.loads(results.read_text()).get("status") != "complete":
                continue
        except (OSError, ValueError):
            continue
        if (results.parent / ".keep_checkpoints").exists():
            continue
        for ckpt in (results.parent / "checkpoints").rglob("*.ckpt"):
            try:
                freed += ckpt.stat().st_size
                ckpt.unlink()
            except OSError:
                pass
    return freed


def job_record(job: Job, t0: float) -> dict:
    """One job as ``summary.json`` lists it: status, exit code, seconds run, start (seconds after t0), command."""
    secs = None if job.started is None else round((job.ended or time.time()) - job.started, 1)
    return {"name": job.name, "status": job.status, "returncode": job.returncode, "seconds": secs,
            "started_at_s": None if job.started is None else round(job.started - t0, 1),
            "timeout_s": job.timeout, "after": job.after, "command": job.command}


def read_history(path: Path | None, run_id: str) -> list[dict]:
    """The job records that other runs appended to the history file ``path`` (JSON lines); [] without one."""
    if path is None or not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("run") != run_id]


def write_summary(jobs: list[Job], jobs_dir: Path, t0: float, budget: float, earlier: list[dict] = ()) -> None:
    """``summary.json`` and ``summary.log``: the ``earlier`` records (other runs' jobs), then this run's jobs."""
    rows = [*earlier, *(job_record(j, t0) for j in jobs)]
    (jobs_dir / "summary.json").write_text(json.dumps({"budget_s": budget, "elapsed_s": round(time.time() - t0, 1),
                                                       "jobs": rows}, indent=1))
    lines = [f"{r['status']:8s} {str(r['seconds']):>7s}s  {r['name']}" for r in rows]
    (jobs_dir / "summary.log").write_text("\n".join(lines) + "\n")


def terminate(job: Job, sig: int) -> None:
    if job.proc is not None and job.proc.poll() is None:
        try:
            os.killpg(job.proc.pid, sig)
        except ProcessLookupError:
            pass


def run(args: argparse.Namespace) -> int:
    log_dir = Path(args.log_dir).resolve()
    jobs_dir = log_dir / "_jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    jobs = read_plan(Path(args.plan))
    if args.only:  # run a subset; prerequisites left out are taken as done (e.g. a teacher from an earlier run)
        keep = set(args.only.split(","))
        jobs = [j for j in jobs if j.name in keep]
        for j in jobs:
            j.after = [d for d in j.after if d in keep]
    t0 = time.time()
    end = t0 + args.budget
    by_name = {j.name: j for j in jobs}
    last_report = 0.0
    history = Path(args.history).resolve() if args.history else None
    run_id = f"{os.getpid()}@{t0:.3f}"
    print(f"[runner] {len(jobs)} jobs, {args.workers} workers, budget {args.budget:.0f} s", flush=True)

    def summarize() -> None:
        write_summary(jobs, jobs_dir, t0, args.budget, read_history(history, run_id))

    def settle(job: Job, status: str) -> None:
        """Give ``job`` its final status; with a history file, append its record there."""
        job.status = status
        if history is not None:
            with history.open("a") as fh:
                fh.write(json.dumps({**job_record(job, t0), "run": run_id}) + "\n")
        summarize()

    def finish(job: Job, status: str) -> None:
        job.ended = time.time()
        freed = clean_checkpoints(log_dir)
        print(f"[runner] {time.time() - t0:6.0f}s  {status:8s} {job.name} ({job.ended - job.started:.0f} s)"
              + (f", freed {freed / 2**20:.0f} MiB of checkpoints" if freed else ""), flush=True)
        settle(job, status)

    while True:
        now = time.time()
        running = [j for j in jobs if j.status == "running"]
        for j in running:
            rc = j.proc.poll()
            if rc is not None:
                j.returncode = rc
                status = "ok" if rc == 0 else ("paused" if rc == PAUSED_EXIT else "failed")
                finish(j, "timeout" if j.killed_at is not None else status)
            elif now > j.deadline and j.killed_at is None:
                print(f"[runner] {now - t0:6.0f}s  timeout  {j.name}: SIGTERM", flush=True)
                terminate(j, signal.SIGTERM)
                j.killed_at = now
            elif j.killed_at is not None and now > j.killed_at + 15:
                terminate(j, signal.SIGKILL)
        for j in jobs:
            if j.status != "pending":
                continue
            deps = [by_name[d] for d in j.after]
            if any(d.status in ("failed", "timeout", "blocked", "no-time") for d in deps):
                settle(j, "blocked")
            elif any(d.status in ("paused", "waiting") for d in deps):
                settle(j, "waiting")  # its prerequisite continues in the next sitting
        running = [j for j in jobs if j.status == "running"]
        for j in jobs:
            if len(running) >= args.workers:
                break
            if j.status != "pending" or not all(by_name[d].status == "ok" for d in j.after):
                continue
            left = end - time.time()
            if left < args.min_time:
                settle(j, "no-time")
                continue
            j.started = time.time()
            j.deadline = j.started + min(j.timeout, left)
            log = open(jobs_dir / f"{j.name}.log", "w")
            log.write(f"$ {j.command}\n")
            log.flush()
            env = dict(os.environ, HEDGEHOG_JOB_DEADLINE=f"{j.deadline:.0f}", HEDGEHOG_JOB_NAME=j.name)
            if args.pause_margin is not None:
                env["HEDGEHOG_PAUSE_AT"] = f"{j.deadline - args.pause_margin:.0f}"
            j.proc = subprocess.Popen(["bash", "-c", j.command], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=args.cwd, env=env)
            j.status = "running"
            running.append(j)
            print(f"[runner] {j.started - t0:6.0f}s  start    {j.name} (timeout {j.deadline - j.started:.0f} s)", flush=True)
            summarize()
        if not any(j.status in ("pending", "running") for j in jobs):
            break
        if time.time() - last_report > 30:
            last_report = time.time()
            counts = {s: sum(j.status == s for j in jobs) for s in ("running", "pending", "ok", "paused", "failed", "timeout")}
            print(f"[runner] {time.time() - t0:6.0f}s  " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
        time.sleep(0.5)
    summarize()
    counts = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    print(f"[runner] done in {time.time() - t0:.0f} s: {counts}", flush=True)
    return 0


def paused_checkpoints(log_dir: Path) -> set[Path]:
    """The ``last.ckpt`` (and ``done.json``/``final.ckpt`` of finished stages) of every run whose ``progress.json``
    says paused: what another machine needs to continue it."""
    keep: set[Path] = set()
    for progress in log_dir.rglob("progress.json"):
        try:
            if json.loads(progress.read_text()).get("status") != "paused":
                continue
        except (OSError, ValueError):
            continue
        for path in (progress.parent / "checkpoints").rglob("*"):
            if path.name in ("last.ckpt", "final.ckpt", "done.json"):
                keep.add(path)
    return keep


def _members(log_dir: Path, wandb_level: int, paused: bool = False) -> tuple[list[Path], int]:
    """Files of ``log_dir`` worth packing. wandb_level 2: all W&B files; 1: without W&B debug logs and console
    output; 0: no W&B files. Never weights or exported teachers, and checkpoints only those of paused runs when
    ``paused`` (``paused_checkpoints``)."""
    keep, skipped = [], 0
    resumable = paused_checkpoints(log_dir) if paused else set()
    for path in sorted(log_dir.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(log_dir)
        if path in resumable:
            keep.append(path)
            continue
        if path.suffix in SKIP_SUFFIXES or "checkpoints" in rel.parts or "teachers" in rel.parts:
            skipped += 1
            continue
        if "wandb" in rel.parts:
            if wandb_level == 0 or (wandb_level == 1 and ("logs" in rel.parts or path.name in ("output.log", "requirements.txt"))):
                skipped += 1
                continue
        elif path.suffix not in KEEP_SUFFIXES:
            skipped += 1
            continue
        keep.append(path)
    return keep, skipped


def _write_tar(out: Path, log_dir: Path, arcroot: str, files: list[Path]) -> None:
    """Write ``out`` atomically (a temporary file renamed at the end): a reader never sees half a tarball."""
    import io

    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in files:
            arcname = str(Path(arcroot) / path.relative_to(log_dir))
            if path.stat().st_size > MAX_FILE_BYTES and path.suffix in (".log", ".txt", ".jsonl", ".csv", ".json"):
                data = path.read_bytes()
                half = MAX_FILE_BYTES // 2
                cut = data[:half] + b"\n... [cut] ...\n" + data[-half:]
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = len(cut), int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(cut))
            elif path.stat().st_size <= 4 * MAX_FILE_BYTES or path.suffix == ".ckpt":
                tar.add(path, arcname=arcname, recursive=False)
    os.replace(tmp, out)


def pack(args: argparse.Namespace) -> int:
    """One tarball of ``--log-dir`` (no checkpoints, no weights) under ``--max-mib``: with every W&B file if it
    fits, else without W&B debug logs; if it still does not fit, the W&B files go to ``<name>_wandb.tar.gz``."""
    log_dir = Path(args.log_dir).resolve()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arcroot = args.arcname or log_dir.name
    limit = args.max_mib * 2**20
    for level in (2, 1):
        files, skipped = _members(log_dir, level, args.paused_checkpoints)
        _write_tar(out, log_dir, arcroot, files)
        if out.stat().st_size <= limit:
            print(f"[pack] {out}: {len(files)} files ({out.stat().st_size / 2**20:.1f} MiB), {skipped} skipped", flush=True)
            return 0
    files, skipped = _members(log_dir, 0, args.paused_checkpoints)
    _write_tar(out, log_dir, arcroot, files)
    print(f"[pack] {out}: {len(files)} files ({out.stat().st_size / 2**20:.1f} MiB) without W&B", flush=True)
    wandb_files = [p for p in _members(log_dir, 1)[0] if "wandb" in p.relative_to(log_dir).parts]
    side = out.with_name(out.name.replace(".tar.gz", "") + "_wandb.tar.gz")
    _write_tar(side, log_dir, arcroot, wandb_files)
    print(f"[pack] {side}: {len(wandb_files)} W&B files ({side.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return 0


HEADLINE = ("test/acc", "test/ppl", "test/score", "teacher/test/score", "test/rouge1", "test/rouge2", "test/rougeL")


def report(args: argparse.Namespace) -> int:
    """A plain table of every results.json under ``--log-dir``: where it ran and its headline metrics."""
    log_dir = Path(args.log_dir).resolve()
    rows = []
    for path in sorted(log_dir.rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            rows.append(f"{path.parent.relative_to(log_dir)}  unreadable: {error}")
            continue
        dev = r.get("device") or {}
        steps = ",".join(f"{k}:{v.get('global_step')}" for k, v in (r.get("stages") or {}).items())
        metrics = r.get("metrics") or {}
        shown = " ".join(f"{k}={metrics[k]:.4g}" for k in HEADLINE if isinstance(metrics.get(k), (int, float)))
        rows.append(f"{str(path.parent.relative_to(log_dir)):60.60s} {r.get('status')} {r.get('attention')} "
                    f"{dev.get('accelerator')}/{dev.get('precision')} steps[{steps}] {r.get('wall_time_s')}s {shown}")
    print("\n".join(rows) if rows else "no results.json found")
    return 0


def read_progress(log_dir: Path) -> list[dict]:
    """Every run's ``progress.json`` under ``log_dir`` (with ``run``: its folder relative to ``log_dir``), and
    ``results.json`` files without one (complete, nothing left)."""
    rows = []
    for path in sorted(log_dir.rglob("progress.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows.append({**record, "run": str(path.parent.relative_to(log_dir))})
    return rows


def sittings_needed(left_s: list[float], workers: int, sitting_s: float) -> int:
    """Sittings of ``sitting_s`` seconds on ``workers`` slots that jobs with ``left_s`` seconds of work need: the
    whole work spread over every slot, and at least the longest job's own count (a run is in one slot at a time)."""
    if not left_s or max(left_s) <= 0:
        return 0
    spread = math.ceil(sum(left_s) / (workers * sitting_s))
    longest = max(math.ceil(t / sitting_s) for t in left_s)
    return max(spread, longest)


def estimate(args: argparse.Namespace) -> int:
    """Per run, steps left and measured seconds per step, then the sittings the work left needs (JSON too)."""
    log_dir = Path(args.log_dir).resolve()
    rows, unknown = [], []
    for record in read_progress(log_dir):
        left, per_step = record.get("steps_left"), record.get("seconds_per_step")
        work = None
        if record.get("status") == "complete":
            work = 0.0
        elif left is not None and per_step:
            work = left * per_step + args.overhead
        rows.append({"job": record.get("job"), "run": record["run"], "status": record.get("status"),
                     "done_steps": record.get("done_steps"), "planned_steps": record.get("planned_steps"),
                     "steps_left": left, "seconds_per_step": per_step, "seconds_left": work})
        if work is None:
            unknown.append(record["run"])
    seen = {r["job"] for r in rows if r["job"]}
    if args.plan:  # plan jobs that have not run yet: no measured step time
        unknown += [j.name for j in read_plan(Path(args.plan)) if j.name not in seen]
    left = [r["seconds_left"] for r in rows if r["seconds_left"]]
    needed = sittings_needed(left, args.workers, args.sitting - args.overhead)
    print(f"{'run':50.50s} {'status':8s} {'steps left':>10s} {'s/step':>8s} {'s left':>8s}")
    for r in rows:
        print(f"{(r['job'] or r['run']):50.50s} {str(r['status']):8s} {str(r['steps_left']):>10s} "
              f"{'-' if not r['seconds_per_step'] else format(r['seconds_per_step'], '.3f'):>8s} "
              f"{'-' if r['seconds_left'] is None else format(r['seconds_left'], '.0f'):>8s}")
    print(f"work left: {sum(left):.0f} s over {len(left)} runs; {args.workers} workers, sittings of {args.sitting:.0f} s "
          f"-> {needed} more sitting(s)" + (f"; no step time yet for {len(unknown)}: {', '.join(unknown)}" if unknown else ""))
    out = log_dir / "_jobs" / "estimate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"workers": args.workers, "sitting_s": args.sitting, "overhead_s": args.overhead,
                               "sittings_needed": needed, "seconds_left": round(sum(left), 1), "runs": rows,
                               "unknown": unknown}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a plan")
    r.add_argument("plan")
    r.add_argument("--log-dir", required=True)
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--budget", type=float, required=True, help="seconds from now until the last job must end")
    r.add_argument("--min-time", type=float, default=45, help="do not start a job with less time than this left")
    r.add_argument("--only", default=None, help="comma-separated job names to run (the rest are ignored)")
    r.add_argument("--cwd", default=None)
    r.add_argument("--pause-margin", type=float, default=None,
                   help="seconds before a job's deadline at which its run pauses (checkpoint, exit 3) to continue in "
                        "the next sitting; without it runs are not told when the sitting ends")
    r.add_argument("--history", default=None,
                   help="a JSONL file every finished job is appended to; summary.json then also lists the jobs that "
                        "earlier runs appended there")
    p = sub.add_parser("pack", help="tar.gz the results of a log dir (no checkpoints)")
    p.add_argument("--log-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--arcname", default=None)
    p.add_argument("--max-mib", type=float, default=15.5)
    p.add_argument("--paused-checkpoints", action="store_true",
                   help="also pack the checkpoints of paused runs, to continue them on another machine (small models)")
    q = sub.add_parser("report", help="print a table of the results.json files of a log dir")
    q.add_argument("--log-dir", required=True)
    e = sub.add_parser("estimate", help="the sittings still needed, from the runs' progress.json (measured step times)")
    e.add_argument("--log-dir", required=True)
    e.add_argument("--workers", type=int, default=4)
    e.add_argument("--sitting", type=float, required=True, help="seconds of one sitting")
    e.add_argument("--overhead", type=float, default=60,
                   help="seconds a run spends per sitting outside training steps (start, resume, test)")
    e.add_argument("--plan", default=None, help="a plan file: its jobs without progress.json are listed as unknown")
    args = ap.parse_args(argv)
    return {"run": run, "pack": pack, "report": report, "estimate": estimate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
