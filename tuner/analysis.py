"""Pure functions that turn a study's tables into the numbers a report states.

Everything here takes plain arrays or pandas tables (the ``trials.csv`` / ``epochs.csv`` layout of
``tuner.results``) and returns numbers, tables or text; nothing reads files, draws or imports Ray or
Optuna. Keeping the judgement (what counts as a spike, when a claim "holds") in one small, tested
place means the report only lays the results out, and the rules can be read and argued with here.

Conventions used throughout:

* A loss that is NaN or +inf is a blow-up: it counts as +inf (a diverged run is infinitely bad,
  never silently dropped).
* Lower is better for every loss-like number (the study's ``objective`` is the value minimised).
* "Spread" over seeds is the min-max range, not a standard deviation: with 3 seeds per setting a
  range is what the data can honestly show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Verdict = Literal["holds", "does not hold", "unclear"]

#: Verdict strings of the claims table.
HOLDS: Verdict = "holds"
DOES_NOT_HOLD: Verdict = "does not hold"
UNCLEAR: Verdict = "unclear"
#: Verdict of a claim whose cases were not run.
CASE_MISSING = "unclear (case missing)"

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
#: The article's baseline: SGD, lr 0.01, no clipping, the whole series in one chunk.
BASELINE_CASE = "sgd"

#: Default spike factor: an epoch whose loss exceeds 1.5 x the best loss so far is in a spike.
SPIKE_FACTOR = 1.5
#: Relative margin the means must differ by, on top of non-overlapping seed ranges.
VERDICT_MARGIN = 0.05
#: Share of a searched range, at each end, that counts as "near the edge".
EDGE_SHARE = 0.10
#: Trial statuses whose numbers are final (running/pending rows are partial, error rows are empty).
FINISHED_STATUSES = ("completed", "early_stopped", "diverged")

VERDICT_RULE = (
    'A claim "A is lower (better) than B" **holds** when the min-max ranges over seeds do not '
    "overlap (the worst seed of A is better than the best seed of B) and the means differ by more "
    f"than {VERDICT_MARGIN:.0%} of the larger mean; it **does not hold** when the same is true the "
    "other way round; otherwise it is **unclear** (the difference is within the seed spread). A "
    "diverged run counts as +inf. A claim made of several comparisons holds when all of them hold "
    "and does not hold when any of them does not; a claim whose cases were not run is "
    '"unclear (case missing)".'
)


# --------------------------------------------------------------------------------------------
# Curves of one run
# --------------------------------------------------------------------------------------------


def _losses(values: Iterable[float]) -> np.ndarray:
    """Losses as a float array with NaN turned into +inf (a NaN loss is a blow-up)."""
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    return np.where(np.isnan(x), np.inf, x)


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
    for value in _losses(losses):
        above = math.isfinite(best) and value > factor * best
        if above and not inside:
            spikes += 1
        inside = above
        if value < best:
            best = float(value)
    return spikes


def roughness(losses: Iterable[float]) -> float:
    """Mean upward move of log10(loss) per epoch step: 0 for a curve that never rises.

    A measure of how unstable training is: every rise of the loss from one epoch to the next adds
    log10(new/old) (a doubling adds 0.30), falls add nothing, and the sum is divided by the number
    of steps so runs of different lengths compare. A blow-up (NaN/inf after a finite loss) makes it
    +inf. Pairs with a non-positive loss (not a valid MSE) are skipped. Fewer than two epochs: 0.
    """
    x = _losses(losses)
    if x.size < 2:
        return 0.0
    total = 0.0
    for old, new in zip(x[:-1], x[1:], strict=True):
        if not math.isfinite(old):
            continue
        if not math.isfinite(new):
            return math.inf
        if old > 0 and new > old:
            total += math.log10(new / old)
    return total / (x.size - 1)


def time_to_target(times: Iterable[float], losses: Iterable[float], target: float) -> float:
    """The first value of ``times`` at which the loss is <= ``target``; ``inf`` when never reached.

    ``times`` is whatever axis the caller wants the answer in (cumulative seconds, epochs or time
    steps processed), one value per loss. NaN losses never reach a target.
    """
    t = np.asarray(list(times) if not isinstance(times, np.ndarray) else times, dtype=float)
    y = _losses(losses)
    if t.shape != y.shape:
        raise ValueError(f"time_to_target: {t.size} times but {y.size} losses")
    hits = np.flatnonzero(y <= target)
    return float(t[hits[0]]) if hits.size else math.inf


def auc(losses: Iterable[float]) -> float:
    """Mean loss over the run (the area under the loss-per-epoch curve divided by its length).

    One number for "how low was the loss on average while training", which rewards fast early
    progress as well as a low end point. A blow-up makes it +inf; an empty run gives NaN.
    """
    y = _losses(losses)
    return float(np.mean(y)) if y.size else math.nan


def final_finite_loss(losses: Iterable[float]) -> float:
    """The last finite loss of a run (the loss before a blow-up); NaN when there is none."""
    y = _losses(losses)
    finite = y[np.isfinite(y)]
    return float(finite[-1]) if finite.size else math.nan


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


def _per_trial(df_epochs: pd.DataFrame, axis: str, at: float, hold_last: bool) -> pd.Series:
    """Apply `_loss_at_axis` to every trial of an epochs table; a Series indexed by trial_id."""
    out: dict[str, float] = {}
    if axis not in df_epochs.columns:
        return pd.Series(
            {str(t): math.nan for t in df_epochs["trial_id"].unique()}, dtype=float, name="loss"
        )
    for trial_id, rows in df_epochs.groupby("trial_id", sort=False):
        rows = rows.sort_values("epoch") if "epoch" in rows.columns else rows
        x = pd.to_numeric(rows[axis], errors="coerce").to_numpy(dtype=float)
        y = _losses(pd.to_numeric(rows["loss"], errors="coerce").to_numpy(dtype=float))
        keep = ~np.isnan(x)
        out[str(trial_id)] = _loss_at_axis(x[keep], y[keep], at, hold_last)
    return pd.Series(out, dtype=float, name="loss")


def loss_at(df_epochs: pd.DataFrame, epoch: int, hold_last: bool = False) -> pd.Series:
    """Loss of every trial after ``epoch`` epochs, as a Series indexed by trial_id.

    A trial that diverged before ``epoch`` gets +inf (it stays infinitely bad). A trial that stopped
    earlier without diverging (early-stopped) gets NaN unless ``hold_last``, in which case it keeps
    its last loss: by default a comparison "after E epochs" only uses runs that trained E epochs.
    """
    return _per_trial(df_epochs, "epoch", float(epoch), hold_last)


def loss_at_seconds(df_epochs: pd.DataFrame, seconds: float, hold_last: bool = True) -> pd.Series:
    """Loss of every trial after ``seconds`` of training (``train_time_s``), indexed by trial_id.

    The loss is that of the last epoch finished by then (the loss is only measured at epoch ends);
    NaN when not even the first epoch had finished. A trial whose training ended earlier keeps its
    last loss by default (it is done: that is the model it has at that time), or +inf if it
    diverged.
    """
    return _per_trial(df_epochs, "train_time_s", float(seconds), hold_last)


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
                pd.to_numeric(g["train_time_s"], errors="coerce")
                if "train_time_s" in g
                else math.nan
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


# --------------------------------------------------------------------------------------------
# Search space: edges of ranges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericRange:
    """The numeric extent of one searched key, as declared in the space file."""

    low: float
    high: float
    log: bool
    """Positions along the range are measured in log space (loguniform, log ints, wide grids)."""
    discrete_values: tuple[float, ...] | None = None
    """For ``choice``/``grid`` keys: the values tried (edge = the smallest/largest of them)."""


def is_seed_key(key: str) -> bool:
    """Seeds are searched (varied) but are not hyperparameters: no edges, no axis plot."""
    return key == "seed" or key.endswith(".seed")


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not bool), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def numeric_range(spec: Any) -> NumericRange | None:
    """Parse one ``space`` entry into a numeric range; None for categorical or unknown entries.

    Understands ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{int: [lo, hi]}`` (log scale
    with ``log: true``), and ``{choice: [...]}`` / ``{grid: [...]}`` when every value is a number
    and at least three distinct values were tried (with two, one is always "at the edge"). A set
    of positive numbers spanning two decades or more is read on a log scale. Other keys in the
    entry (``if``, ``step``, ...) are ignored.
    """
    if not isinstance(spec, Mapping):
        return None
    log_flag = bool(spec.get("log", False))
    for name, args in spec.items():
        name = str(name).lower()
        if name in ("if", "log", "step", "q", "base"):
            continue
        if name in ("choice", "grid", "grid_search"):
            if not isinstance(args, Sequence) or isinstance(args, str):
                return None
            numbers = [_number(v) for v in args]
            if any(n is None for n in numbers):
                return None
            distinct = tuple(sorted({float(n) for n in numbers if n is not None}))
            if len(distinct) < 3:
                return None
            lo, hi = distinct[0], distinct[-1]
            log = lo > 0 and hi / lo >= 100.0
            return NumericRange(lo, hi, log, distinct)
        if isinstance(args, Mapping):
            bounds = [args.get("low", args.get("lower")), args.get("high", args.get("upper"))]
            log_flag = log_flag or bool(args.get("log", False))
        elif isinstance(args, Sequence) and not isinstance(args, str) and len(args) >= 2:
            bounds = list(args[:2])
        else:
            return None
        lo_n, hi_n = _number(bounds[0]), _number(bounds[1])
        if lo_n is None or hi_n is None or hi_n <= lo_n:
            return None
        log = log_flag or "log" in name
        if log and lo_n <= 0:
            log = False
        return NumericRange(lo_n, hi_n, log)
    return None


def range_position(value: float, rng: NumericRange) -> float:
    """Where ``value`` sits in ``rng``: 0 at the low end, 1 at the high end (log space if log)."""
    if rng.log:
        return (math.log(value) - math.log(rng.low)) / (math.log(rng.high) - math.log(rng.low))
    return (value - rng.low) / (rng.high - rng.low)


def best_rows(trials: pd.DataFrame, metric_col: str, mode: str = "min", k: int = 1) -> pd.DataFrame:
    """The ``k`` trials with the best finite ``metric_col`` (lowest for mode min), best first."""
    if metric_col not in trials.columns:
        return trials.iloc[0:0]
    values = pd.to_numeric(trials[metric_col], errors="coerce")
    ok = trials[np.isfinite(values)].assign(_metric=values[np.isfinite(values)])
    ok = ok.sort_values("_metric", ascending=(str(mode).lower() != "max"), kind="stable")
    return ok.drop(columns="_metric").head(k)


def edge_warnings(
    trials_df: pd.DataFrame,
    space: Mapping[str, Any],
    metric_col: str = "objective",
    top_k: int = 5,
    mode: str = "min",
) -> list[str]:
    """Warn for every searched numeric key whose best value lies near the edge of its range.

    The rule (Deep Learning Tuning Playbook): when the best trial's value lies in the outer
    ``EDGE_SHARE`` (10%) of the searched range at either end (measured in log space for loguniform
    ranges, log ints and wide numeric grids), the optimum may lie outside the range, so the range
    should be widened on that side. For ``choice``/``grid`` numeric keys the edge is the smallest
    or largest value tried. Seeds are skipped; so is a key the best trial does not have (a
    conditional parameter that was inactive). Each message also says how many of the ``top_k``
    best trials sit at the same edge, a hint of how strong the pull is.
    """
    best = best_rows(trials_df, metric_col, mode, k=max(1, top_k))
    if best.empty:
        return []
    warnings: list[str] = []
    for key, spec in space.items():
        if is_seed_key(str(key)) or key not in trials_df.columns:
            continue
        rng = numeric_range(spec)
        if rng is None:
            continue
        values = pd.to_numeric(best[key], errors="coerce")
        value = values.iloc[0]
        if not np.isfinite(value) or (rng.log and value <= 0):
            continue

        def side(v: float, r: NumericRange = rng) -> str | None:
            """Which edge ``v`` is near, if any."""
            if not np.isfinite(v) or (r.log and v <= 0):
                return None
            pos = range_position(float(v), r)
            if pos <= EDGE_SHARE:
                return "lower"
            if pos >= 1.0 - EDGE_SHARE:
                return "upper"
            return None

        where = side(value)
        if where is None:
            continue
        same = sum(1 for v in values if side(v) == where)
        scale = " (log scale)" if rng.log else ""
        if rng.discrete_values is not None:
            tried = ", ".join(f"{v:g}" for v in rng.discrete_values)
            word = "smallest" if where == "lower" else "largest"
            more = "smaller" if where == "lower" else "larger"
            msg = f"{key}: best {value:.3g} is the {word} value tried ({tried}): add {more} values"
        else:
            msg = (
                f"{key}: best {value:.3g} is near the {where} edge of "
                f"[{rng.low:g}, {rng.high:g}]{scale}: widen the range"
            )
        if len(values) > 1:
            msg += f" ({same} of the best {len(values)} trials are near that edge)"
        warnings.append(msg)
    return warnings


# --------------------------------------------------------------------------------------------
# Settings (a case, or one configuration over seeds)
# --------------------------------------------------------------------------------------------


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
    done = done.assign(_obj=_losses(pd.to_numeric(done[objective_col], errors="coerce")))
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


# --------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------


def _clean(values: Iterable[float]) -> np.ndarray:
    """Seed values as floats; NaN (no measurement) dropped, +inf (diverged) kept."""
    x = np.asarray(list(values), dtype=float)
    return x[~np.isnan(x)]


def relative_gap(a: Iterable[float], b: Iterable[float]) -> float:
    """|mean(b) - mean(a)| as a share of the larger |mean|; 1 if exactly one mean is infinite."""
    xa, xb = _clean(a), _clean(b)
    if xa.size == 0 or xb.size == 0:
        return math.nan
    ma, mb = float(np.mean(xa)), float(np.mean(xb))
    if math.isinf(ma) or math.isinf(mb):
        return 0.0 if ma == mb else 1.0
    scale = max(abs(ma), abs(mb))
    return abs(mb - ma) / scale if scale > 0 else 0.0


def verdict_lower(
    a: Iterable[float], b: Iterable[float], margin: float = VERDICT_MARGIN
) -> Verdict:
    """Verdict on the claim "A is lower than B" from the per-seed values of A and B.

    Holds when every seed of A is below every seed of B (the min-max ranges do not overlap) and the
    means differ by more than ``margin`` of the larger mean; does not hold when the same is true
    the other way round; unclear otherwise, and when either side has no values. See VERDICT_RULE.
    """
    xa, xb = _clean(a), _clean(b)
    if xa.size == 0 or xb.size == 0:
        return UNCLEAR
    gap = relative_gap(xa, xb)
    if np.max(xa) < np.min(xb) and gap > margin:
        return HOLDS
    if np.max(xb) < np.min(xa) and gap > margin:
        return DOES_NOT_HOLD
    return UNCLEAR


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """All hold -> holds; any does not hold -> does not hold; otherwise unclear."""
    vs = list(verdicts)
    if not vs:
        return UNCLEAR
    if any(v == DOES_NOT_HOLD for v in vs):
        return DOES_NOT_HOLD
    if all(v == HOLDS for v in vs):
        return HOLDS
    return UNCLEAR


# --------------------------------------------------------------------------------------------
# Text formatting (shared by the claims table and the report)
# --------------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, "inf" for a blow-up, "-" for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def fmt_value(v: Any) -> str:
    """A config value for a ``key=value`` label: whole floats without ".0", floats to 4 digits."""
    if isinstance(v, (float, np.floating)):
        if float(v).is_integer():
            return str(int(v))
        return fmt(float(v))
    return str(v)


def fmt_spread(values: Iterable[float], digits: int = 4) -> str:
    """``mean [min-max]`` over seeds; just the value when all seeds agree; "-" when none."""
    x = _clean(values)
    if x.size == 0:
        return "-"
    lo, hi = fmt(float(np.min(x)), digits), fmt(float(np.max(x)), digits)
    if lo == hi:  # all seeds agree to the digits shown
        return lo
    return f"{fmt(float(np.mean(x)), digits)} [{lo}-{hi}]"


# --------------------------------------------------------------------------------------------
# The article's ablation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AblationSetup:
    """The common yardsticks every case of an ablation is measured with."""

    epoch: int
    """E: loss "after E epochs" uses the smallest, over cases, of the longest run of each case
    (diverged runs left out), so every case has runs that trained that long."""
    early_epoch: int
    """An early epoch, ceil(E / 5), for "early speed-up" claims."""
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


def _run_summaries(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per trial: last epoch, last time, final finite loss, whether the run ended in a blow-up."""
    rows = []
    for trial_id, g in epochs.groupby("trial_id", sort=False):
        loss = _losses(pd.to_numeric(g["loss"], errors="coerce").to_numpy(dtype=float))
        time = (
            pd.to_numeric(g["train_time_s"], errors="coerce").to_numpy(dtype=float)
            if "train_time_s" in g
            else np.full(len(g), np.nan)
        )
        rows.append(
            {
                "trial_id": str(trial_id),
                "last_epoch": float(pd.to_numeric(g["epoch"], errors="coerce").max()),
                "last_time": float(np.nanmax(time)) if np.isfinite(time).any() else math.nan,
                "final_loss": final_finite_loss(loss),
                "blew_up": bool(loss.size and not math.isfinite(loss[-1])),
            }
        )
    cols = ["trial_id", "last_epoch", "last_time", "final_loss", "blew_up"]
    return pd.DataFrame(rows, columns=cols).set_index("trial_id")


def ablation_setup(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
) -> AblationSetup:
    """Choose E, S and the target loss for an ablation (see AblationSetup for the rules).

    The target is ``target_loss`` when given (the space file's ``search.target_loss``); otherwise
    the median over cases of their mean final loss. A target every case reaches in the first
    epochs (such as the baseline's final loss) would not tell fast settings from slow ones.
    """
    abl = _ablation_trials(trials)
    runs = _run_summaries(_trial_epochs(epochs, abl["trial_id"]))
    runs = runs.join(abl.set_index("trial_id")[["case"]], how="inner")
    diverged = runs["blew_up"] | runs.index.isin(
        abl.loc[diverged_trials(abl).to_numpy(), "trial_id"]
    )
    healthy = runs[~diverged] if (~diverged).any() else runs

    def min_of_case_max(col: str) -> float:
        """Smallest over cases of the largest value of ``col`` among the case's runs."""
        per_case = healthy.groupby("case")[col].max()
        per_case = per_case[np.isfinite(per_case)]
        return float(per_case.min()) if len(per_case) else math.nan

    e = min_of_case_max("last_epoch")
    epoch = int(e) if math.isfinite(e) else 0
    seconds = min_of_case_max("last_time")
    if target_loss is not None and math.isfinite(float(target_loss)):
        target, source = float(target_loss), "search.target_loss of study.yaml"
    else:
        means = runs.groupby("case")["final_loss"].mean()
        means = means[np.isfinite(means)]
        target = float(means.median()) if len(means) else math.nan
        source = ("the median over cases of their mean final loss: half the settings end "
                  "below it, so the time to reach it separates fast from slow")
    return AblationSetup(
        epoch=epoch,
        early_epoch=max(1, math.ceil(epoch / 5)) if epoch else 0,
        seconds=seconds,
        early_seconds=seconds / 5 if math.isfinite(seconds) else math.nan,
        target=target,
        target_source=source,
        factor=factor,
    )


def trial_metrics(trials: pd.DataFrame, epochs: pd.DataFrame, setup: AblationSetup) -> pd.DataFrame:
    """The ablation's per-run numbers, one row per finished trial that has a case.

    Index trial_id; columns ``case``, ``loss_E`` (after ``setup.epoch`` epochs), ``loss_early``
    (after ``setup.early_epoch``), ``loss_S`` and ``loss_S_early`` (after ``setup.seconds`` and a
    fifth of it), ``t_target`` (seconds to ``setup.target``, inf if never), ``spikes``
    (count_spikes with ``setup.factor``), ``roughness``, ``auc``, ``final_loss`` (last finite),
    ``stage`` and ``chunks`` at the last epoch.
    """
    abl = _ablation_trials(trials)
    e = _trial_epochs(epochs, abl["trial_id"])
    cols = [
        "case",
        "loss_E",
        "loss_early",
        "loss_S",
        "loss_S_early",
        "t_target",
        "spikes",
        "roughness",
        "auc",
        "final_loss",
        "stage",
        "chunks",
    ]
    if e.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="trial_id"))
    per: dict[str, dict[str, float]] = {}
    for trial_id, g in e.groupby("trial_id", sort=False):
        loss = pd.to_numeric(g["loss"], errors="coerce").to_numpy(dtype=float)
        time = (
            pd.to_numeric(g["train_time_s"], errors="coerce").to_numpy(dtype=float)
            if "train_time_s" in g
            else np.full(len(g), np.nan)
        )
        per[str(trial_id)] = {
            "t_target": time_to_target(time, loss, setup.target)
            if math.isfinite(setup.target)
            else math.nan,
            "spikes": float(count_spikes(loss, setup.factor)),
            "roughness": roughness(loss),
            "auc": auc(loss),
            "final_loss": final_finite_loss(loss),
        }
    out = pd.DataFrame.from_dict(per, orient="index")
    out.index.name = "trial_id"
    out["loss_E"] = loss_at(e, setup.epoch) if setup.epoch else math.nan
    out["loss_early"] = loss_at(e, setup.early_epoch) if setup.early_epoch else math.nan
    if math.isfinite(setup.seconds):
        out["loss_S"] = loss_at_seconds(e, setup.seconds)
        out["loss_S_early"] = loss_at_seconds(e, setup.early_seconds)
    else:
        out["loss_S"] = math.nan
        out["loss_S_early"] = math.nan
    out = out.join(final_stage(e))
    out = out.join(abl.set_index("trial_id")[["case"]], how="inner")
    return out[cols]


def case_values(metrics: pd.DataFrame, case: str, column: str) -> list[float]:
    """Per-seed values of ``column`` for one case (empty when the case was not run)."""
    return [float(v) for v in metrics.loc[metrics["case"] == case, column]]


def ordered_cases(names: Iterable[str]) -> list[str]:
    """Case names in the article's order (CASES), then any others alphabetically."""
    names = list(dict.fromkeys(names))
    known = [c for c in CASES if c in names]
    return known + sorted(c for c in names if c not in CASES)


def case_summary(metrics: pd.DataFrame, setup: AblationSetup) -> pd.DataFrame:
    """The ablation table: one row per case, every cell ``mean [min-max]`` over seeds as text.

    Columns: case, seeds, loss after E epochs, loss after S seconds, seconds to target (with how
    many seeds reached it), spikes per run, final stage (the chunk counts at the last epoch).
    """
    rows = []
    for case in ordered_cases(metrics["case"]):
        m = metrics[metrics["case"] == case]
        reached = np.isfinite(m["t_target"].to_numpy(dtype=float))
        t = m["t_target"].to_numpy(dtype=float)
        t_text = fmt_spread(t[reached], 3) if reached.any() else "never"
        chunks = sorted({int(c) for c in m["chunks"] if pd.notna(c)})
        rows.append(
            {
                "case": case,
                "seeds": len(m),
                f"loss after {setup.epoch} epochs": fmt_spread(m["loss_E"]),
                f"loss after {fmt(setup.seconds, 3)} s": fmt_spread(m["loss_S"]),
                "seconds to target": f"{t_text} ({int(reached.sum())}/{len(m)} reached)",
                f"spikes per run (x{setup.factor:g})": fmt_spread(m["spikes"], 3),
                "final chunks N": "/".join(map(str, chunks)) if chunks else "-",
            }
        )
    return pd.DataFrame(rows)


def _mean_or_inf(values: Iterable[float]) -> float:
    """Mean of the measured values; +inf when there are none (sorts last)."""
    x = _clean(values)
    return float(np.mean(x)) if x.size else math.inf


def _measure(metrics: pd.DataFrame, column: str, cases: Sequence[str], what: str) -> str:
    """``case value [min-max]`` for each case, then what was measured (a time to a target that
    no seed reached reads "never")."""
    parts = []
    for c in cases:
        text = fmt_spread(case_values(metrics, c, column))
        parts.append(f"{c} {'never' if column == 't_target' and text == 'inf' else text}")
    return " vs ".join(parts) + f" ({what})"


def claims_table(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    setup: AblationSetup | None = None,
    *,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
) -> pd.DataFrame:
    """Check each claim of the 2019 article against the ablation's numbers.

    One row per claim, columns ``claim``, ``measured`` (the numbers, as text, mean [min-max] over
    seeds) and ``verdict`` (holds / does not hold / unclear, by VERDICT_RULE; "unclear (case
    missing)" when a case the claim needs was not run). ``setup`` defaults to
    ``ablation_setup(trials, epochs, target_loss, factor)``.

    Claims and their measures:
    1. RMSprop and Adam beat SGD; Adam beats RMSprop but spikes: loss after E epochs; spike count.
    2. Clipping removes the spikes (norm clip, and the text's adaptive reading) and stabilises
       training (roughness), and Adam keeps its lead (loss after E epochs, both clipped).
    3. The schedule gives SGD a large early speed-up: loss at the early epoch E/5, and after S/5 s.
    4. Adam + clipping + schedule is the most efficient of all: loss after S seconds vs every case.
    """
    setup = setup or ablation_setup(trials, epochs, target_loss, factor)
    metrics = trial_metrics(trials, epochs, setup)
    present = set(metrics["case"])
    at_e = f"loss after {setup.epoch} epochs"
    at_s = f"loss after {fmt(setup.seconds, 3)} s"
    spikes = f"spikes per run, factor {setup.factor:g}"
    rows: list[dict[str, str]] = []

    def add(claim: str, cases: Sequence[str], measure: Callable[[], tuple[str, str]]) -> None:
        """Append one claim row, or a case-missing row when a needed case was not run."""
        missing = [c for c in cases if c not in present]
        if missing:
            rows.append(
                {
                    "claim": claim,
                    "measured": "case missing: " + ", ".join(missing),
                    "verdict": CASE_MISSING,
                }
            )
            return
        measured, verdict = measure()
        rows.append({"claim": claim, "measured": measured, "verdict": verdict})

    def lower(better: str, worse: str, column: str, what: str) -> tuple[str, str]:
        """Claim "``better`` has a lower ``column`` than ``worse``"."""
        v = verdict_lower(case_values(metrics, better, column), case_values(metrics, worse, column))
        return _measure(metrics, column, [better, worse], what), v

    add(
        "1a. RMSprop beats SGD", ["rmsprop", "sgd"], lambda: lower("rmsprop", "sgd", "loss_E", at_e)
    )
    add("1b. Adam beats SGD", ["adam", "sgd"], lambda: lower("adam", "sgd", "loss_E", at_e))
    add(
        "1c. Adam beats RMSprop",
        ["adam", "rmsprop"],
        lambda: lower("adam", "rmsprop", "loss_E", at_e),
    )
    add(
        "1d. Adam shows loss spikes (more than RMSprop)",
        ["adam", "rmsprop"],
        lambda: lower("rmsprop", "adam", "spikes", spikes),
    )
    add(
        "2a. Clipping (global norm 1.0) removes Adam's spikes",
        ["adam-clip", "adam"],
        lambda: lower("adam-clip", "adam", "spikes", spikes),
    )
    add(
        "2b. Clipping removes RMSprop's spikes",
        ["rmsprop-clip", "rmsprop"],
        lambda: lower("rmsprop-clip", "rmsprop", "spikes", spikes),
    )
    add(
        "2c. Adaptive clipping (the text's reading: mean + 1 std) removes Adam's spikes",
        ["adam-adaptive-clip", "adam"],
        lambda: lower("adam-adaptive-clip", "adam", "spikes", spikes),
    )

    def stabilises() -> tuple[str, str]:
        """Roughness with clip below roughness without, for both Adam and RMSprop."""
        pairs = [("adam-clip", "adam"), ("rmsprop-clip", "rmsprop")]
        verdicts = [
            verdict_lower(
                case_values(metrics, a, "roughness"), case_values(metrics, b, "roughness")
            )
            for a, b in pairs
        ]
        text = "; ".join(_measure(metrics, "roughness", [a, b], "roughness") for a, b in pairs)
        return text + ": mean rise of log10 loss per epoch", combine_verdicts(verdicts)

    add(
        "2d. Clipping stabilises training (Adam and RMSprop)",
        ["adam-clip", "adam", "rmsprop-clip", "rmsprop"],
        stabilises,
    )
    add(
        "2e. With clipping, Adam keeps its lead over RMSprop",
        ["adam-clip", "rmsprop-clip"],
        lambda: lower("adam-clip", "rmsprop-clip", "loss_E", at_e),
    )

    def speedup(column: str, what: str) -> tuple[str, str]:
        """sgd-schedule lower than sgd on ``column``, with seconds-to-target for context."""
        text, verdict = lower("sgd-schedule", "sgd", column, what)
        ttt = _measure(metrics, "t_target", ["sgd-schedule", "sgd"], "seconds to target")
        return f"{text}; {ttt}", verdict

    add(
        "3a. The schedule gives SGD a large early speed-up (per epoch)",
        ["sgd-schedule", "sgd"],
        lambda: speedup("loss_early", f"loss after {setup.early_epoch} epochs"),
    )
    add(
        "3b. ... and per wall-clock second",
        ["sgd-schedule", "sgd"],
        lambda: speedup("loss_S_early", f"loss after {fmt(setup.early_seconds, 3)} s"),
    )

    def most_efficient() -> tuple[str, str]:
        """adam-clip-schedule lower loss after S seconds than every other case."""
        star = "adam-clip-schedule"
        others = [c for c in ordered_cases(present) if c != star]
        if not others:
            return "no other case to compare with", UNCLEAR
        mine = case_values(metrics, star, "loss_S")
        verdicts = {c: verdict_lower(mine, case_values(metrics, c, "loss_S")) for c in others}
        means = {c: _mean_or_inf(case_values(metrics, c, "loss_S")) for c in others}
        runner = min(others, key=lambda c: (means[c], c))
        text = _measure(metrics, "loss_S", [star, runner], at_s + "; the best other case shown")
        beaten = [c for c, v in verdicts.items() if v == DOES_NOT_HOLD]
        unclear = [c for c, v in verdicts.items() if v == UNCLEAR]
        if beaten:
            text += "; beaten by " + ", ".join(beaten)
        elif unclear:
            text += "; within the seed spread of " + ", ".join(unclear)
        ttt = _measure(metrics, "t_target", [star, runner], "seconds to target")
        return f"{text}; {ttt}", combine_verdicts(verdicts.values())

    add(
        "4. Adam + clipping + schedule is the most efficient of all",
        ["adam-clip-schedule"],
        most_efficient,
    )
    return pd.DataFrame(rows, columns=["claim", "measured", "verdict"])
