"""Drawing anytime curves (see `tuner.report.anytime`): one study, or strategies over repeats.

A study: one step line per experiment (`search`, `extend-1`, ...), warm-start points marked.
A benchmark: per strategy, the median over repeats of the best-so-far and a band from the
minimum to the maximum over repeats, on a common compute grid. matplotlib's Agg backend only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

AXIS_LABELS = {
    "timesteps": "compute (time steps, all trials)",
    "seconds": "compute (training seconds, all trials)",
}


def plot_study(
    curve: pd.DataFrame,
    path: str | Path,
    axis: str = "timesteps",
    ylabel: str = "best objective so far",
    title: str = "",
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """One study's anytime curve, one line per experiment; `hlines`: label -> reference value."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for experiment, part in curve.groupby("experiment", sort=False):
        shown = part.dropna(subset=["best"])
        if not len(shown):
            continue
        (line,) = ax.step(shown[axis], shown["best"], where="post", label=str(experiment))
        warm = shown[shown["warm"] & shown["improved"]]
        if len(warm):
            ax.plot(
                warm[axis],
                warm["best"],
                "o",
                color=line.get_color(),
                mfc="none",
                label=f"{experiment}: warm-start points",
            )
    _finish(ax, axis, ylabel, title, hlines)
    return _save(fig, path)


def band(curves: Sequence[pd.DataFrame], grid: np.ndarray, axis: str = "timesteps") -> pd.DataFrame:
    """Median, min and max over repeats of the best value at each compute of `grid` (NaN where
    no repeat had a finite value yet; a repeat that ended early keeps its last best)."""
    rows = []
    for curve in curves:
        known = curve.dropna(subset=["best"])
        x, y = known[axis].to_numpy(float), known["best"].to_numpy(float)
        at = np.searchsorted(x, grid, side="right") - 1
        values = np.full(len(grid), np.nan)
        if len(y):
            values = np.where(at >= 0, y[np.clip(at, 0, None)], np.nan)
        rows.append(values)
    stack = np.vstack(rows) if rows else np.full((1, len(grid)), np.nan)
    with warnings.catch_warnings():  # 'All-NaN slice': NaN is the right answer there
        warnings.simplefilter("ignore", RuntimeWarning)
        return pd.DataFrame(
            {
                axis: grid,
                "median": np.nanmedian(stack, axis=0),
                "min": np.nanmin(stack, axis=0),
                "max": np.nanmax(stack, axis=0),
            }
        )


def plot_strategies(
    curves: Mapping[str, Sequence[pd.DataFrame]],
    path: str | Path,
    budget: float,
    axis: str = "timesteps",
    ylabel: str = "best held-out loss",
    title: str = "",
    hlines: Mapping[str, float] | None = None,
    points: int = 200,
) -> Path:
    """Median line and min-max band over repeats for each strategy, up to `budget`."""
    grid = np.linspace(0.0, budget, points)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, repeats in curves.items():
        b = band(repeats, grid, axis)
        (line,) = ax.plot(b[axis], b["median"], label=f"{name} (median of {len(repeats)})")
        ax.fill_between(b[axis], b["min"], b["max"], color=line.get_color(), alpha=0.2)
    _finish(ax, axis, ylabel, title, hlines)
    for frac in (1 / 10, 1 / 3):
        ax.axvline(budget * frac, color="grey", lw=0.6, ls=":")
    return _save(fig, path)


def _finish(ax, axis: str, ylabel: str, title: str, hlines: Mapping[str, float] | None) -> None:
    for i, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, color="black", lw=0.8, ls=["--", "-.", ":"][i % 3], label=label)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
