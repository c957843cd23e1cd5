"""The playbook's axis plot: the objective against each searched hyperparameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna.distributions as od
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tuner.report.claims import ordered_cases
from tuner.report.load import StudyFiles
from tuner.report.measures import (
    FINISHED_STATUSES,
    best_rows,
    case_column,
    config_columns,
    diverged_trials,
    is_seed_key,
)
from tuner.report.plots import LOG_DECADES, figure, span_decades
from tuner.report.ranges import numeric_range


def searched_keys(study: StudyFiles) -> list[str]:
    """Keys to plot the objective against: the space's keys and the dotted columns that vary
    (space order first), plus ``case`` for ablations; seeds left out."""
    trials = study.trials
    keys = [k for k in study.distributions if k in trials.columns]
    for c in config_columns(trials):
        if c not in keys and trials[c].dropna().astype(str).nunique() > 1:
            keys.append(c)
    keys = [k for k in keys if not is_seed_key(k) and k != "case"]
    if study.has_cases:
        keys.insert(0, "case")
    return keys


def is_log_key(study: StudyFiles, key: str, values: pd.Series) -> bool:
    """Log x axis: the space says log, or (no space entry) positive numbers over 2+ decades."""
    rng = numeric_range(study.distributions.get(key))
    if rng is not None:
        return rng.log
    x = values.to_numpy(dtype=float)
    return bool(np.all(x[np.isfinite(x)] > 0) and span_decades(x) >= 2)


def is_numeric_key(study: StudyFiles, key: str, values: pd.Series) -> bool:
    """A numeric axis unless the space declares a non-numeric choice or the values are text."""
    dist = study.distributions.get(key)
    if isinstance(dist, od.CategoricalDistribution) and numeric_range(dist) is None:
        return False
    numbers = pd.to_numeric(values, errors="coerce")
    return bool(len(values) and numbers.notna().all())


def _y_scale(finite: pd.Series) -> tuple[bool, float, tuple[float, float]]:
    """(log y?, where diverged trials are drawn, y limits) for the finite objectives."""
    ylog = bool(len(finite) and (finite > 0).all() and span_decades(finite) > LOG_DECADES)
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if ylog:
        decades = math.log10(hi / lo)
        return True, hi * 10 ** (0.12 * decades), (lo / 10 ** (0.05 * decades), hi * 10 ** (0.2 * decades))
    span = hi - lo if hi > lo else (abs(hi) or 1.0)
    return False, hi + 0.12 * span, (lo - 0.05 * span, hi + 0.2 * span)


def _x_positions(
    study: StudyFiles, ax: Axes, key: str, values: pd.Series, jitter: np.random.Generator
) -> np.ndarray:
    """x of each trial in one panel: the value (log axis, range shaded) or a jittered category."""
    if is_numeric_key(study, key, values) and key != "case":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        if is_log_key(study, key, values) and np.all(x[np.isfinite(x)] > 0):
            ax.set_xscale("log")
        rng = numeric_range(study.distributions.get(key))
        if rng is not None and rng.discrete_values is None:
            ax.axvspan(rng.low, rng.high, color="0.92", zorder=0)
        return x
    text = values.astype(str)
    dist = study.distributions.get(key)
    declared = [str(v) for v in dist.choices] if isinstance(dist, od.CategoricalDistribution) else []
    order = (
        ordered_cases(text)
        if key == "case"
        else [c for c in declared if c in set(text)] + sorted(set(text) - set(declared))
    )
    pos = {c: j for j, c in enumerate(order)}
    x = np.array([pos[t] for t in text], dtype=float) + jitter.uniform(-0.15, 0.15, len(text))
    ax.set_xticks(range(len(order)))
    rotate = len(order) > 4 or max((len(c) for c in order), default=0) > 8
    ax.set_xticklabels(order, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlim(-0.6, len(order) - 0.4)
    return x


def _scatter(ax: Axes, x: np.ndarray, sub: pd.DataFrame, div: np.ndarray, top: float, best_id: Any) -> None:
    """Dots for finished trials (hollow: early-stopped), red x at `top` for diverged, a star
    for the best trial."""
    y = sub["_obj"].to_numpy(dtype=float)
    early = (sub["_status"] == "early_stopped").to_numpy(dtype=bool)
    ok = ~div & ~early
    ax.scatter(x[ok], y[ok], s=22, color="tab:blue", alpha=0.75, label="finished")
    if early.any():
        m = early & ~div
        ax.scatter(x[m], y[m], s=22, facecolors="none", edgecolors="tab:blue", label="early-stopped")
    if div.any():
        ax.scatter(
            x[div], np.full(div.sum(), top), marker="x", color="red", s=40, label="diverged (drawn at top)"
        )
    b = (sub["trial_id"] == best_id).to_numpy(dtype=bool)
    if best_id is not None and b.any():
        ax.scatter(
            x[b], y[b], marker="*", s=180, color="gold", edgecolors="black", zorder=5, label="best trial"
        )


def _shared_legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend below all panels, each label once."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="outside lower center",
            ncol=len(handles),
            frameon=False,
        )


def plot_axes(study: StudyFiles, keys: Sequence[str]) -> Figure:
    """Objective against each searched key, one panel per key.

    Finished trials are dots (hollow when early-stopped), the best trial a gold star; diverged
    trials (objective +inf) are red x drawn at the top edge of each panel, since they have no
    finite value to plot. Log x for log ranges, categories for categorical keys.
    """
    trials = study.trials.copy()
    trials["_obj"] = pd.to_numeric(trials[study.objective], errors="coerce")
    if "status" in trials.columns:
        status = trials["status"].astype(str).str.lower()
        trials = trials[status.isin(FINISHED_STATUSES)]
    else:
        status = pd.Series("completed", index=trials.index)
    trials["_status"] = status.reindex(trials.index)
    div = diverged_trials(trials, study.objective) | ~np.isfinite(trials["_obj"])
    ylog, top, ylim = _y_scale(trials["_obj"][~div])
    best = best_rows(trials, "_obj", k=1)
    best_id = best["trial_id"].iloc[0] if len(best) else None

    n = max(1, len(keys))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = figure(nrows, ncols, figsize=(9.0, max(3.4 * nrows, 4.0)), sharey=True)
    jitter = np.random.default_rng(0)
    for i, key in enumerate(keys):
        ax = axes[i // ncols, i % ncols]
        sub = trials[trials[key].notna()] if key in trials.columns else trials.iloc[0:0]
        if key == "case":
            sub = sub.assign(case=case_column(sub)).dropna(subset=["case"])
        x = _x_positions(study, ax, key, sub[key], jitter)
        _scatter(ax, x, sub, div.reindex(sub.index).to_numpy(dtype=bool), top, best_id)
        ax.set_xlabel(key)
        if i % ncols == 0:
            ax.set_ylabel(f"{study.objective} (lower is better)")
        ax.grid(True, alpha=0.3)
    for j in range(len(keys), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    first = axes[0, 0]
    if ylog:
        first.set_yscale("log")
    first.set_ylim(*ylim)
    _shared_legend(fig, axes)
    fig.suptitle(f"{study.name}: objective against each searched hyperparameter")
    if not keys:
        first.text(0.5, 0.5, "no searched keys", ha="center", va="center", transform=first.transAxes)
    return fig
