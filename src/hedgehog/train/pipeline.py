"""What ``run.py`` does with a composed config: validate, build, train stage by stage, test, record.

``train(cfg)`` is the whole run:

1. ``validate_config`` (before anything is built); the run folder is locked for this process
   (``hedgehog.train.run_lock``); then ``seed_everything(cfg.seed)``;
2. build, in this order, from ``_target_`` nodes with ``hydra.utils.instantiate``: the DataModule (``cfg.data``),
   the model (``cfg.model``), the regime's LightningModule (``cfg.regime``), the loggers (``cfg.logger``); an
   argument of the model or the regime that the config leaves out and that has no default is filled in by
   name: ``model`` with the built model, ``datamodule`` with the DataModule, anything else with the
   DataModule attribute of that name (``vocab_size``, ``num_labels``, ``tokenizer``...);
3. train: a regime with a ``stages`` attribute (``hedgehog.regimes.stages``) is trained stage by stage, any
   other regime in one stage called ``train``. For each stage: ``module.start_stage(name)`` (multi-stage
   regimes), a fresh Trainer from ``cfg.trainer`` with the stage's ``max_steps``/``max_epochs`` and fresh
   callbacks, checkpoints in ``<run dir>/checkpoints/<stage>/``, ``trainer.fit`` (resuming from the stage's
   ``last.ckpt`` if there is one), a final validation, ``final.ckpt`` and ``done.json``. Stages already done
   are not trained again: their ``start_stage`` runs and the last one's ``final.ckpt`` is loaded. A stage with
   ``max_steps=0`` runs ``start_stage`` but trains nothing;
4. ``trainer.test`` on the final weights, then ``results.json`` in the run folder (``hedgehog.utils.results``).

Data: right after the DataModule is built, the files it reads are identified (size, lines, sha256) and checked
against the data folder's checksums (``hedgehog.train.data_identity``); the run folder keeps the identities, and a
rerun on other data neither resumes nor serves that folder's work. Checkpoints are written atomically and
checked before a stage resumes from them (``hedgehog.train.checkpoints``).

Rerunning the same command resumes; a run whose ``results.json`` says ``complete`` is not run again.

Sittings: when ``HEDGEHOG_PAUSE_AT`` or ``HEDGEHOG_SITTING_STEPS`` says the machine's time is up
(``hedgehog.callbacks.sitting``), the run checkpoints right after an optimizer step, writes ``progress.json``
(steps done and left per stage, this sitting's seconds per step) and exits with status 3 without testing; the
same command continues it. A run that completes also writes ``progress.json``. Runs thus always end by their
step count, never by a deadline.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from hedgehog.attention.backend import get_backend, set_backend
from hedgehog.callbacks.sitting import PauseAtSittingEnd, SittingClock, SittingLimit
from hedgehog.callbacks.throughput import TrainThroughput
from hedgehog.regimes.stages import Stage
from hedgehog.train import data_identity
from hedgehog.train.checkpoints import AtomicCheckpointIO, checked_weights, resume_checkpoint
from hedgehog.train.resume import (
    FINAL_CHECKPOINT, LAST_CHECKPOINT, StepSeed, make_train_loader_resumable, mark_stage_done, restore_weights,
    stage_done,
)
from hedgehog.train.run_lock import RunLock, is_launched_worker
from hedgehog.utils.atomic_files import previous_version
from hedgehog.utils.errors import (
    ConfigError, DataMismatchError, DataNotFoundError, ModelNotFoundError, RunInterrupted, RunPaused,
)
from hedgehog.utils.provenance import code_version
from hedgehog.utils.results import (
    RESULTS_FILE, as_floats, config_hash, device_info, read_results, versions, write_json,
)
from hedgehog.train.validation import locate_target, missing_data_message, target_signature, validate_config

log = logging.getLogger(__name__)
SINGLE_STAGE = "train"


def say(message: str) -> None:
    """Print on the main process only (every process of a DDP run executes this module)."""
    if rank_zero_only.rank == 0:
        print(message, flush=True)


# --- building -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def build_errors(key: str) -> Iterator[None]:
    """Turn the errors a constructor raises for bad settings or missing files into short ones naming ``key``."""
    try:
        yield
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise _as_user_error(key, cause) from None
    except (FileNotFoundError, ValueError, TypeError, MisconfigurationException) as error:
        raise _as_user_error(key, error) from None
    except OSError as error:  # a pretrained model that could not be loaded
        converted = _as_user_error(key, error)
        if converted is error:
            raise
        raise converted from None


@contextlib.contextmanager
def missing_files() -> Iterator[None]:
    """During training and testing, only a missing file becomes a short error; anything else is a bug to see."""
    try:
        yield
    except FileNotFoundError as error:
        raise _as_user_error("data", error) from None


def _as_user_error(key: str, error: BaseException) -> BaseException:
    from hedgehog.models.pretrained import PretrainedNotAvailable

    if isinstance(error, PretrainedNotAvailable):
        return ModelNotFoundError(f"{key}: {error}")
    if isinstance(error, FileNotFoundError):
        path = error.filename
        return DataNotFoundError(f"{key}: {error}" if path is None else missing_data_message(None, path) + f" ({error})")
    if isinstance(error, (ValueError, TypeError, MisconfigurationException)):
        return ConfigError(f"{key}: {error}")
    return error


def _filled_arguments(key: str, node: DictConfig, available: dict[str, Any], datamodule: Any) -> dict[str, Any]:
    """Required arguments of ``node``'s target that the config leaves out, taken from ``available`` or the
    DataModule's attributes; ``ConfigError`` if one cannot be found."""
    target = locate_target(key, node._target_)
    signature = target_signature(target)
    if signature is None:
        return {}
    filled: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name in node or param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        if param.default is not inspect.Parameter.empty:
            continue
        if name in available:
            filled[name] = available[name]
            continue
        with build_errors("data"):
            value = _datamodule_attribute(datamodule, name)
        if value is None:
            raise ConfigError(
                f"{key}: {getattr(target, '__qualname__', target)} needs {name!r}, which neither the config nor the "
                f"DataModule ({type(datamodule).__name__}) provides; set {key}.{name}=<value>"
            )
        filled[name] = value
    return filled


def _datamodule_attribute(datamodule: Any, name: str) -> Any:
    """``datamodule.<name>``; if absent or None, after ``prepare_data()`` and ``setup("fit")``."""
    value = getattr(datamodule, name, None)
    if value is None and not getattr(datamodule, "_hedgehog_prepared", False):
        datamodule.prepare_data()
        datamodule.setup("fit")
        datamodule._hedgehog_prepared = True
        value = getattr(datamodule, name, None)
    return value


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    with build_errors("data"):
        return instantiate(cfg.data, _convert_="all")


def build_model(cfg: DictConfig, datamodule: Any) -> Any:
    filled = _filled_arguments("model", cfg.model, {"datamodule": datamodule}, datamodule)
    with build_errors("model"):
        return instantiate(cfg.model, _convert_="all", **filled)


def build_module(cfg: DictConfig, model: Any, datamodule: Any) -> L.LightningModule:
    filled = _filled_arguments("regime", cfg.regime, {"model": model, "datamodule": datamodule}, datamodule)
    with build_errors("regime"):
        module = instantiate(cfg.regime, _convert_="all", **filled)
    if not isinstance(module, L.LightningModule):
        raise ConfigError(f"regime: {cfg.regime._target_} built a {type(module).__name__}, not a LightningModule")
    return module


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        with build_errors(f"logger.{name}"):
            loggers.append(instantiate(node, _convert_="all"))
    return loggers


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path, have_loggers: bool) -> list[L.Callback]:
    """Fresh callbacks for one stage; every ModelCheckpoint writes to ``checkpoint_dir``."""
    callbacks: list[L.Callback] = [StepSeed(cfg.seed)]
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        with build_errors(f"callbacks.{name}"):
            callback = instantiate(node, _convert_="all")
        if isinstance(callback, LearningRateMonitor) and not have_loggers:
            continue  # it needs a logger to write to
        if isinstance(callback, ProgressBar) and not cfg.trainer.get("enable_progress_bar", True):
            continue
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(checkpoint_dir)
        callbacks.append(callback)
    return callbacks


class _TrimLogsOnResume(L.Callback):
    """When a stage resumes, loggers that can (``resume_at``) drop what they logged after the checkpoint."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            for logger in trainer.loggers:
                if callable(getattr(logger, "resume_at", None)):
                    logger.resume_at(trainer.global_step, self.prefix)


class _LastValidation(L.Callback):
    """Remembers the step of the last validation inside ``fit`` (sanity checks excluded)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


def build_trainer(cfg: DictConfig, stage: Stage | None, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    """A Trainer from ``cfg.trainer``; a stage of a multi-stage regime sets ``max_steps``/``max_epochs``."""
    overrides: dict[str, Any] = {}
    if stage is not None:
        overrides["max_steps"] = stage.max_steps
        overrides["max_epochs"] = stage.max_epochs if stage.max_steps == -1 else None
    if not any(isinstance(c, Checkpoint) for c in callbacks):
        overrides["enable_checkpointing"] = False
    with build_errors("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all", **overrides)
    use_atomic_checkpoints(trainer)
    return trainer


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Give the Trainer's strategy the atomic checkpoint writer, unless it was configured with its own."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def log_config(loggers: list[Any], cfg: DictConfig) -> None:
    """The resolved config (without Hydra's node) as hyperparameters: W&B config, CSV hparams.yaml."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    for logger in loggers:
        logger.log_hyperparams(container)


# --- stages ---------------------------------------------------------------------------------------------


def training_stages(module: L.LightningModule) -> tuple[list[Stage], bool]:
    """``(stages, multi_stage)``: the regime's own stages, or one stage ``train`` run with cfg.trainer as is."""
    stages = getattr(module, "stages", None)
    if stages is None:
        return [Stage(SINGLE_STAGE)], False
    stages = list(stages)
    names = [s.name for s in stages]
    if not stages or len(set(names)) != len(names) or not all(isinstance(s, Stage) for s in stages):
        raise ConfigError(f"regime: {type(module).__name__}.stages must be a non-empty list of Stage with unique names, got {stages!r}")
    if not callable(getattr(module, "start_stage", None)):
        raise ConfigError(f"regime: {type(module).__name__} has stages but no start_stage(name) method")
    return stages, True


def _fit_stage(
    cfg: DictConfig, module: L.LightningModule, datamodule: Any, loggers: list[Any], stage: Stage, multi: bool,
    stage_dir: Path, clock: SittingClock,
) -> tuple[L.Trainer, dict[str, Any]]:
    started = time.perf_counter()
    callbacks = build_callbacks(cfg, stage_dir, bool(loggers))
    last_validation = _LastValidation()
    throughput = TrainThroughput()
    callbacks += [_TrimLogsOnResume(f"{stage.name}/" if multi else ""), last_validation, throughput,
                  PauseAtSittingEnd(clock, stage_dir / LAST_CHECKPOINT, stage.name)]
    trainer = build_trainer(cfg, stage if multi else None, callbacks, loggers)
    if multi:
        for logger in loggers:  # one W&B run / CSV file for all stages: metrics become <stage>/<name>
            logger._prefix = stage.name
            logger.LOGGER_JOIN_CHAR = "/"
    last = stage_dir / LAST_CHECKPOINT
    resume_from = resume_checkpoint(last, stage.name, stage_dir.parent.parent)
    if resume_from is not None:
        say(f"[{stage.name}] resuming from {resume_from}")
    with missing_files():
        trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume_from is None else str(resume_from))
    if trainer.interrupted:
        raise RunInterrupted(
            f"interrupted in stage {stage.name!r} at step {trainer.global_step}; rerun the same command to resume "
            f"from {last}"
        )
    metrics = dict(trainer.callback_metrics)
    if _has_validation(trainer, module) and last_validation.step != trainer.global_step:  # validate the final weights
        with missing_files():
            trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update(trainer.callback_metrics)
    trainer.save_checkpoint(stage_dir / FINAL_CHECKPOINT, weights_only=True)
    record = {
        "metrics": as_floats(metrics),
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "wall_time_s": round(time.perf_counter() - started, 3),
        **throughput.result(),
    }
    if trainer.is_global_zero:
        mark_stage_done(stage_dir, record)
    trainer.strategy.barrier("stage done")
    return trainer, record


def _has_validation(trainer: L.Trainer, module: L.LightningModule) -> bool:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden("validation_step", module) and trainer.limit_val_batches != 0


def run_stages(
    cfg: DictConfig, module: L.LightningModule, datamodule: Any, loggers: list[Any], run_dir: Path,
    clock: SittingClock,
) -> tuple[L.Trainer | None, dict[str, dict[str, Any]], bool]:
    """Train every stage not done yet; returns (last Trainer or None, stage name -> record, resumed?).
    ``clock`` counts this sitting's steps and pauses the run when the sitting ends (``RunPaused``)."""
    stages, multi = training_stages(module)
    checkpoints = run_dir / "checkpoints"
    done = [stage_done(checkpoints / s.name) for s in stages]
    n_done = 0
    while n_done < len(stages) and done[n_done] is not None:
        n_done += 1
    records: dict[str, dict[str, Any]] = {}
    resumed = n_done > 0
    trainer = None
    for index, stage in enumerate(stages):
        stage_dir = checkpoints / stage.name
        if multi:
            module.start_stage(stage.name)
        if index < n_done:
            records[stage.name] = done[index]  # type: ignore[assignment]
            if index == n_done - 1:
                final = stage_dir / FINAL_CHECKPOINT
                if final.is_file():
                    restore_weights(module, checked_weights(final, stage.name))
                say(f"[{stage.name}] done in an earlier run; weights restored from {final}")
            continue
        if multi and stage.max_steps == 0:
            records[stage.name] = {"metrics": {}, "global_step": 0, "epoch": 0, "skipped": True}
            continue
        resumed = resumed or (stage_dir / LAST_CHECKPOINT).is_file() or previous_version(stage_dir / LAST_CHECKPOINT).is_file()
        trainer, records[stage.name] = _fit_stage(cfg, module, datamodule, loggers, stage, multi, stage_dir, clock)
    if multi:
        for logger in loggers:
            logger._prefix = ""
    return trainer, records, resumed


# --- the run --------------------------------------------------------------------------------------------


def _one_copy_of_each_log_line() -> None:
    """Lightning gives the ``lightning`` logger its own console handler; under Hydra, whose root handlers
    print to the console and to ``run.log``, that prints every Lightning message twice."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build, train, test and write ``results.json``; returns the results (see the module docstring)."""
    started = time.perf_counter()
    _one_copy_of_each_log_line()
    validate_config(cfg)
    run_dir = Path(cfg.paths.output_dir).resolve()
    if is_launched_worker():  # a rank > 0 of a distributed run: rank 0 holds the run folder's lock
        return _train_in(cfg, run_dir, started)
    with RunLock(run_dir) as lock:
        if lock.taken_over:
            say(f"Took over the run folder from process {lock.taken_over.get('pid')} on host "
                f"{lock.taken_over.get('host')}, which no longer runs.")
        return _train_in(cfg, run_dir, started)


def _train_in(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    results_path = run_dir / RESULTS_FILE
    data_dir = OmegaConf.select(cfg, "paths.data_dir")
    previous = read_results(results_path)
    if previous is not None and previous.get("status") == "complete":
        _check_same_data(run_dir, previous.get("data_files"), _current_identities(previous.get("data_files"), data_dir),
                         complete=True)
        say(f"This run is complete already (delete {run_dir} to run it again). Results: {results_path}")
        return previous

    if "attention_backend" in cfg:
        set_backend(cfg.attention_backend)
    import torch

    torch.set_float32_matmul_precision(str(cfg.get("matmul_precision", "highest")))
    if cfg.get("cpu_threads") is not None:
        torch.set_num_threads(int(cfg.cpu_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    identities = data_identity.identify(data_identity.data_files(datamodule, cfg.data), data_dir)
    data_identity.check_expected(identities, data_dir)
    _check_same_data(run_dir, data_identity.read_recorded(run_dir), identities, complete=False)
    if not is_launched_worker():
        data_identity.record(run_dir, identities, data_dir)
    model = build_model(cfg, datamodule)
    module = build_module(cfg, model, datamodule)
    make_train_loader_resumable(datamodule, cfg.seed)
    loggers = build_loggers(cfg)
    log_config(loggers, cfg)

    clock = SittingClock(SittingLimit.from_env())
    try:
        trainer, stage_records, resumed = run_stages(cfg, module, datamodule, loggers, run_dir, clock)
    except RunPaused as paused:
        if not is_launched_worker():
            write_progress(run_dir, planned_steps(cfg, module), clock, paused)
        _close(loggers)
        raise
    if trainer is None:  # every stage was done already: a Trainer for the test only
        trainer = build_trainer(cfg, None, build_callbacks(cfg, run_dir / "checkpoints" / "test", bool(loggers)), loggers)
    with missing_files():
        tested = trainer.test(module, datamodule=datamodule, verbose=False)
    test_metrics = as_floats(tested[0] if tested else trainer.callback_metrics)

    last_stage = next(reversed(stage_records.values()), {})
    final_metrics = {k: v for k, v in last_stage.get("metrics", {}).items() if k.startswith("val/")}
    final_metrics.update(test_metrics)
    results = {
        "status": "complete",
        "experiment": _choice(cfg, "experiment"),
        "attention": OmegaConf.select(cfg, "attention.name"),
        "attention_options": _plain(OmegaConf.select(cfg, "attention.options")),
        "attention_backend": get_backend(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "model": _choice(cfg, "model"),
        "data": _choice(cfg, "data"),
        "regime": _choice(cfg, "regime"),
        "seed": int(cfg.seed),
        "lr": OmegaConf.select(cfg, "regime.lr", default=None),
        "metrics": final_metrics,
        "chance": chance_levels(datamodule),
        "stages": stage_records,
        "num_parameters": sum(p.numel() for p in module.parameters()),
        "config_hash": config_hash(cfg),
        "git": code_version(),
        "data_dir": None if data_dir is None else str(data_dir),
        "data_files": identities,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "resumed": resumed,
        "device": device_info(trainer),
        "versions": versions(),
        "run_dir": str(run_dir),
        "overrides": _task_overrides(),
    }
    if trainer.is_global_zero:
        write_progress(run_dir, planned_steps(cfg, module), clock, None)
        write_json(results_path, results)
        for logger in loggers:
            logger.log_metrics({f"final/{k}": v for k, v in final_metrics.items() if isinstance(v, float)})
            logger.save()
        say(_summary(results, results_path))
    _close(loggers)
    return results


def planned_steps(cfg: DictConfig, module: L.LightningModule) -> dict[str, int]:
    """Stage name -> the optimizer steps it is configured for (-1: counted in epochs)."""
    stages, multi = training_stages(module)
    if not multi:
        return {SINGLE_STAGE: int(OmegaConf.select(cfg, "trainer.max_steps", default=-1))}
    return {s.name: int(s.max_steps) for s in stages}


def write_progress(run_dir: Path, planned: dict[str, int], clock: SittingClock, paused: RunPaused | None) -> None:
    """``progress.json``: how far the run is (stage by stage) and this sitting's measured seconds per optimizer
    step, written when a sitting pauses the run and when it completes (``experiments/batch_runner.py estimate``
    plans the next sittings from it)."""
    checkpoints = run_dir / "checkpoints"
    done: dict[str, int] = {}
    for name in planned:
        record = stage_done(checkpoints / name)
        if record is not None:
            done[name] = int(record.get("global_step", 0))
    if paused is not None:
        done[paused.stage] = paused.step
    known = all(steps >= 0 for steps in planned.values())
    write_json(run_dir / "progress.json", {
        "status": "paused" if paused is not None else "complete",
        "job": os.environ.get("HEDGEHOG_JOB_NAME"),
        "stage": None if paused is None else paused.stage,
        "planned_steps": planned,
        "done_steps": done,
        "steps_left": (sum(max(0, planned[n] - done.get(n, 0)) for n in planned) if known else None)
        if paused is not None else 0,
        "steps_this_sitting": clock.steps,
        "seconds_this_sitting": round(clock.seconds, 3),
        "seconds_per_step": None if clock.seconds_per_step is None else round(clock.seconds_per_step, 5),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _current_identities(recorded: list[dict[str, Any]] | None, data_dir: Any) -> list[dict[str, Any]]:
    """The identities now of the files a run recorded (a file that no longer exists is left out)."""
    current = []
    for item in recorded or []:
        path = Path(item["path"]) if Path(item["path"]).is_absolute() else Path(str(data_dir)) / item["path"]
        if path.is_file():
            current.append(data_identity.file_identity(path, data_dir))
    return current


def _check_same_data(run_dir: Path, recorded: list[dict[str, Any]] | None, current: list[dict[str, Any]],
                     complete: bool) -> None:
    difference = data_identity.compare(recorded, current)
    if difference is not None:
        raise DataMismatchError(data_identity.stale_run_message(run_dir, difference, complete))


def chance_levels(datamodule: Any) -> dict[str, dict[str, float]]:
    """What each metric would be without learning, as the DataModule states it (``chance_levels()``), e.g.
    ``{"acc": {"a random value": 0.016}}``; empty when it states none."""
    levels = getattr(datamodule, "chance_levels", None)
    return dict(levels()) if callable(levels) else {}


def _close(loggers: list[Any]) -> None:
    """End the W&B run, so that the next job of a multirun (same process) starts its own."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            import wandb

            wandb.finish()
            logger._experiment = None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else (node or {})


def _choice(cfg: DictConfig, group: str) -> str | None:
    """The option chosen for ``group`` (e.g. ``experiment`` -> ``mqar_hedgehog``), when Hydra composed the config."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group)
    return None


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def _summary(results: dict[str, Any], path: Path) -> str:
    metrics = ", ".join(
        f"{k}={v:.4g}" for k, v in results["metrics"].items() if isinstance(v, float) and k.startswith(("test/", "val/"))
    )
    context = "".join(f"\n{line}" for line in context_lines(results))
    return (
        f"\n{results['experiment'] or 'run'} ({results['attention']} attention): {metrics or 'no metrics'}; "
        f"{results['wall_time_s']:.0f} s{context}\nResults: {path}\n"
    )


LOWER_IS_BETTER = ("ppl", "loss")


def context_lines(results: dict[str, Any]) -> list[str]:
    """One line per test metric with chance levels: the result beside what a model scores without learning."""
    lines = []
    for metric, levels in (results.get("chance") or {}).items():
        value = results["metrics"].get(f"test/{metric}")
        if not isinstance(value, float) or not levels or value <= 0:
            continue
        baselines = ", ".join(f"{_number(level)} for {what}" for what, level in levels.items())
        if metric.endswith(LOWER_IS_BETTER):
            factor, direction = min(levels.values()) / value, "lower"
        else:
            factor, direction = value / max(levels.values()), "higher"
        lines.append(
            f"In context: test/{metric} = {_number(value)}, {factor:.1f}x {direction} than the best a model scores "
            f"without learning the task: {baselines}."
        )
    return lines


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
