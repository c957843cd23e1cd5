"""The `search:` and `resources:` sections of a space file, as typed frozen dataclasses.

They are built by the same machinery as the run config (`tuner.core.config.build`: known keys
with the nearest name suggested, values coerced to their annotations, YAML 1.1 numbers
accepted, `__post_init__` range checks), so a space file has one validator. They live here, not
in the core, because they describe the search service, which the training core knows nothing of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal
from collections.abc import Mapping

from tuner.core import config as cfg
from tuner.core.config import SEED_LIMIT, ConfigError, bounded, check, suggest
from tuner.core.yamlio import short
from tuner.objectives import OBJECTIVES, renamed_hint

SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "fifo": (),
    "asha": ("time_attr", "grace_period", "reduction_factor", "max_t"),
    "median": ("time_attr", "grace_period"),
    "pbt": ("time_attr", "perturbation_interval"),
}
"""The scheduler keys each scheduler type uses (besides `type`); others are an error."""


@dataclass(frozen=True)
class SchedulerSpec:
    """The Tune trial scheduler. Which fields a type uses: see SCHEDULER_KEYS."""

    type: Literal["fifo", "asha", "median", "pbt"] = "fifo"
    """fifo (none), asha, median (median stopping rule) or pbt (population based training)."""
    time_attr: Literal["timesteps", "time_total_s", "training_iteration"] = "training_iteration"
    """The result field that measures progress: timesteps, time_total_s or training_iteration
    (= epochs)."""
    grace_period: float = 1.0
    """asha/median: no trial is stopped before this much `time_attr`."""
    reduction_factor: float = 3.0
    """asha: keep 1/reduction_factor of the trials at each rung."""
    max_t: float | None = None
    """asha: the most `time_attr` a trial gets; None = the trial's own budget (max_epochs)."""
    perturbation_interval: float = 5.0
    """pbt: exploit/explore every this much `time_attr`."""

    def __post_init__(self) -> None:
        p = "search.scheduler."
        check(self.grace_period > 0, p + "grace_period", self.grace_period, "a number > 0")
        check(self.reduction_factor > 1, p + "reduction_factor", self.reduction_factor, "a number > 1")
        check(
            self.max_t is None or self.max_t > self.grace_period,
            p + "max_t",
            self.max_t,
            f"a number > grace_period = {self.grace_period:g} or null",
        )
        check(
            self.perturbation_interval > 0,
            p + "perturbation_interval",
            self.perturbation_interval,
            "a number > 0",
        )


@dataclass(frozen=True)
class SearchSpec:
    """How the space is searched: algorithm, objective, scheduler, budget and start points."""

    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    """optuna (OptunaSearch with `sampler`), random (OptunaSearch with Optuna's RandomSampler)
    or grid (Tune's variant generator, every `choice` expanded as a grid)."""
    sampler: Literal["tpe", "qmc", "random", "cmaes", "gp"] = "tpe"
    """Optuna sampler: tpe, qmc, random, cmaes or gp (only used with algorithm optuna)."""
    metric: Literal["train_loss", "best_train_loss", "val_loss", "best_val_loss", "auc", "time_to_target"] = (
        "train_loss"
    )
    """The objective (`tuner.objectives.OBJECTIVES`): train_loss, best_train_loss, val_loss,
    best_val_loss, auc or time_to_target."""
    mode: Literal["min", "max"] = "min"
    """min or max."""
    target_loss: float | None = None
    """The loss to reach; required by metric time_to_target."""
    target_unit: Literal["seconds", "timesteps"] = "seconds"
    """time_to_target in seconds or timesteps."""
    num_samples: int = 16
    """Trials (optuna/random); for grid, passes over the whole grid (default 1 there). Start
    points run in addition."""
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    max_concurrent: int = 2
    """Trials running at once (Tune starts one at a time without a limit)."""
    time_budget_s: float | None = None
    """Wall-clock budget of the whole search; None = unlimited."""
    timestep_budget: int | None = None
    """Compute budget of the whole search: it stops once its trials have trained this many time
    steps in all (as they report them), the same work on any machine, unlike time_budget_s, so
    strategies compared under it spend equal compute. None = unlimited. Counted per run of the
    command: a --resume counts the trials it runs, an --extend its new trials."""
    seed: int = bounded(0, 0, SEED_LIMIT)
    """Seed of the searcher / variant generator."""
    checkpoint_every: int = 5
    """Epochs between trial checkpoints."""
    max_failures: int = 2
    """Retries of a failed trial from its last checkpoint (FailureConfig)."""
    mlflow: str | None = None
    """MLflow tracking: null or false (off), true (= "local": mlflow.db in the study folder) or
    a tracking URI; `--mlflow [URI]` overrides it."""
    start_from: tuple[dict[str, Any], ...] = ()
    """Settings evaluated first, in order, before the searcher's own suggestions (a warm start:
    what is already known to work). Each is a mapping of searched keys (dotted, like a `case`
    entry) to values inside their distributions, one value for every searched key whose
    condition holds. A study that is resumed or extended does not run them again."""

    def __post_init__(self) -> None:
        p = "search."
        check(self.num_samples >= 1, p + "num_samples", self.num_samples, "an integer >= 1")
        check(self.max_concurrent >= 1, p + "max_concurrent", self.max_concurrent, "an integer >= 1")
        check(
            self.time_budget_s is None or self.time_budget_s > 0,
            p + "time_budget_s",
            self.time_budget_s,
            "a number of seconds > 0 (null = unlimited)",
        )
        check(
            self.timestep_budget is None or self.timestep_budget >= 1,
            p + "timestep_budget",
            self.timestep_budget,
            "an integer >= 1 (time steps; null = unlimited)",
        )
        check(
            self.checkpoint_every >= 1,
            p + "checkpoint_every",
            self.checkpoint_every,
            "an integer >= 1 (epochs)",
        )
        check(self.max_failures >= 0, p + "max_failures", self.max_failures, "an integer >= 0")
        check(
            self.mlflow is None or bool(self.mlflow.strip()),
            p + "mlflow",
            self.mlflow,
            "true, false, null or an MLflow tracking URI",
        )


@dataclass(frozen=True)
class Resources:
    """Resources of one trial."""

    cpu: float = 1.0
    """CPUs per trial."""
    gpu: float = 0.0
    """GPUs per trial."""

    def __post_init__(self) -> None:
        check(self.cpu > 0, "resources.cpu", self.cpu, "a number > 0 (CPUs per trial)")
        check(self.gpu >= 0, "resources.gpu", self.gpu, "a number >= 0 (GPUs per trial)")


def _scheduler_keys(raw: Any) -> None:
    """Keys a scheduler type does not use are an error (config.build knows only unknown keys)."""
    if not isinstance(raw, Mapping):
        return  # build() says it is not a mapping
    kind = raw.get("type", "fifo")
    used = SCHEDULER_KEYS.get(kind) if isinstance(kind, str) else None
    if used is None:
        return  # build() rejects the type
    every = sorted({k for keys in SCHEDULER_KEYS.values() for k in keys})
    for key in raw:
        if key == "type":
            continue
        if key not in every:
            raise ConfigError(
                f"search.scheduler.{key}: unknown key{suggest(str(key), every)}; "
                f"allowed: type, {', '.join(used) or '(no other key for fifo)'}"
            )
        if key not in used:
            raise ConfigError(
                f"search.scheduler.{key}: not used by scheduler {kind}; "
                f"allowed: {', '.join(('type',) + used)}"
            )


def parse_search(raw: Mapping[str, Any]) -> tuple[SearchSpec, Any]:
    """The `search:` section -> (SearchSpec without start points, the raw `start_from`).

    Start points are checked against the searched params (see `format`), hence returned raw."""
    raw = dict(raw)
    if isinstance(raw.get("metric"), str) and renamed_hint(raw["metric"]):
        raise ConfigError(f"search.metric: {renamed_hint(raw['metric'])}; allowed: {', '.join(OBJECTIVES)}")
    start_from = raw.pop("start_from", None)
    if raw.get("algorithm") == "grid" and "num_samples" not in raw:
        raw["num_samples"] = 1  # a grid is run num_samples times over: one pass unless asked
    if raw.get("scheduler") is None:
        raw.pop("scheduler", None)
    mlflow = raw.get("mlflow")
    if mlflow is True or mlflow is False:
        raw["mlflow"] = "local" if mlflow else None
    elif mlflow is not None and not isinstance(mlflow, str):
        raise ConfigError(
            f"search.mlflow: got {short(mlflow)}; allowed: true, false, null or an MLflow tracking URI"
        )
    _scheduler_keys(raw.get("scheduler"))
    return cfg.build(SearchSpec, raw, "search."), start_from


def parse_resources(raw: Mapping[str, Any]) -> Resources:
    return cfg.build(Resources, raw, "resources.")


def search_document(search: SearchSpec) -> dict[str, Any]:
    """A SearchSpec back as its YAML section (the scheduler with only its type's keys)."""
    out = dataclasses.asdict(search)
    sched = search.scheduler
    out["scheduler"] = {"type": sched.type, **{k: getattr(sched, k) for k in SCHEDULER_KEYS[sched.type]}}
    out["start_from"] = [dict(point) for point in search.start_from]
    if not out["start_from"]:
        del out["start_from"]
    return out
