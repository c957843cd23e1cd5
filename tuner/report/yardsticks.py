"""The ablation's yardsticks: the article's cases, the common epoch/second/update budgets, and
every run's numbers on one loss column (the measures the claims in `tuner.report.claims` use).

Conventions: a NaN or +inf loss is a blow-up and counts as +inf; "spread" over seeds is the
min-max range; a gain is 1 - loss / zero-predictor loss (`tuner.report.heldout`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tuner.core.metrics import auc, final_finite_loss, losses_array, time_to_target
from tuner.report.heldout import RUNNING, TRAIN, VAL
from tuner.report.measures import (
    SPIKE_FACTOR,
    case_column,
    count_spikes,
    diverged_trials,
    final_stage,
    finished,
    loss_at,
    loss_at_seconds,
    mean_ratio_upto,
    roughness,
)
from tuner.report.text import fmt, fmt_spread

#: Names of the cases of the article's ablation, in the order the article presents them, then the
#: future-work extras. The ablation space file uses exactly these names in the ``case`` column.
CASES: tuple[str, ...] = (
    "sgd",
    "rmsprop",
    "adam",
    "rmsprop-clip",
    "adam-clip",
    "sgd-schedule",
    "adam-clip-schedule",
    "adam-adaptive-clip",
    "adagrad",
    "adadelta",
)


@dataclass(frozen=True)
class AblationSetup:
    """The common yardsticks every case of an ablation is measured with."""

    epoch: int
    """E: loss "after E epochs" uses the smallest, over cases, of the longest run of each case
    (diverged runs left out), so every case has runs that trained that long."""
    early_epoch: int
    """An early epoch, ceil(E / 5), for "early speed-up" claims: the end of the early window."""
    seconds: float
    """S: the same as E on the wall-clock axis (``train_time_s``); NaN without timings."""
    early_seconds: float
    """S / 5."""
    target: float
    """Target loss for time-to-target."""
    target_source: str
    """How the target was chosen, for the report."""
    factor: float = SPIKE_FACTOR
    """Spike factor (see count_spikes)."""
    updates: float = math.nan
    """U: the same as E on the optimizer-update axis (``updates``); NaN without the column."""
    early_updates: float = math.nan
    """End of the early window on the update axis: U / 5, or its start if that is later."""
    early_updates_from: float = 0.0
    """Start of that window: the first update count by which every run had been measured once
    (a run at N=100 chunks makes 100 updates before its first measured loss; counting it as the
    zero predictor until then would decide the claim on what was never measured)."""


def _ablation_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials that belong to a case, with ``case`` cleaned and ``trial_id`` as text."""
    case = case_column(trials)
    if case is None:
        return trials.iloc[0:0].assign(case=pd.Series(dtype=object))
    out = trials.assign(case=case, trial_id=trials["trial_id"].astype(str))
    return finished(out.dropna(subset=["case"]))


def _trial_epochs(epochs: pd.DataFrame, trial_ids: Iterable[str]) -> pd.DataFrame:
    """Epoch rows of the given trials, sorted by trial then epoch."""
    ids = set(map(str, trial_ids))
    e = epochs.assign(trial_id=epochs["trial_id"].astype(str))
    e = e[e["trial_id"].isin(ids)]
    return e.sort_values(["trial_id", "epoch"], kind="stable") if "epoch" in e else e


def _column(g: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric epochs column of one trial; NaN where the table lacks it."""
    if name not in g.columns:
        return np.full(len(g), np.nan)
    return pd.to_numeric(g[name], errors="coerce").to_numpy(dtype=float)


def _run_summaries(epochs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per trial: last epoch, time and update count, final finite ``column``, blow-up or not."""
    rows = []
    for trial_id, g in epochs.groupby("trial_id", sort=False):
        loss = losses_array(_column(g, column))
        time, updates = _column(g, "train_time_s"), _column(g, "updates")
        rows.append(
            {
                "trial_id": str(trial_id),
                "first_updates": float(updates[0]) if updates.size else math.nan,
                "last_epoch": float(pd.to_numeric(g["epoch"], errors="coerce").max()),
                "last_time": float(np.nanmax(time)) if np.isfinite(time).any() else math.nan,
                "last_updates": (float(np.nanmax(updates)) if np.isfinite(updates).any() else math.nan),
                "final_loss": final_finite_loss(loss),
                "blew_up": bool(loss.size and not math.isfinite(loss[-1])),
            }
        )
    cols = ["trial_id", "first_updates", "last_epoch", "last_time", "last_updates", "final_loss", "blew_up"]
    return pd.DataFrame(rows, columns=cols).set_index("trial_id")


def ablation_setup(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
    column: str = TRAIN,
) -> AblationSetup:
    """Choose E, S, U and the target loss for an ablation (see AblationSetup for the rules).

    The target is ``target_loss`` when given (the space file's ``search.target_loss``); otherwise
    the median over cases of their mean final ``column``. A target every case reaches in the
    first epochs (such as the baseline's final loss) would not tell fast settings from slow ones.
    """
    abl = _ablation_trials(trials)
    runs = _run_summaries(_trial_epochs(epochs, abl["trial_id"]), column)
    runs = runs.join(abl.set_index("trial_id")[["case"]], how="inner")
    diverged = runs["blew_up"] | runs.index.isin(abl.loc[diverged_trials(abl).to_numpy(), "trial_id"])
    healthy = runs[~diverged] if (~diverged).any() else runs

    def min_of_case_max(col: str) -> float:
        """Smallest over cases of the largest value of ``col`` among the case's runs."""
        per_case = healthy.groupby("case")[col].max()
        per_case = per_case[np.isfinite(per_case)]
        return float(per_case.min()) if len(per_case) else math.nan

    e = min_of_case_max("last_epoch")
    epoch = int(e) if math.isfinite(e) else 0
    seconds = min_of_case_max("last_time")
    updates = min_of_case_max("last_updates")
    first = healthy["first_updates"].to_numpy(float)
    u0 = float(np.nanmax(first)) if np.isfinite(first).any() else 0.0
    if target_loss is not None and math.isfinite(float(target_loss)):
        target, source = float(target_loss), "search.target_loss of study.yaml"
    else:
        means = runs.groupby("case")["final_loss"].mean()
        means = means[np.isfinite(means)]
        target = float(means.median()) if len(means) else math.nan
        source = (
            "the median over cases of their mean final loss: half the settings end "
            "below it, so the time to reach it separates fast from slow"
        )
    return AblationSetup(
        epoch=epoch,
        early_epoch=max(1, math.ceil(epoch / 5)) if epoch else 0,
        seconds=seconds,
        early_seconds=seconds / 5 if math.isfinite(seconds) else math.nan,
        target=target,
        target_source=source,
        factor=factor,
        updates=updates,
        early_updates=max(updates / 5, u0) if math.isfinite(updates) else math.nan,
        early_updates_from=u0,
    )


METRIC_COLUMNS = (
    "case",
    "loss_E",
    "gain_E",
    "loss_S",
    "gain_S",
    "early_epochs",
    "early_seconds",
    "early_updates",
    "t_target",
    "spikes",
    "roughness",
    "auc",
    "final_loss",
    "updates_E",
    "updates_early",
    "updates_total",
    "stage",
    "chunks",
)


def _run_metrics(g: pd.DataFrame, column: str, setup: AblationSetup, zero: float) -> dict:
    """One run's numbers on ``column`` (see trial_metrics)."""
    loss = _column(g, column)
    time, updates, epoch = _column(g, "train_time_s"), _column(g, "updates"), _column(g, "epoch")

    def early_gain(x: np.ndarray, upto: float, start: float = 0.0) -> float:
        return 1.0 - mean_ratio_upto(x, loss, upto, zero, start)

    def updates_by(e: int) -> float:
        done = updates[(epoch <= e) & np.isfinite(updates)]
        return float(done[-1]) if done.size else math.nan

    finite_updates = updates[np.isfinite(updates)]
    return {
        "t_target": time_to_target(time, loss, setup.target) if math.isfinite(setup.target) else math.nan,
        "spikes": float(count_spikes(loss, setup.factor)),
        "roughness": roughness(loss, zero),
        "auc": auc(loss),
        "final_loss": final_finite_loss(loss),
        # Epoch e's loss stands for the interval [e-1, e): the window is the mean of epochs 1..E/5.
        "early_epochs": early_gain(epoch - 1, float(setup.early_epoch)) if setup.early_epoch else math.nan,
        "early_seconds": early_gain(time, setup.early_seconds),
        "early_updates": early_gain(updates, setup.early_updates, setup.early_updates_from),
        "updates_E": updates_by(setup.epoch),
        "updates_early": updates_by(setup.early_epoch),
        "updates_total": float(finite_updates[-1]) if finite_updates.size else math.nan,
    }


def trial_metrics(
    trials: pd.DataFrame, epochs: pd.DataFrame, setup: AblationSetup, column: str = TRAIN, zero: float = 1.0
) -> pd.DataFrame:
    """The ablation's per-run numbers on the loss ``column``, one row per finished trial that has
    a case; ``zero`` is the zero predictor's loss on that column's part of the data.

    Index trial_id; columns (METRIC_COLUMNS): ``case``, ``loss_E``/``gain_E`` after
    ``setup.epoch`` epochs (gain = 1 - loss / zero), ``loss_S``/``gain_S`` after
    ``setup.seconds``, the mean gain over the early window per epoch (``early_epochs``: epochs
    1..E/5), per second (``early_seconds``: 0..S/5) and per optimizer update (``early_updates``:
    0..U/5), see `mean_ratio_upto`; ``t_target`` (seconds to ``setup.target``), ``spikes``,
    ``roughness`` (in units of ``zero``), ``auc``, ``final_loss`` (last finite), the optimizer
    updates made by epoch E, by E/5 and in all, ``stage`` and ``chunks`` at the last epoch.
    """
    abl = _ablation_trials(trials)
    e = _trial_epochs(epochs, abl["trial_id"])
    if e.empty:
        return pd.DataFrame(columns=list(METRIC_COLUMNS), index=pd.Index([], name="trial_id"))
    per = {str(t): _run_metrics(g, column, setup, zero) for t, g in e.groupby("trial_id", sort=False)}
    out = pd.DataFrame.from_dict(per, orient="index")
    out.index.name = "trial_id"
    out["loss_E"] = loss_at(e, setup.epoch, column=column) if setup.epoch else math.nan
    if math.isfinite(setup.seconds):
        out["loss_S"] = loss_at_seconds(e, setup.seconds, column=column)
    else:
        out["loss_S"] = math.nan
    out["gain_E"] = 1.0 - losses_array(out["loss_E"].to_numpy(float)) / zero
    out["gain_S"] = 1.0 - losses_array(out["loss_S"].to_numpy(float)) / zero
    out.loc[out["loss_E"].isna(), "gain_E"] = math.nan
    out.loc[out["loss_S"].isna(), "gain_S"] = math.nan
    out = out.join(final_stage(e))
    out = out.join(abl.set_index("trial_id")[["case"]], how="inner")
    return out[list(METRIC_COLUMNS)]


def case_values(metrics: pd.DataFrame, case: str, column: str) -> list[float]:
    """Per-seed values of ``column`` for one case (empty when the case was not run)."""
    return [float(v) for v in metrics.loc[metrics["case"] == case, column]]


def ordered_cases(names: Iterable[str]) -> list[str]:
    """Case names in the article's order (CASES), then any others alphabetically."""
    names = list(dict.fromkeys(names))
    known = [c for c in CASES if c in names]
    return known + sorted(c for c in names if c not in CASES)


def _updates_text(m: pd.DataFrame) -> str:
    """Optimizer updates per case, ``a/b`` when seeds differ."""
    values = sorted({int(v) for v in m if pd.notna(v) and math.isfinite(v)})
    return "/".join(f"{v:,}" for v in values) if values else "-"


def case_summary(readings: dict[str, pd.DataFrame], setup: AblationSetup) -> pd.DataFrame:
    """The ablation table: one row per case, every cell ``mean [min-max]`` over seeds as text.

    ``readings``: loss column -> trial_metrics on it (RUNNING, TRAIN and, with a hold-out, VAL).
    Columns: case, seeds, each loss after E epochs, the optimizer updates made by then, the
    held-out loss after S seconds, spikes per run of the running loss, final chunk counts.
    """
    base = readings[TRAIN]
    names = {RUNNING: "running train loss", TRAIN: "train loss", VAL: "held-out loss"}
    rows = []
    for case in ordered_cases(base["case"]):
        row: dict[str, object] = {"case": case, "seeds": int((base["case"] == case).sum())}
        for col, metrics in readings.items():
            m = metrics[metrics["case"] == case]
            row[f"{names[col]} after {setup.epoch} epochs"] = fmt_spread(m["loss_E"])
        m = base[base["case"] == case]
        row[f"updates by epoch {setup.epoch}"] = _updates_text(m["updates_E"])
        main = readings.get(VAL, base)
        row[f"{names[VAL if VAL in readings else TRAIN]} after {fmt(setup.seconds, 3)} s"] = fmt_spread(
            main.loc[main["case"] == case, "loss_S"]
        )
        spikes = readings.get(RUNNING, base)
        row[f"spikes per run (x{setup.factor:g})"] = fmt_spread(
            spikes.loc[spikes["case"] == case, "spikes"], 3
        )
        chunks = sorted({int(c) for c in m["chunks"] if pd.notna(c)})
        row["final chunks N"] = "/".join(map(str, chunks)) if chunks else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def readings(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    setup: AblationSetup,
    zero_train: float = 1.0,
    zero_val: float = 1.0,
) -> dict[str, pd.DataFrame]:
    """trial_metrics on every loss column epochs.csv has (RUNNING, TRAIN, VAL); VAL only when
    some run has a held-out loss."""
    out = {}
    for col, zero in ((RUNNING, zero_train), (TRAIN, zero_train), (VAL, zero_val)):
        if col in epochs.columns and pd.to_numeric(epochs[col], errors="coerce").notna().any():
            out[col] = trial_metrics(trials, epochs, setup, col, zero)
    return out
