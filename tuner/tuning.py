"""The Tune side of a search: Optuna sampler, scheduler, the Tuner (new or restored), the
callback that rewrites the tables while trials run, and why an experiment ended.

Ray is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import sys
import time
from typing import Any
from pathlib import Path

from tuner import study_dir as folders
from tuner.core.config import ConfigError
from tuner.space import SpaceFile, searched_keys
from tuner.study import Plan


def make_sampler(name: str, seed: int):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[name]()


def scheduler_metric(spec: SpaceFile) -> str:
    """time_to_target is +inf until reached, useless for comparing trials mid-run: use train_loss."""
    return "train_loss" if spec.search.metric == "time_to_target" else "objective"


def make_scheduler(spec: SpaceFile, steps_per_epoch: int):
    from ray.tune import schedulers
    from tuner.space import pbt_mutations

    s = spec.search.scheduler
    metric, mode = scheduler_metric(spec), spec.search.mode
    max_epochs = int(spec.base.get("train", {}).get("max_epochs", 100))
    horizon = {
        "timesteps": max_epochs * steps_per_epoch,
        "training_iteration": max_epochs,
        "time_total_s": spec.search.time_budget_s or 10 * 24 * 3600,
    }
    if s.type == "fifo":
        return schedulers.FIFOScheduler()
    if s.type == "asha":
        max_t = s.max_t or horizon[s.time_attr]
        return schedulers.ASHAScheduler(
            time_attr=s.time_attr,
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=min(s.grace_period, max_t),
            reduction_factor=s.reduction_factor,
        )
    if s.type == "median":
        return schedulers.MedianStoppingRule(
            time_attr=s.time_attr, metric=metric, mode=mode, grace_period=s.grace_period
        )
    if s.type == "pbt":
        return schedulers.PopulationBasedTraining(
            time_attr=s.time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=pbt_mutations(spec),
            synch=False,
        )
    raise ConfigError(f"search.scheduler.type: got {s.type!r}")  # pragma: no cover


def make_searcher(p: Plan) -> tuple[Any, dict, list[dict]]:
    """(search algorithm, Tune param_space, start points) for a new experiment.

    Optuna serves `optuna` and `random` (define-by-run, so `if:` has one implementation); Tune's
    variant generator serves grids and PBT. Start points run once, first, in the study's first
    experiment only (not on --extend, nor when a killed first experiment is started again after
    Optuna already saw trials)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    from tuner.space import optuna_space, start_points, tune_space

    spec, search = p.spec, p.spec.search
    points = start_points(spec) if p.experiment == "search" else []
    if spec.uses_variant_generator:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune ignores max_concurrent_trials when it is handed a variant generator.
        searcher = BasicVariantGenerator(
            random_state=p.seed, max_concurrent=search.max_concurrent, points_to_evaluate=points or None
        )
        return searcher, tune_space(spec), points
    db = folders.storage(p.study_dir)  # pickled as "the study folder's optuna.db"
    if (
        spec.name in optuna.study.get_all_study_names(db)
        and optuna.load_study(study_name=spec.name, storage=db).trials
    ):
        points = []
    sampler = "random" if search.algorithm == "random" else search.sampler
    searcher = OptunaSearch(
        space=optuna_space(spec.params),
        metric="objective",
        mode=search.mode,
        sampler=make_sampler(sampler, p.seed),
        study_name=spec.name,
        storage=db,
        points_to_evaluate=points or None,
    )
    return searcher, {}, points


def make_tuner(p: Plan, callbacks: list):
    """A new Tune experiment for the plan, or the restored one (--resume)."""
    from ray import tune
    from tuner.trial import run_trial

    spec, search = p.spec, p.spec.search
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec), {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    )
    storage = str(p.study_dir / "ray")
    if p.restore:
        folders.resuming(p.study_dir)  # its pickles open this folder's optuna.db, moved or not
        return tune.Tuner.restore(
            str(Path(storage) / p.experiment),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
        )
    searcher, param_space, points = make_searcher(p)
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # Only the JSON results (read back for the tables) and progress.csv; no TensorBoard files.
    callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), _results_kept_on_retry(), *callbacks]
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec, p.steps_per_epoch),
            num_samples=p.num_samples + len(points),  # start points run in addition
            max_concurrent_trials=None if spec.uses_variant_generator else search.max_concurrent,
            time_budget_s=search.time_budget_s,
            reuse_actors=True,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=p.experiment,
            storage_path=storage,
            stop=None if search.timestep_budget is None else timestep_budget(search.timestep_budget),
            callbacks=callbacks,
            progress_reporter=tune.CLIReporter(
                parameter_columns={k: k.rsplit(".", 1)[-1] for k in searched_keys(spec)},
                metric_columns={
                    "epoch": "epoch",
                    "chunks": "N",
                    "train_loss": "train_loss",
                    "val_loss": "val_loss",
                    "objective": "objective",
                },
                max_report_frequency=15,
                max_progress_rows=12,
            ),
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            # Tune's num_to_keep deletes checkpoints that a restored experiment snapshot may
            # still point at (and PBT may still exploit): keep them all while a trial runs, and
            # prune a trial's older ones when it ends (LiveTables).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )


def timestep_budget(budget: int):
    """A Tune stopper that ends the whole search once its trials' latest `timesteps` (each
    trial's cumulative count) add up to `budget` (`search.timestep_budget`)."""
    from ray import tune

    class TimestepBudget(tune.Stopper):
        def __init__(self) -> None:
            self.spent: dict[str, float] = {}

        def __call__(self, trial_id: str, result: dict) -> bool:
            self.spent[trial_id] = float(result.get("timesteps", 0))
            return False

        def stop_all(self) -> bool:
            return sum(self.spent.values()) >= budget

    return TimestepBudget()


def spent_timesteps(grid) -> float:
    """Time steps trained by a finished run's trials together (each trial's last count)."""
    return float(sum((r.metrics or {}).get("timesteps", 0) for r in grid))


def _results_kept_on_retry():
    """A Tune callback that copies a failed trial's result.json to the study folder before the
    trial restarts.

    Why: on a restart, Tune's JSON logger copies result.json back from the study folder, which
    is synced from the driver's staging copy only every few seconds; the epochs reported since
    the last sync would vanish from result.json and the tables, although the checkpoint they
    came with is restored and those epochs are not run again (seen after a node death)."""
    from ray import tune

    from tuner.core.atomic import atomic_write_bytes

    class ResultsKeptOnRetry(tune.Callback):
        def on_trial_recover(self, iteration, trials, trial, **info):
            staged = Path(trial.local_path) / "result.json"
            if staged.exists():
                atomic_write_bytes(Path(trial.path) / "result.json", staged.read_bytes())

    return ResultsKeptOnRetry()


def _live_tables_callback(p: Plan):
    """A Tune callback that rewrites trials.csv/epochs.csv while the search runs."""
    from ray import tune
    from tuner.results import TrialLog, read_logs, tables, write_tables

    searched = searched_keys(p.spec)

    class LiveTables(tune.Callback):
        def __init__(self, every_s: float = 15.0) -> None:
            self.every_s = every_s
            self.last = 0.0
            self.folder = p.study_dir
            self.disk = {(log.experiment, log.trial_id): log for log in read_logs(self.folder)}
            self.live: dict[str, TrialLog] = {}

        def __setstate__(self, state: dict) -> None:
            # Restored from tuner.pkl on --resume: write to the folder being resumed, which
            # may have been moved or copied since the callback was pickled.
            self.__dict__.update(state)
            self.folder = folders.resuming_folder() or self.folder

        def _log(self, trial) -> TrialLog:
            log = self.live.get(trial.trial_id)
            if log is None:
                old = self.disk.pop((p.experiment, trial.trial_id), None)
                log = old or TrialLog(p.experiment, trial.trial_id, dict(trial.config))
                self.live[trial.trial_id] = log
            log.live = trial.status
            return log

        def write(self, force: bool = False) -> None:
            if not force and time.monotonic() - self.last < self.every_s:
                return
            self.last = time.monotonic()
            try:
                write_tables(self.folder, *tables([*self.disk.values(), *self.live.values()], searched))
            except OSError as exc:  # disk full: the old tables stay whole; trials go on
                print(f"warning: tables not updated ({exc})", file=sys.stderr)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._log(trial).results.append(result)
            self.write()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._log(trial).live = "TERMINATED"
            self.write(force=True)
            prune_checkpoints(self.folder / "ray" / p.experiment / f"trial_{trial.trial_id}")

        def on_trial_error(self, iteration, trials, trial, **info):
            log = self._log(trial)
            log.live = "ERROR"
            log.error = str(getattr(trial, "error_msg", "") or "error").splitlines()[-1][:500]
            self.write(force=True)

    return LiveTables()


def prune_checkpoints(trial_dir: Path, keep: int = 1) -> None:
    """Delete all but the newest `keep` checkpoints of an ended trial (disk stays bounded)."""
    import shutil

    found = sorted(trial_dir.glob("checkpoint_*"))
    for old in found[:-keep] if keep else found:
        shutil.rmtree(old, ignore_errors=True)


def why_finished(p: Plan, grid, elapsed: float) -> str:
    """Why the experiment is over ('' when it was interrupted and can be resumed).

    From the ResultGrid's public counts: a trial that neither terminated nor errored (pending,
    running, paused when the search stopped) means it was interrupted; so does one that ended
    without error but whose last result is neither Tune's `done` (completed or stopped by the
    scheduler) nor the trial's own `finished`: after Ctrl-C a trial cut mid-run is listed as
    terminated."""
    total = len(grid)
    steps = p.spec.search.timestep_budget
    if steps is not None and spent_timesteps(grid) >= steps:
        return f"its time-step budget ({steps:,}) ran out"
    if grid.num_terminated + grid.num_errors < total:
        return ""
    if any(
        r.error is None and not ((r.metrics or {}).get("done") or (r.metrics or {}).get("finished"))
        for r in grid
    ):
        return ""
    budget = p.spec.search.time_budget_s
    if budget is not None and elapsed >= budget * 0.98:
        return "its time budget ran out"
    if not p.spec.uses_variant_generator and total < p.num_samples:
        return ""
    return f"all {total} trials ran"
