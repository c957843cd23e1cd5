"""Figures: the shared figure helpers, curve groups and bands, the curve and gradient plots.

Figures are drawn on the Agg canvas without pyplot's global state and saved atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tuner.core.atomic import atomic_write_bytes
from tuner.report.claims import ordered_cases
from tuner.report.load import StudyFiles
from tuner.report.measures import best_rows, case_column, finished, stage_changes
from tuner.report.text import fmt

#: Figure size and resolution of every plot: readable on a laptop screen and in a PR.
FIGSIZE = (9.0, 5.5)


DPI = 120

#: Curves of this many best trials are drawn for plain searches.
TOP_N = 5

#: Log y scale when the plotted values span more than this many decades.
LOG_DECADES = 1.5

#: Font sizes: axis labels and ticks stay readable at the page width of a markdown viewer.
RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}


def save_png(fig: Figure, path: Path) -> None:
    """Save a figure as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


@contextmanager
def style() -> Iterator[None]:
    """Readable fonts for the figures drawn inside, without touching the caller's rcParams."""
    with matplotlib.rc_context():
        matplotlib.rcParams.update(cast(Any, RC))
        yield


def figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = FIGSIZE, **kw: Any
) -> tuple[Figure, np.ndarray]:
    """A figure on the Agg canvas (no pyplot global state) and its axes as a 2-D array.

    Constrained layout makes room for titles, tick labels and "outside" legends in one pass,
    which is cheaper than saving with ``bbox_inches="tight"`` (that renders twice)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def span_decades(values: Sequence[float] | np.ndarray) -> float:
    """How many decades the finite positive values span (0 when fewer than two)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 2:
        return 0.0
    return float(math.log10(x.max() / x.min()))


def legend_outside(fig: Figure, ax: Axes, extra: Sequence[Line2D] = ()) -> None:
    """Legend to the right of the axes, so curves are never hidden behind it."""
    handles, labels = ax.get_legend_handles_labels()
    handles = list(handles) + list(extra)
    labels = list(labels) + [str(h.get_label()) for h in extra]
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)


@dataclass(frozen=True)
class Group:
    """One line of a curve plot: a case (its seeds pooled) or one trial."""

    label: str
    trial_ids: tuple[str, ...]
    color: Any


def palette(n: int) -> list[Any]:
    """Distinct colours: tab10 for up to 10 lines, tab20 beyond."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def curve_groups(study: StudyFiles) -> list[Group]:
    """Cases in the article's order for ablations; else the TOP_N best trials, best first."""
    trials = finished(study.trials)
    with_epochs = set(study.epochs["trial_id"].astype(str))
    trials = trials[trials["trial_id"].isin(with_epochs)]
    if study.has_cases:
        case = case_column(trials)
        if case is None:  # only unfinished trials have cases so far
            return []
        t = trials.assign(case=case).dropna(subset=["case"])
        names = ordered_cases(t["case"])
        cols = palette(len(names))
        groups = []
        for name, color in zip(names, cols, strict=True):
            ids = tuple(str(i) for i in t.loc[t["case"] == name, "trial_id"])
            groups.append(Group(name, ids, color))
        return groups
    best = best_rows(trials, study.objective, k=TOP_N)
    cols = palette(len(best))
    return [
        Group(f"#{i + 1} {r.trial_id} ({fmt(r[study.objective])})", (str(r.trial_id),), c)
        for i, ((_, r), c) in enumerate(zip(best.iterrows(), cols, strict=True))
    ]


def epoch_band(
    epochs: pd.DataFrame, ids: Sequence[str], column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``column`` over the trials ``ids`` at each epoch (finite values)."""
    e = epochs[epochs["trial_id"].isin(ids)]
    if e.empty or column not in e.columns:
        empty = np.array([], dtype=float)
        return empty, empty, empty, empty
    wide = e.pivot_table(index="epoch", columns="trial_id", values=column, aggfunc="last", dropna=False)
    m = wide.to_numpy(dtype=float)
    m = np.where(np.isfinite(m), m, np.nan)
    keep = ~np.all(np.isnan(m), axis=1)
    x = wide.index.to_numpy(dtype=float)[keep]
    m = m[keep]
    return x, np.nanmean(m, axis=1), np.nanmin(m, axis=1), np.nanmax(m, axis=1)


def time_band(
    epochs: pd.DataFrame, ids: Sequence[str], column: str = "train_loss", points: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``column`` against ``train_time_s`` over the trials ``ids``.

    Seeds finish epochs at different times, so each run is interpolated linearly onto a common
    grid of ``points`` times and only averaged where it has data (a single run is drawn raw).
    """
    empty = np.array([], dtype=float)
    if "train_time_s" not in epochs.columns:
        return empty, empty, empty, empty
    series = []
    for tid in ids:
        g = epochs[epochs["trial_id"] == tid]
        t = g["train_time_s"].to_numpy(dtype=float)
        y = g[column].to_numpy(dtype=float)
        ok = np.isfinite(t) & np.isfinite(y)
        if ok.any():
            series.append((t[ok], y[ok]))
    if not series:
        return empty, empty, empty, empty
    if len(series) == 1:
        t, y = series[0]
        return t, y, y, y
    lo_t = min(s[0][0] for s in series)
    hi_t = max(s[0][-1] for s in series)
    grid = np.linspace(lo_t, hi_t, points) if hi_t > lo_t else np.array([lo_t])
    m = np.full((len(series), grid.size), np.nan)
    for i, (t, y) in enumerate(series):
        inside = (grid >= t[0]) & (grid <= t[-1])
        m[i, inside] = np.interp(grid[inside], t, y)
    keep = ~np.all(np.isnan(m), axis=0)
    m = m[:, keep]
    return grid[keep], np.nanmean(m, axis=0), np.nanmin(m, axis=0), np.nanmax(m, axis=0)


def _mark_run(
    ax: Axes, rows: pd.DataFrame, axis: str, x: np.ndarray, mean: np.ndarray, color: Any, column: str
) -> tuple[bool, bool]:
    """Mark one run on its group's curve: hollow circles at stage changes, a red x at the last
    finite loss of a run that blew up. Returns (any stage change, blew up)."""
    stage = False
    for _, ch in stage_changes(rows).iterrows():
        cx = float(ch["epoch"] if axis == "epoch" else ch["train_time_s"])
        if math.isfinite(cx):
            ax.plot(cx, np.interp(cx, x, mean), "o", mfc="white", mec=color, ms=6, mew=1.5, zorder=4)
            stage = True
    loss = rows[column].to_numpy(dtype=float)
    finite = np.flatnonzero(np.isfinite(loss))
    if not (loss.size and not np.isfinite(loss[-1]) and finite.size):
        return stage, False
    last = rows.iloc[int(finite[-1])]
    ax.plot(float(last[axis]), float(last[column]), "x", color="red", ms=9, mew=2, zorder=5)
    return stage, True


def add_hlines(ax: Axes, hlines: dict[str, float], values: list[float]) -> None:
    """Reference losses (the baselines) as labelled horizontal lines."""
    for i, (label, value) in enumerate(hlines.items()):
        ax.axhline(value, color="black", lw=1.0, ls=["-.", ":"][i % 2], label=label, zorder=1)
        values.append(value)


def plot_curves(
    study: StudyFiles,
    groups: Sequence[Group],
    axis: str,
    title: str,
    column: str = "train_loss",
    ylabel: str = "training loss (MSE)",
    hlines: dict[str, float] | None = None,
) -> Figure:
    """``column`` against ``axis`` ("epoch" or "train_time_s"): mean over seeds, min-max band,
    hollow circles where the schedule changes stage, red x where a run blew up; ``hlines``:
    label -> reference loss (the baselines)."""
    fig, axes = figure()
    ax = axes[0, 0]
    plotted: list[float] = []
    any_stage = any_diverged = False
    epochs = study.epochs
    for g in groups:
        if axis == "epoch":
            x, mean, lo, hi = epoch_band(epochs, g.trial_ids, column)
        else:
            x, mean, lo, hi = time_band(epochs, g.trial_ids, column)
        if x.size == 0:
            continue
        n = len(g.trial_ids)
        label = g.label + (f" (n={n})" if n > 1 else "")
        ax.plot(x, mean, color=g.color, lw=1.8, label=label)
        if n > 1:
            ax.fill_between(x, lo, hi, color=g.color, alpha=0.18, lw=0)
        plotted.extend(lo.tolist() + hi.tolist())
        for tid in g.trial_ids:
            stage, blew_up = _mark_run(ax, epochs[epochs["trial_id"] == tid], axis, x, mean, g.color, column)
            any_stage, any_diverged = any_stage or stage, any_diverged or blew_up
    add_hlines(ax, hlines or {}, plotted)
    if span_decades(plotted) > LOG_DECADES:
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if axis == "epoch" else "wall-clock training time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    extra = []
    if any_stage:
        extra.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc="white",
                mec="0.3",
                mew=1.5,
                label="schedule stage change",
            )
        )
    if any_diverged:
        extra.append(
            Line2D([], [], ls="", marker="x", color="red", mew=2, label="diverged (last finite loss)")
        )
    if not groups:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    legend_outside(fig, ax, extra)
    return fig


def plot_overfit(study: StudyFiles, groups: Sequence[Group], hlines: dict[str, float]) -> Figure:
    """One panel per group: end-of-epoch training loss (solid) and held-out loss (dashed) per
    epoch, mean over seeds, with the held-out baselines; where they part is overfitting."""
    n = max(1, len(groups))
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    fig, axes = figure(nrows, ncols, figsize=(3.2 * ncols + 1.0, 2.8 * nrows + 0.6), sharex=True, sharey=True)
    values: list[float] = []
    for ax, g in zip(axes.flat, groups, strict=False):
        for column, ls in (("train_loss", "-"), ("val_loss", "--")):
            x, mean, lo, hi = epoch_band(study.epochs, g.trial_ids, column)
            if x.size:
                ax.plot(x, mean, color=g.color, ls=ls, lw=1.6)
                if len(g.trial_ids) > 1:
                    ax.fill_between(x, lo, hi, color=g.color, alpha=0.15, lw=0)
                values.extend(lo.tolist() + hi.tolist())
        for i, value in enumerate(hlines.values()):
            ax.axhline(value, color="black", lw=0.9, ls=["-.", ":"][i % 2])
        ax.set_title(g.label, fontsize=10)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    values += list(hlines.values())
    if span_decades(values) > LOG_DECADES:
        axes[0, 0].set_yscale("log")
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (MSE)")
    extra = [
        Line2D([], [], color="0.3", ls="-", label="training loss (end of epoch)"),
        Line2D([], [], color="0.3", ls="--", label="held-out loss"),
    ]
    extra += [
        Line2D([], [], color="black", lw=0.9, ls=["-.", ":"][i % 2], label=label)
        for i, label in enumerate(hlines)
    ]
    fig.legend(handles=extra, loc="outside lower center", ncols=min(len(extra), 4), frameon=False)
    fig.suptitle(f"{study.name}: training vs held-out loss")
    return fig


def plot_gradients(study: StudyFiles, groups: Sequence[Group]) -> Figure:
    """Pre-clip gradient norm (mean per epoch, log y) and the share of clipped steps per epoch."""
    fig, axes = figure(2, 1, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    values: list[float] = []
    for g in groups:
        x, mean, lo, hi = epoch_band(study.epochs, g.trial_ids, "grad_norm_mean")
        if x.size:
            top.plot(x, mean, color=g.color, lw=1.6, label=g.label)
            if len(g.trial_ids) > 1:
                top.fill_between(x, lo, hi, color=g.color, alpha=0.15, lw=0)
            values.extend(mean.tolist())
        x, mean, _, _ = epoch_band(study.epochs, g.trial_ids, "clip_fraction")
        if x.size:
            bottom.plot(x, mean, color=g.color, lw=1.6)
    if any(v > 0 for v in values if math.isfinite(v)):
        top.set_yscale("log")
    top.set_ylabel("gradient norm\nbefore clipping")
    top.set_title(f"{study.name}: gradient norm (mean per epoch) and clipped share")
    bottom.set_ylabel("share of steps\nclipped")
    bottom.set_ylim(-0.03, 1.03)
    bottom.set_xlabel("epoch")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    legend_outside(fig, top)
    return fig
