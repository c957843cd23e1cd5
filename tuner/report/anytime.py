"""The anytime curve: the best objective found so far against the compute spent so far.

This is the plot HPO work looks at first (Optuna's optimisation history, HPOBench's anytime
curves). It is drawn from a study's `trials.csv` and `epochs.csv` alone, so it works for every
search algorithm and scheduler, and for studies made by `benchmarks/`.

Every (trial, epoch) row is one point of compute. Trials run concurrently, so rows are put in the
order their epochs *ended on the wall clock*: by a `wall_time` column where the tables have one,
otherwise by replaying the study: each experiment's trials start in creation order on
`slots` workers (the study's `search.max_concurrent`), each as soon as a worker is free, and a
trial's epochs end at its start plus its cumulative epoch seconds. Compute is counted in time steps
and in training seconds (the sum over all trials, not the wall time). Experiments (`search`,
`extend-1`, ...) follow one another: an extension's curve starts where the previous one ended and
carries its best value.

Epochs whose value is not finite (a diverged trial's +inf, a missing held-out loss) spend compute
but never improve the curve. Pure pandas/numpy: no Ray, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# The one place that names epochs.csv columns (switch here when the columns are renamed).
EPOCH_VALUE = {
    "train_loss": "train_loss",
    "best_train_loss": "train_loss",
    "val_loss": "val_loss",
    "best_val_loss": "val_loss",
}
"""Objective -> the per-epoch column whose running best is that objective's anytime value."""
TRAIN_LOSS, VAL_LOSS = "train_loss", "val_loss"
"""The per-epoch training loss (a smoothed version ranks trials) and held-out loss columns."""
TIMESTEPS, SECONDS, UPDATES = "timesteps", "train_time_s", "updates"
"""Cumulative per-trial counters in epochs.csv."""
EPOCH_SECONDS, WALL_TIME = "epoch_time_s", "wall_time"
"""Seconds of one epoch; the wall-clock time an epoch ended (used for ordering when present)."""
AXES = {"timesteps": TIMESTEPS, "seconds": SECONDS}
"""Compute axes of the curve: its column name -> the cumulative epochs.csv counter summed."""
CURVE_COLUMNS = (
    "experiment",
    "trial_id",
    "epoch",
    "timesteps",
    "seconds",
    "value",
    "best",
    "warm",
    "improved",
)


def value_column(metric: str) -> str:
    """The epochs.csv column behind an objective; ValueError for objectives with no per-epoch value."""
    try:
        return EPOCH_VALUE[metric]
    except KeyError:
        raise ValueError(
            f"objective {metric!r} has no per-epoch value; allowed: {', '.join(EPOCH_VALUE)}"
        ) from None


def _increments(epochs: pd.DataFrame, column: str) -> pd.Series:
    """Per-epoch amounts from a per-trial cumulative counter (the first epoch counts whole)."""
    cum = epochs[column].astype(float)
    prev = cum.groupby(epochs["trial_id"]).shift(1).fillna(0.0)
    return (cum - prev).clip(lower=0.0)


def _replayed_end_times(epochs: pd.DataFrame, order: list[str], slots: int) -> pd.Series:
    """When each epoch ended if `order`'s trials ran on `slots` workers, each started when one was free."""
    seconds = epochs[EPOCH_SECONDS].astype(float).fillna(0.0)
    ends = pd.Series(np.nan, index=epochs.index)
    free = [0.0] * max(1, slots)
    for trial_id in order:
        rows = epochs.index[epochs["trial_id"] == trial_id]
        worker = int(np.argmin(free))
        times = free[worker] + seconds.loc[rows].cumsum()
        ends.loc[rows] = times
        if len(rows):
            free[worker] = float(times.iloc[-1])
    return ends


def _trial_order(trials: pd.DataFrame) -> list[str]:
    """Trial ids in the order the trials began: by trials.csv's `started` where every trial
    has one, else by Tune's `<prefix>_<5-digit index>` ids (grids, PBT; a searcher's ids are
    random hex, and tables written before `started` existed fall back to text order)."""
    ids = trials["trial_id"].astype(str)
    index = pd.to_numeric(ids.str.rsplit("_", n=1).str[-1], errors="coerce").fillna(np.inf)
    keys = [ids.to_numpy(), index.to_numpy()]  # np.lexsort: the last key sorts first
    if "started" in trials and pd.to_numeric(trials["started"], errors="coerce").notna().all():
        keys.append(pd.to_numeric(trials["started"]).to_numpy())
    return list(ids.iloc[np.lexsort(keys)])


def experiment_order(names: Iterable[str]) -> list[str]:
    """Experiment names in the order they ran: `search`, then `extend-1`, `extend-2`, ...
    (trials.csv is sorted best first, so its row order says nothing about it)."""

    def key(name: str) -> tuple[int, str]:
        _, _, k = name.partition("extend-")
        return (0 if name == "search" else int(k) if k.isdigit() else 10**9, name)

    return sorted(dict.fromkeys(map(str, names)), key=key)


def _same(cell: Any, want: Any) -> bool:
    """A trials.csv cell holds a start point's value (chunk lists are written "100,50,1";
    numbers to 9 significant digits)."""
    if isinstance(want, (list, tuple)):
        want = ",".join(map(str, want))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        try:
            return math.isclose(float(cell), float(want), rel_tol=1e-6)
        except (TypeError, ValueError):
            return False
    return str(cell).replace(" ", "").lower() == str(want).replace(" ", "").lower()


def warm_start_trials(trials: pd.DataFrame, start_from: Sequence[Mapping[str, Any]]) -> list[str]:
    """Trial ids of the warm-start points (`search.start_from`), in the points' order: for each
    point, the first experiment's trial whose searched values equal the point's (the earliest
    `started` if two do; an extension does not evaluate the points again). Matched by value,
    not by position: Tune may run a later suggestion before a point, and a searcher's trial ids
    are random. A point no trial matches is left out."""
    if not start_from or trials.empty:
        return []
    if "experiment" in trials:
        experiment = trials["experiment"].astype(str)
        trials = trials[experiment == experiment_order(experiment)[0]]
    rows = trials.set_index(trials["trial_id"].astype(str)).loc[_trial_order(trials)]
    found: list[str] = []
    for point in start_from:
        keys = [k for k in point if k in rows.columns]
        match = rows.index[[all(_same(row[k], point[k]) for k in keys) for _, row in rows.iterrows()]]
        free = [t for t in match if t not in found]
        if keys and free:
            found.append(free[0])
    return found


def anytime_curve(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    metric: str = "val_loss",
    mode: str = "min",
    slots: int = 1,
    start_from: Sequence[Mapping[str, Any]] = (),
) -> pd.DataFrame:
    """One row per (trial, epoch) in the order epochs ended, with the best value so far.

    Columns: experiment, trial_id, epoch, timesteps and seconds (cumulative over the study),
    value (the epoch's objective value), best (best finite value so far, NaN before the first),
    warm (the row belongs to a trial of a warm-start point, see `warm_start_trials`), improved
    (this row set a new best). `slots`: concurrent trials, used only when epochs have no
    `wall_time` column."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r}; allowed: min, max")
    column = value_column(metric)
    if "experiment" not in trials:
        trials = trials.assign(experiment="search")  # tables written before experiments existed
    experiments = experiment_order(trials["experiment"])
    warm = set(warm_start_trials(trials, start_from))
    frames = []
    for experiment in experiments:
        members = trials[trials["experiment"].astype(str) == experiment]
        order = _trial_order(members)
        part = epochs[epochs["trial_id"].astype(str).isin(order)].copy()
        part["trial_id"] = part["trial_id"].astype(str)
        part = part.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
        if WALL_TIME in part and part[WALL_TIME].notna().all():
            ended = part[WALL_TIME].astype(float)
        else:
            ended = _replayed_end_times(part, order, slots)
        rank = {t: i for i, t in enumerate(order)}
        part["_ended"], part["_rank"] = ended, part["trial_id"].map(rank)
        part["_dt"], part["_ds"] = _increments(part, TIMESTEPS), _increments(part, SECONDS)
        part = part.sort_values(["_ended", "_rank", "epoch"], kind="stable")
        part["warm"] = part["trial_id"].isin(warm)
        part["experiment"] = experiment
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    rows = pd.concat(frames, ignore_index=True)
    value = (
        pd.to_numeric(rows[column], errors="coerce").astype(float)
        if column in rows
        else pd.Series(np.nan, index=rows.index)
    )
    finite = value.where(np.isfinite(value))
    # cummin/cummax leave NaN where the input is NaN: carry the best forward through those rows.
    best = (finite.cummin() if mode == "min" else finite.cummax()).ffill()
    previous = best.shift(1)
    improved = best.notna() & (previous.isna() | (best != previous))
    return pd.DataFrame(
        {
            "experiment": rows["experiment"],
            "trial_id": rows["trial_id"],
            "epoch": rows["epoch"].astype(int),
            "timesteps": rows["_dt"].cumsum(),
            "seconds": rows["_ds"].cumsum(),
            "value": value,
            "best": best,
            "warm": rows["warm"].astype(bool),
            "improved": improved,
        }
    )


def best_at(curve: pd.DataFrame, budget: float, axis: str = "timesteps") -> float:
    """The best value once `budget` of `axis` was spent (rows ending within it); NaN if none."""
    inside = curve[curve[axis] <= budget + 1e-9]["best"].dropna()
    return float(inside.iloc[-1]) if len(inside) else math.nan


def compute_to_reach(
    curve: pd.DataFrame,
    target: float,
    axis: str = "timesteps",
    mode: str = "min",
    budget: float | None = None,
) -> float:
    """The compute (`axis`) at which the best value first reached `target`; +inf if never
    (or only after `budget`)."""
    reached = curve["best"] <= target if mode == "min" else curve["best"] >= target
    hits = curve.loc[reached.fillna(False), axis]
    if not len(hits) or (budget is not None and float(hits.iloc[0]) > budget + 1e-9):
        return math.inf
    return float(hits.iloc[0])


def study_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """(metric, mode, slots, start_from) of a study from its study.yaml document (defaults when
    absent); an objective with no per-epoch value (auc, time_to_target) falls back to the
    training loss."""
    search = (meta or {}).get("search") or {}
    metric = search.get("metric", TRAIN_LOSS)
    return {
        "metric": metric if metric in EPOCH_VALUE else TRAIN_LOSS,
        "mode": search.get("mode", "min"),
        "slots": int(search.get("max_concurrent") or 1),
        "start_from": list(search.get("start_from") or []),
    }


def study_curve(study_dir: str | Path, metric: str | None = None) -> pd.DataFrame:
    """The anytime curve of a study folder from its files alone (trials.csv, epochs.csv,
    study.yaml); `metric` defaults to the study's objective."""
    study_dir = Path(study_dir)
    path = study_dir / "study.yaml"
    settings = study_settings(yaml.safe_load(path.read_text()) if path.exists() else {})
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    epochs = pd.read_csv(study_dir / "epochs.csv", dtype={"trial_id": str})
    return anytime_curve(
        trials,
        epochs,
        metric or settings["metric"],
        settings["mode"],
        settings["slots"],
        settings["start_from"],
    )
