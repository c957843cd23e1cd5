"""Generic measures of loss curves and trial tables (not specific to the article).

Plain arrays and pandas tables in the ``trials.csv`` / ``epochs.csv`` layout in, numbers and
tables out; nothing reads files or draws. A NaN or +inf loss is a blow-up and counts as +inf
(the rule of `tuner.core.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from tuner.core.metrics import losses_array
from tuner.report.text import fmt_value

#: Default spike factor: an epoch whose loss exceeds 1.5 x the best loss so far is in a spike.
SPIKE_FACTOR = 1.5

#: Trial statuses whose numbers are final (running/pending rows are partial, error rows are empty).
FINISHED_STATUSES = ("completed", "early_stopped", "diverged")


def count_spikes(losses: Iterable[float], factor: float = SPIKE_FACTOR) -> int:
    """Count the loss spikes of one run: upward excursions above ``factor`` x the running best.

    An epoch is *above* when its loss exceeds ``factor`` times the lowest loss of all earlier epochs
    (the running best, which excludes the epoch itself; the first epoch can never be above). A spike
    is one maximal run of consecutive epochs above: it is counted **once per excursion**, when it
    starts, however many epochs it lasts, because the article's "large spikes that stall training"
    are events, and one slow recovery should not count as many spikes. A NaN or +inf loss (a
    blow-up) is above, so a run that diverges after a finite start has at least one spike.

    Why relative to the running best rather than to the previous epoch: a noisy curve that wobbles
    by 10% around a plateau is not spiking, while a jump to 1.5x the best loss reached so far is
    training undoing its own progress.
    """
    if factor < 1.0:
        raise ValueError(f"count_spikes: factor must be >= 1, but got {factor}")
    spikes = 0
    best = math.inf
    inside = False
    for value in losses_array(losses):
        above = math.isfinite(best) and value > factor * best
        if above and not inside:
            spikes += 1
        inside = above
        if value < best:
            best = float(value)
    return spikes


def roughness(losses: Iterable[float], scale: float = 1.0) -> float:
    """Mean upward move of the loss per epoch step, in units of ``scale``: 0 for a curve that
    never rises.

    A measure of how unstable training is: every rise of the loss from one epoch to the next adds
    (new - old) / scale, falls add nothing, and the sum is divided by the number of steps so runs
    of different lengths compare. ``scale`` is the zero predictor's loss, so 0.01 means the loss
    climbed back 1% of the whole range between "predict nothing" and "perfect" per epoch.

    Why not the log-ratio log10(new/old) (the former measure): the epoch-to-epoch wobble of this
    model's loss does not shrink with the loss, so a log-ratio counts the same wobble five times
    more at loss 0.2 than at 1.0, and the settings that reach a lower loss looked rougher for it.
    Rises on the loss's own scale count the same wobble the same at any level. A blow-up
    (NaN/inf after a finite loss) makes it +inf. Fewer than two epochs: 0.
    """
    x = losses_array(losses)
    if x.size < 2:
        return 0.0
    total = 0.0
    for old, new in pairwise(x):
        if not math.isfinite(old):
            continue
        if not math.isfinite(new):
            return math.inf
        total += max(new - old, 0.0)
    return total / (x.size - 1) / scale


def mean_ratio_upto(
    x: np.ndarray, loss: np.ndarray, upto: float, zero_loss: float, start: float = 0.0
) -> float:
    """Mean of loss / zero_loss over the axis interval [``start``, ``upto``]: the area under the
    early curve divided by its width, in units of the zero predictor's loss.

    ``x``: the cumulative axis at each epoch's end (epochs, seconds or optimizer updates), sorted;
    the loss of an epoch holds from its end until the next epoch ends (a step curve, as the loss
    is only measured at epoch ends), and before the first epoch ends the model counts as no better
    than predicting zero (ratio 1). A run that ended before ``upto`` keeps its last loss; one that
    blew up inside the window gives +inf. ``upto <= start``: the value at ``start``. 1 - the
    result is the mean gain over the window: "how much had it learnt, on average, early on",
    rather than one epoch's value.
    """
    if not (math.isfinite(upto) and math.isfinite(start)):
        return math.nan
    x = np.asarray(x, dtype=float)
    y = losses_array(loss) / zero_loss
    keep = ~np.isnan(x)
    x, y = x[keep], y[keep]
    before = np.flatnonzero(x <= start)
    first = float(y[before[-1]]) if before.size else 1.0
    if upto <= start:
        return first
    inside = (x > start) & (x < upto)
    edges = np.concatenate([[start], x[inside], [upto]])
    values = np.concatenate([[first], y[inside]])
    widths = np.diff(edges)
    if np.isinf(values[widths > 0]).any():
        return math.inf
    return float(np.sum(values * widths) / (upto - start))


def _loss_at_axis(x: np.ndarray, loss: np.ndarray, at: float, hold_last: bool) -> float:
    """Loss of the last epoch completed by ``at`` on axis ``x`` (sorted ascending); see loss_at."""
    done = np.flatnonzero(x <= at)
    if done.size == 0:
        return math.nan
    i = int(done[-1])
    if x[i] == at or i < x.size - 1:
        return float(loss[i])
    # The run ended before `at`.
    if not math.isfinite(loss[-1]):
        return math.inf  # it diverged: stays infinitely bad
    return float(loss[-1]) if hold_last else math.nan


def _per_trial(
    df_epochs: pd.DataFrame, axis: str, at: float, hold_last: bool, column: str = "train_loss"
) -> pd.Series:
    """Apply `_loss_at_axis` to every trial of an epochs table; a Series indexed by trial_id."""
    out: dict[str, float] = {}
    if axis not in df_epochs.columns or column not in df_epochs.columns:
        return pd.Series({str(t): math.nan for t in df_epochs["trial_id"].unique()}, dtype=float, name="loss")
    for trial_id, rows in df_epochs.groupby("trial_id", sort=False):
        rows = rows.sort_values("epoch") if "epoch" in rows.columns else rows
        x = pd.to_numeric(rows[axis], errors="coerce").to_numpy(dtype=float)
        y = losses_array(pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float))
        keep = ~np.isnan(x)
        out[str(trial_id)] = _loss_at_axis(x[keep], y[keep], at, hold_last)
    return pd.Series(out, dtype=float, name="loss")


def loss_at(
    df_epochs: pd.DataFrame, epoch: int, hold_last: bool = False, column: str = "train_loss"
) -> pd.Series:
    """``column`` (a loss) of every trial after ``epoch`` epochs, as a Series indexed by trial_id.

    A trial that diverged before ``epoch`` gets +inf (it stays infinitely bad). A trial that stopped
    earlier without diverging (early-stopped) gets NaN unless ``hold_last``, in which case it keeps
    its last loss: by default a comparison "after E epochs" only uses runs that trained E epochs.
    """
    return _per_trial(df_epochs, "epoch", float(epoch), hold_last, column)


def loss_at_seconds(
    df_epochs: pd.DataFrame, seconds: float, hold_last: bool = True, column: str = "train_loss"
) -> pd.Series:
    """Loss of every trial after ``seconds`` of training (``train_time_s``), indexed by trial_id.

    The loss is that of the last epoch finished by then (the loss is only measured at epoch ends);
    NaN when not even the first epoch had finished. A trial whose training ended earlier keeps its
    last loss by default (it is done: that is the model it has at that time), or +inf if it
    diverged.
    """
    return _per_trial(df_epochs, "train_time_s", float(seconds), hold_last, column)


def final_stage(df_epochs: pd.DataFrame) -> pd.DataFrame:
    """The schedule stage and chunk count of every trial's last epoch (index trial_id).

    Columns ``stage`` and ``chunks`` (NaN where the epochs table lacks the column). Tells whether a
    schedule reached the whole-series stage (chunks = 1) before training ended.
    """
    rows = []
    for trial_id, g in df_epochs.groupby("trial_id", sort=False):
        last = g.sort_values("epoch").iloc[-1] if "epoch" in g.columns else g.iloc[-1]
        rows.append(
            {
                "trial_id": str(trial_id),
                "stage": pd.to_numeric(last.get("stage", math.nan), errors="coerce"),
                "chunks": pd.to_numeric(last.get("chunks", math.nan), errors="coerce"),
            }
        )
    return pd.DataFrame(rows, columns=["trial_id", "stage", "chunks"]).set_index("trial_id")


def stage_changes(trial_epochs: pd.DataFrame) -> pd.DataFrame:
    """Epochs of one trial at which the schedule moved to a new stage.

    A change is an epoch whose ``stage`` (or, without that column, ``chunks``) differs from the
    previous epoch's. Returns columns ``epoch``, ``train_time_s``, ``chunks_from``, ``chunks_to``
    (NaN where unknown); empty when the schedule never moved or the columns are absent.
    """
    columns = ["epoch", "train_time_s", "chunks_from", "chunks_to"]
    key = "stage" if "stage" in trial_epochs.columns else "chunks"
    if key not in trial_epochs.columns or trial_epochs.empty:
        return pd.DataFrame(columns=columns)
    g = trial_epochs.sort_values("epoch") if "epoch" in trial_epochs.columns else trial_epochs
    marker = pd.to_numeric(g[key], errors="coerce") if key == "chunks" else g[key].astype(object)
    changed = (marker != marker.shift()) & marker.shift().notna() & marker.notna()
    chunks = (
        pd.to_numeric(g["chunks"], errors="coerce")
        if "chunks" in g.columns
        else pd.Series(math.nan, index=g.index)
    )
    out = pd.DataFrame(
        {
            "epoch": pd.to_numeric(g["epoch"], errors="coerce") if "epoch" in g else math.nan,
            "train_time_s": (
                pd.to_numeric(g["train_time_s"], errors="coerce") if "train_time_s" in g else math.nan
            ),
            "chunks_from": chunks.shift(),
            "chunks_to": chunks,
        }
    )
    return out[changed.to_numpy()].reset_index(drop=True)


def diverged_trials(trials: pd.DataFrame, objective_col: str = "objective") -> pd.Series:
    """Boolean Series aligned to ``trials``: True for the trials that diverged.

    A trial counts as diverged when its status says so or when its objective is +inf (the value
    the search stores for a diverged run), so the count is right even without a status column.
    """
    flag = pd.Series(False, index=trials.index)
    if "status" in trials.columns:
        flag |= trials["status"].astype(str).str.strip().str.lower() == "diverged"
    if objective_col in trials.columns:
        flag |= np.isinf(pd.to_numeric(trials[objective_col], errors="coerce"))
    return flag


def is_seed_key(key: str) -> bool:
    """Seeds are searched (varied) but are not hyperparameters: no edges, no axis plot."""
    return key == "seed" or key.endswith(".seed")


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The searched-key columns of a trials table: every dotted column name, in file order."""
    return [c for c in trials.columns if "." in str(c)]


def case_column(trials: pd.DataFrame) -> pd.Series | None:
    """The ``case`` column with blank entries as NaN, or None when no trial has a case."""
    if "case" not in trials.columns:
        return None
    case = trials["case"].astype(object).where(trials["case"].notna())
    case = case.map(lambda v: v.strip() if isinstance(v, str) else v)
    case = case.where(case.map(lambda v: isinstance(v, str) and v != ""))
    return case if case.notna().any() else None


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials whose numbers are final: completed, early_stopped, diverged (all without status)."""
    if "status" not in trials.columns:
        return trials
    status = trials["status"].astype(str).str.strip().str.lower()
    return trials[status.isin(FINISHED_STATUSES)]


def setting_key(row: pd.Series, columns: Sequence[str]) -> str:
    """A readable ``key=value, ...`` label of one trial's configuration (blank values skipped)."""
    parts = []
    for c in columns:
        v = row.get(c)
        if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v):
            continue
        parts.append(f"{c}={fmt_value(v)}")
    return ", ".join(parts)


def best_rows(trials: pd.DataFrame, metric_col: str, mode: str = "min", k: int = 1) -> pd.DataFrame:
    """The ``k`` trials with the best finite ``metric_col`` (lowest for mode min), best first."""
    if metric_col not in trials.columns:
        return trials.iloc[0:0]
    values = pd.to_numeric(trials[metric_col], errors="coerce")
    ok = trials[np.isfinite(values)].assign(_metric=values[np.isfinite(values)])
    ok = ok.sort_values("_metric", ascending=(str(mode).lower() != "max"), kind="stable")
    return ok.drop(columns="_metric").head(k)


def rank_settings(trials: pd.DataFrame, objective_col: str = "objective") -> pd.DataFrame:
    """One row per setting, best mean objective first.

    A setting is a ``case`` when the table has cases, else one configuration (all searched keys
    except seeds), so repeated seeds of one configuration pool together. Columns: ``setting``
    (the case name or the best trial's id), ``config`` (``key=value`` text, seeds left out),
    ``n`` (finished trials), ``mean``/``min``/``max`` of the objective (a diverged seed makes the
    mean +inf), ``values`` (the list), ``best_trial``. Only finished trials count.
    """
    cols = ["setting", "config", "n", "mean", "min", "max", "values", "best_trial"]
    done = finished(trials)
    if done.empty or objective_col not in done.columns:
        return pd.DataFrame(columns=cols)
    done = done.assign(_obj=losses_array(pd.to_numeric(done[objective_col], errors="coerce")))
    keys = [c for c in config_columns(done) if not is_seed_key(c)]
    case = case_column(done)
    if case is not None:
        done = done.assign(_group=case).dropna(subset=["_group"])
    else:
        done = done.assign(_group=[setting_key(r, keys) for _, r in done.iterrows()])
    rows = []
    for group, g in done.groupby("_group", sort=False):
        g = g.sort_values("_obj", kind="stable")
        values = g["_obj"].to_numpy(dtype=float)
        best = g.iloc[0]
        rows.append(
            {
                "setting": str(group) if case is not None else str(best.get("trial_id", group)),
                "config": setting_key(best, keys),
                "n": len(g),
                "mean": float(np.mean(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
                "values": list(values),
                "best_trial": str(best.get("trial_id", "")),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["mean", "min"], kind="stable").reset_index(drop=True)
