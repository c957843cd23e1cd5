"""Write a study's report (``report.md`` + ``plots/*.png``) from the files in ``results/<study>/``.

The report reads only the files a study leaves (``trials.csv``, ``epochs.csv``, ``study.yaml`` and,
when present, ``optuna.db``), never Ray objects, so anyone can make it again from a copied results
folder::

    python -m tuner.report results/NAME [--out DIR]

It follows the Deep Learning Tuning Playbook's conventions: an actionable summary first, then the
training curves of the best settings, for ablations the article's claims checked against the
numbers, and for every search the axis plots (objective against each hyperparameter, diverged
trials marked), edge-of-range warnings, the share of diverged trials, gradient-norm plots,
parameter importance and the exact command that reproduces the study. All numbers and verdicts
come from :mod:`tuner.analysis`; this module only reads, lays out and draws.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tuner import analysis as an
from tuner.results import atomic_write_bytes

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
#: Section headers, in order (ablation sections only appear when trials have a ``case``).
H_SUMMARY = "## Summary"
H_STUDY = "## Study"
H_CURVES = "## Training curves"
H_ABLATION = "## Ablation: the article's cases"
H_CLAIMS = "## Claims of the article"
H_SEARCH = "## Search diagnostics"
H_AXIS = "### Objective against each hyperparameter"
H_EDGES = "### Edge of range"
H_DIVERGED = "### Diverged trials"
H_BEST = "### Best trials"
H_GRAD = "### Gradient norms and clipping"
H_IMPORTANCE = "### Parameter importance"


class ReportError(Exception):
    """The study folder cannot be reported on; the message is one line meant for the user."""


# --------------------------------------------------------------------------------------------
# Reading a study folder
# --------------------------------------------------------------------------------------------


@dataclass
class StudyFiles:
    """What a study folder holds, read once and cleaned of file-format quirks."""

    name: str
    path: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    """Empty (with the expected columns) when ``epochs.csv`` is missing."""
    meta: dict[str, Any]
    """``study.yaml`` as a dict (empty when missing or unreadable)."""
    space: dict[str, Any]
    objective: str
    """Column of the value minimised: ``objective``, else the space's metric, else best_loss."""
    notes: list[str] = field(default_factory=list)
    """Problems met while reading (missing optional files), stated in the report."""

    @property
    def has_cases(self) -> bool:
        """An ablation study: at least one trial names a case."""
        return an.case_column(self.trials) is not None


_TEXT_COLUMNS = {"trial_id": str, "status": str, "case": str, "error": str}
_NUMERIC_TRIAL_COLUMNS = (
    "objective",
    "best_loss",
    "final_loss",
    "auc",
    "epochs",
    "timesteps",
    "seconds",
    "diverged_epoch",
)
_EPOCH_COLUMNS = (
    "trial_id",
    "epoch",
    "loss",
    "val_loss",
    "chunks",
    "stage",
    "lr",
    "grad_norm_mean",
    "grad_norm_max",
    "clip_fraction",
    "epoch_time_s",
    "steps_per_s",
    "timesteps",
    "updates",
    "train_time_s",
)


def _read_yaml(path: Path, notes: list[str]) -> dict[str, Any]:
    """The study.yaml mapping; {} with a note when it is missing or not a mapping."""
    if not path.exists():
        notes.append("study.yaml is missing: no search space, command or versions to show.")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        notes.append(f"study.yaml could not be read ({type(exc).__name__}).")
        return {}
    if not isinstance(data, dict):
        notes.append("study.yaml is not a mapping: ignored.")
        return {}
    return data


def _mapping(meta: dict[str, Any], key: str) -> dict[str, Any]:
    """``meta[key]`` when it is a mapping, else {} (optional study.yaml sections)."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def load_study(study_dir: str | os.PathLike[str]) -> StudyFiles:
    """Read a study folder; raises ReportError when the folder or its trials.csv is missing."""
    path = Path(study_dir)
    if not path.is_dir():
        raise ReportError(f"study folder not found: {path}")
    trials_path = path / "trials.csv"
    if not trials_path.is_file():
        raise ReportError(f"no trials.csv in {path}: run the study first (python -m tuner.search)")
    notes: list[str] = []
    try:
        trials = pd.read_csv(trials_path, dtype=_TEXT_COLUMNS)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(f"{trials_path} cannot be read: {type(exc).__name__}") from exc
    if "trial_id" not in trials.columns:
        raise ReportError(f"{trials_path} has no trial_id column")
    trials["trial_id"] = trials["trial_id"].astype(str)
    for col in _NUMERIC_TRIAL_COLUMNS:
        if col in trials.columns:
            trials[col] = pd.to_numeric(trials[col], errors="coerce")
    epochs_path = path / "epochs.csv"
    epochs = pd.DataFrame({c: pd.Series(dtype=float) for c in _EPOCH_COLUMNS})
    if epochs_path.is_file():
        try:
            epochs = pd.read_csv(epochs_path, dtype={"trial_id": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            notes.append(f"epochs.csv could not be read ({type(exc).__name__}): no curves.")
        else:
            epochs["trial_id"] = epochs["trial_id"].astype(str)
            for col in epochs.columns:
                if col != "trial_id":
                    epochs[col] = pd.to_numeric(epochs[col], errors="coerce")
            epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable")
    else:
        notes.append("epochs.csv is missing: no training curves.")
    meta = _read_yaml(path / "study.yaml", notes)
    space = _mapping(meta, "space")
    search = _mapping(meta, "search")
    objective = "objective"
    if objective not in trials.columns:
        metric = str(search.get("metric", ""))
        objective = metric if metric in trials.columns else "best_loss"
        notes.append(f"trials.csv has no objective column: using `{objective}`.")
        if objective in trials.columns:
            trials[objective] = pd.to_numeric(trials[objective], errors="coerce")
    return StudyFiles(
        name=str(meta.get("name") or path.name),
        path=path,
        trials=trials,
        epochs=epochs,
        meta=meta,
        space=space or {},
        objective=objective,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Small helpers: files, markdown, figures
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> None:
    """Save a figure as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())


@contextmanager
def _style() -> Iterator[None]:
    """Readable fonts for the figures drawn inside, without touching the caller's rcParams."""
    with matplotlib.rc_context():
        matplotlib.rcParams.update(cast(Any, RC))
        yield


def _figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = FIGSIZE, **kw: Any
) -> tuple[Figure, np.ndarray]:
    """A figure on the Agg canvas (no pyplot global state) and its axes as a 2-D array.

    Constrained layout makes room for titles, tick labels and "outside" legends in one pass,
    which is cheaper than saving with ``bbox_inches="tight"`` (that renders twice)."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _md_cell(value: Any) -> str:
    """Text for a markdown table cell: pipes escaped, newlines flattened."""
    text = (
        value
        if isinstance(value, str)
        else an.fmt(value)
        if isinstance(value, float)
        else str(value)
    )
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    """A pandas table as a GitHub-flavoured markdown table."""
    header = "| " + " | ".join(_md_cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _code(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def _span_decades(values: Sequence[float] | np.ndarray) -> float:
    """How many decades the finite positive values span (0 when fewer than two)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 2:
        return 0.0
    return float(math.log10(x.max() / x.min()))


def _legend_outside(fig: Figure, ax: Axes, extra: Sequence[Line2D] = ()) -> None:
    """Legend to the right of the axes, so curves are never hidden behind it."""
    handles, labels = ax.get_legend_handles_labels()
    handles = list(handles) + list(extra)
    labels = list(labels) + [str(h.get_label()) for h in extra]
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)


# --------------------------------------------------------------------------------------------
# Settings and groups of curves
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One line of a curve plot: a case (its seeds pooled) or one trial."""

    label: str
    trial_ids: tuple[str, ...]
    color: Any


def _colors(n: int) -> list[Any]:
    """Distinct colours: tab10 for up to 10 lines, tab20 beyond."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _curve_groups(study: StudyFiles) -> list[Group]:
    """Cases in the article's order for ablations; else the TOP_N best trials, best first."""
    trials = an.finished(study.trials)
    with_epochs = set(study.epochs["trial_id"].astype(str))
    trials = trials[trials["trial_id"].isin(with_epochs)]
    if study.has_cases:
        case = an.case_column(trials)
        if case is None:  # only unfinished trials have cases so far
            return []
        t = trials.assign(case=case).dropna(subset=["case"])
        names = an.ordered_cases(t["case"])
        colors = _colors(len(names))
        groups = []
        for name, color in zip(names, colors, strict=True):
            ids = tuple(str(i) for i in t.loc[t["case"] == name, "trial_id"])
            groups.append(Group(name, ids, color))
        return groups
    best = an.best_rows(trials, study.objective, k=TOP_N)
    colors = _colors(len(best))
    return [
        Group(f"#{i + 1} {r.trial_id} ({an.fmt(r[study.objective])})", (str(r.trial_id),), c)
        for i, ((_, r), c) in enumerate(zip(best.iterrows(), colors, strict=True))
    ]


def _epoch_band(
    epochs: pd.DataFrame, ids: Sequence[str], column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``column`` over the trials ``ids`` at each epoch (finite values)."""
    e = epochs[epochs["trial_id"].isin(ids)]
    if e.empty or column not in e.columns:
        empty = np.array([], dtype=float)
        return empty, empty, empty, empty
    wide = e.pivot_table(
        index="epoch", columns="trial_id", values=column, aggfunc="last", dropna=False
    )
    m = wide.to_numpy(dtype=float)
    m = np.where(np.isfinite(m), m, np.nan)
    keep = ~np.all(np.isnan(m), axis=1)
    x = wide.index.to_numpy(dtype=float)[keep]
    m = m[keep]
    return x, np.nanmean(m, axis=1), np.nanmin(m, axis=1), np.nanmax(m, axis=1)


def _time_band(
    epochs: pd.DataFrame, ids: Sequence[str], column: str = "loss", points: int = 200
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


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _plot_curves(study: StudyFiles, groups: Sequence[Group], axis: str, title: str) -> Figure:
    """Loss against ``axis`` ("epoch" or "train_time_s"): mean over seeds, min-max band,
    hollow circles where the schedule changes stage, red x where a run blew up."""
    fig, axes = _figure()
    ax = axes[0, 0]
    plotted: list[float] = []
    any_stage = any_diverged = False
    epochs = study.epochs
    for g in groups:
        if axis == "epoch":
            x, mean, lo, hi = _epoch_band(epochs, g.trial_ids, "loss")
        else:
            x, mean, lo, hi = _time_band(epochs, g.trial_ids, "loss")
        if x.size == 0:
            continue
        n = len(g.trial_ids)
        label = g.label + (f" (n={n})" if n > 1 else "")
        ax.plot(x, mean, color=g.color, lw=1.8, label=label)
        if n > 1:
            ax.fill_between(x, lo, hi, color=g.color, alpha=0.18, lw=0)
        plotted.extend(lo.tolist() + hi.tolist())
        for tid in g.trial_ids:
            rows = epochs[epochs["trial_id"] == tid]
            for _, ch in an.stage_changes(rows).iterrows():
                cx = float(ch["epoch"] if axis == "epoch" else ch["train_time_s"])
                if math.isfinite(cx):
                    ax.plot(
                        cx,
                        np.interp(cx, x, mean),
                        "o",
                        mfc="white",
                        mec=g.color,
                        ms=6,
                        mew=1.5,
                        zorder=4,
                    )
                    any_stage = True
            loss = rows["loss"].to_numpy(dtype=float)
            if loss.size and not np.isfinite(loss[-1]):
                finite = np.flatnonzero(np.isfinite(loss))
                if finite.size:
                    last = rows.iloc[int(finite[-1])]
                    ax.plot(
                        float(last[axis]),
                        float(last["loss"]),
                        "x",
                        color="red",
                        ms=9,
                        mew=2,
                        zorder=5,
                    )
                    any_diverged = True
    if _span_decades(plotted) > LOG_DECADES:
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if axis == "epoch" else "wall-clock training time (s)")
    ax.set_ylabel("training loss (MSE)")
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
            Line2D(
                [], [], ls="", marker="x", color="red", mew=2, label="diverged (last finite loss)"
            )
        )
    if not groups:
        ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
    _legend_outside(fig, ax, extra)
    return fig


def searched_keys(study: StudyFiles) -> list[str]:
    """Keys to plot the objective against: the space's keys and the dotted columns that vary
    (space order first), plus ``case`` for ablations; seeds left out."""
    trials = study.trials
    keys = [k for k in study.space if k in trials.columns]
    for c in an.config_columns(trials):
        if c not in keys and trials[c].dropna().astype(str).nunique() > 1:
            keys.append(c)
    keys = [k for k in keys if not an.is_seed_key(k) and k != "case"]
    if study.has_cases:
        keys.insert(0, "case")
    return keys


def _is_log_key(study: StudyFiles, key: str, values: pd.Series) -> bool:
    """Log x axis: the space says log, or (no space entry) positive numbers over 2+ decades."""
    rng = an.numeric_range(study.space.get(key))
    if rng is not None:
        return rng.log
    x = values.to_numpy(dtype=float)
    return bool(np.all(x[np.isfinite(x)] > 0) and _span_decades(x) >= 2)


def _is_numeric_key(study: StudyFiles, key: str, values: pd.Series) -> bool:
    """A numeric axis unless the space declares a non-numeric choice or the values are text."""
    spec = study.space.get(key)
    if (
        isinstance(spec, dict)
        and any(k in spec for k in ("choice", "grid"))
        and an.numeric_range(spec) is None
    ):
        return False
    numbers = pd.to_numeric(values, errors="coerce")
    return bool(len(values) and numbers.notna().all())


def _plot_axes(study: StudyFiles, keys: Sequence[str]) -> Figure:
    """The playbook's axis plot: objective against each searched key, one panel per key.

    Finished trials are dots (hollow when early-stopped), the best trial a gold star; diverged
    trials (objective +inf) are red x drawn at the top edge of each panel, since they have no
    finite value to plot. Log x for log ranges, categories for categorical keys.
    """
    trials = study.trials.copy()
    trials["_obj"] = pd.to_numeric(trials[study.objective], errors="coerce")
    if "status" in trials.columns:
        status = trials["status"].astype(str).str.lower()
        trials = trials[status.isin(an.FINISHED_STATUSES)]
    else:
        status = pd.Series("completed", index=trials.index)
    trials["_status"] = status.reindex(trials.index)
    div = an.diverged_trials(trials, study.objective) | ~np.isfinite(trials["_obj"])
    finite = trials["_obj"][~div]
    ylog = bool(len(finite) and (finite > 0).all() and _span_decades(finite) > LOG_DECADES)
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = 0.0, 1.0
    if ylog:
        decades = math.log10(hi / lo)
        top = hi * 10 ** (0.12 * decades)
        ylim = (lo / 10 ** (0.05 * decades), hi * 10 ** (0.2 * decades))
    else:
        span = hi - lo if hi > lo else (abs(hi) or 1.0)
        top = hi + 0.12 * span
        ylim = (lo - 0.05 * span, hi + 0.2 * span)
    best_id = None
    best = an.best_rows(trials, "_obj", k=1)
    if len(best):
        best_id = best["trial_id"].iloc[0]

    n = max(1, len(keys))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(9.0, max(3.4 * nrows, 4.0)), sharey=True)
    rng = np.random.default_rng(0)
    for i, key in enumerate(keys):
        ax = axes[i // ncols, i % ncols]
        sub = trials[trials[key].notna()] if key in trials.columns else trials.iloc[0:0]
        if key == "case":
            sub = sub.assign(case=an.case_column(sub)).dropna(subset=["case"])
        values = sub[key]
        if _is_numeric_key(study, key, values) and key != "case":
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            if _is_log_key(study, key, values) and np.all(x[np.isfinite(x)] > 0):
                ax.set_xscale("log")
            spec_rng = an.numeric_range(study.space.get(key))
            if spec_rng is not None and spec_rng.discrete_values is None:
                ax.axvspan(spec_rng.low, spec_rng.high, color="0.92", zorder=0)
        else:
            text = values.astype(str)
            spec = study.space.get(key, {})
            declared = (
                [str(v) for v in (spec.get("choice") or spec.get("grid") or [])]
                if isinstance(spec, dict)
                else []
            )
            order = (
                an.ordered_cases(text)
                if key == "case"
                else [c for c in declared if c in set(text)] + sorted(set(text) - set(declared))
            )
            pos = {c: j for j, c in enumerate(order)}
            x = np.array([pos[t] for t in text], dtype=float)
            x = x + rng.uniform(-0.15, 0.15, size=x.size)
            ax.set_xticks(range(len(order)))
            rotate = len(order) > 4 or max((len(c) for c in order), default=0) > 8
            ax.set_xticklabels(
                order, rotation=45 if rotate else 0, ha="right" if rotate else "center"
            )
            ax.set_xlim(-0.6, len(order) - 0.4)
        y = sub["_obj"].to_numpy(dtype=float)
        d = div.reindex(sub.index).to_numpy(dtype=bool)
        early = (sub["_status"] == "early_stopped").to_numpy(dtype=bool)
        ok = ~d & ~early
        ax.scatter(x[ok], y[ok], s=22, color="tab:blue", alpha=0.75, label="finished")
        if early.any():
            m = early & ~d
            ax.scatter(
                x[m], y[m], s=22, facecolors="none", edgecolors="tab:blue", label="early-stopped"
            )
        if d.any():
            ax.scatter(
                x[d],
                np.full(d.sum(), top),
                marker="x",
                color="red",
                s=40,
                label="diverged (drawn at top)",
            )
        if best_id is not None:
            b = (sub["trial_id"] == best_id).to_numpy(dtype=bool)
            if b.any():
                ax.scatter(
                    x[b],
                    y[b],
                    marker="*",
                    s=180,
                    color="gold",
                    edgecolors="black",
                    zorder=5,
                    label="best trial",
                )
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
    fig.suptitle(f"{study.name}: objective against each searched hyperparameter")
    if not keys:
        first.text(
            0.5, 0.5, "no searched keys", ha="center", va="center", transform=first.transAxes
        )
    return fig


def _plot_gradients(study: StudyFiles, groups: Sequence[Group]) -> Figure:
    """Pre-clip gradient norm (mean per epoch, log y) and the share of clipped steps per epoch."""
    fig, axes = _figure(2, 1, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    values: list[float] = []
    for g in groups:
        x, mean, lo, hi = _epoch_band(study.epochs, g.trial_ids, "grad_norm_mean")
        if x.size:
            top.plot(x, mean, color=g.color, lw=1.6, label=g.label)
            if len(g.trial_ids) > 1:
                top.fill_between(x, lo, hi, color=g.color, alpha=0.15, lw=0)
            values.extend(mean.tolist())
        x, mean, _, _ = _epoch_band(study.epochs, g.trial_ids, "clip_fraction")
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
    _legend_outside(fig, top)
    return fig


def _plot_importance(importance: pd.Series, name: str) -> Figure:
    """Horizontal bars of Optuna's normalised parameter importances, largest on top."""
    imp = importance.sort_values()
    fig, axes = _figure(figsize=(9.0, max(2.5, 0.5 * len(imp) + 1.5)))
    ax = axes[0, 0]
    ax.barh(list(imp.index), imp.to_numpy(dtype=float), color="tab:blue")
    ax.set_xlabel("importance (share of objective variance explained, fANOVA)")
    ax.set_title(f"{name}: parameter importance")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Parameter importance
# --------------------------------------------------------------------------------------------


def parameter_importance(study: StudyFiles, min_trials: int = 10) -> tuple[pd.Series | None, str]:
    """Optuna's parameter importances from ``optuna.db``, or None and the reason it was skipped.

    Only tried when the storage exists and holds at least ``min_trials`` completed trials (fewer
    make the fANOVA forest meaningless). Any failure (conditional parameters, an old schema, inf
    values) becomes a sentence in the report instead of a crash: importance is a nice-to-have.
    """
    db = study.path / "optuna.db"
    if not db.is_file():
        return None, "No optuna.db in the study folder: parameter importance skipped."
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        return None, "Optuna is not installed: parameter importance skipped."
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = optuna.load_study(study_name=study.name, storage=f"sqlite:///{db.resolve()}")
            done = st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(done) < min_trials:
                return None, (
                    f"Only {len(done)} completed trials in optuna.db ({min_trials} needed): "
                    "parameter importance skipped."
                )
            imp = optuna.importance.get_param_importances(st)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never fatal
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return None, (
            f"Parameter importance could not be computed ({type(exc).__name__}: {first}); "
            "conditional parameters (keys searched only under an `if`) often cause this."
        )
    finally:
        optuna.logging.set_verbosity(old)
    if not imp:
        return None, "Optuna returned no parameter importances (no parameters searched)."
    return pd.Series(imp, dtype=float), f"From {len(done)} completed trials in optuna.db (fANOVA)."


# --------------------------------------------------------------------------------------------
# Report sections
# --------------------------------------------------------------------------------------------


@dataclass
class Counts:
    """How many trials ended how."""

    total: int
    completed: int
    early_stopped: int
    diverged: int
    errors: int
    unfinished: int

    @property
    def finished(self) -> int:
        """Trials with final numbers (completed + early-stopped + diverged)."""
        return self.completed + self.early_stopped + self.diverged

    def diverged_share(self) -> str:
        """``n of m finished trials (p%)``."""
        m = self.finished
        share = f" ({self.diverged / m:.0%})" if m else ""
        return f"{self.diverged} of {m} finished trials{share}"


def count_trials(study: StudyFiles) -> Counts:
    """Count trials by status (diverged also when the objective is +inf)."""
    t = study.trials
    status = (
        t["status"].astype(str).str.strip().str.lower()
        if "status" in t.columns
        else pd.Series("completed", index=t.index)
    )
    div = an.diverged_trials(t, study.objective)
    return Counts(
        total=len(t),
        completed=int(((status == "completed") & ~div).sum()),
        early_stopped=int(((status == "early_stopped") & ~div).sum()),
        diverged=int(div.sum()),
        errors=int((status == "error").sum()),
        unfinished=int(status.isin(["running", "pending"]).sum()),
    )


def _summary(
    study: StudyFiles,
    ranking: pd.DataFrame,
    counts: Counts,
    claims: pd.DataFrame | None,
    edges: list[str],
) -> list[str]:
    """The actionable summary: best setting, margin over the baseline, how sure, what next."""
    lines = [H_SUMMARY, ""]
    if ranking.empty:
        lines += ["No trial has finished yet: nothing to report beyond the counts below.", ""]
        return lines
    best = ranking.iloc[0]
    what = f"case `{best['setting']}`" if study.has_cases else f"trial `{best['best_trial']}`"
    config = f" ({best['config']})" if best["config"] else ""
    spread = (
        f"mean over {best['n']} seeds, min-max {an.fmt(best['min'])}-{an.fmt(best['max'])}"
        if best["n"] > 1
        else "one run only: the seed spread is unknown; re-run this setting with 3+ seeds "
        "before trusting small margins"
    )
    lines.append(
        f"- **Best setting:** {what}{config}: {study.objective} "
        f"**{an.fmt(best['mean'])}** ({spread})."
    )
    base_row = ranking[ranking["setting"] == an.BASELINE_CASE] if study.has_cases else ranking[0:0]
    if len(base_row):
        base = base_row.iloc[0]
        base_values, base_mean = base["values"], float(base["mean"])
        base_text = f"the article's baseline `sgd` ({an.fmt_spread(base_values)})"
    else:
        objs = an.finished(study.trials)[study.objective].to_numpy(dtype=float)
        objs = np.where(np.isnan(objs), np.inf, objs)
        base_values, base_mean = [], float(np.median(objs)) if objs.size else math.nan
        base_text = f"the median trial ({an.fmt(base_mean)})"
    best_mean = float(best["mean"])
    if study.has_cases and best["setting"] == an.BASELINE_CASE:
        lines.append("- **Against the baseline:** the baseline `sgd` is itself the best setting.")
    elif math.isinf(base_mean) and math.isfinite(best_mean):
        lines.append(f"- **Against the baseline:** {base_text} diverged; the best setting did not.")
    elif math.isfinite(base_mean) and math.isfinite(best_mean) and base_mean > 0:
        rel = (base_mean - best_mean) / base_mean
        times = f", {base_mean / best_mean:.3g}x lower" if best_mean > 0 else ""
        word = "lower" if rel >= 0 else "higher"
        line = f"- **Against the baseline:** {abs(rel):.1%} {word} than {base_text}{times}."
        if base_values:
            v = an.verdict_lower(best["values"], base_values)
            line += (
                " The seed ranges do not overlap: the gain is larger than the seed spread."
                if v == an.HOLDS
                else " The seed ranges overlap or the gap is under 5%: not conclusive."
            )
        lines.append(line)
    lines.append(
        f"- **Diverged:** {counts.diverged_share()}"
        + (f"; {counts.errors} errored" if counts.errors else "")
        + "."
    )
    if claims is not None and len(claims):
        tally = claims["verdict"].value_counts()
        parts = [f"{tally.get(v, 0)} {v}" for v in (an.HOLDS, an.DOES_NOT_HOLD)]
        n_unclear = int(claims["verdict"].str.startswith(an.UNCLEAR).sum())
        parts.append(f"{n_unclear} unclear")
        lines.append(f"- **Claims of the article:** {', '.join(parts)} (see below).")
    if edges:
        lines.append(f"- **Edge of range ({len(edges)}):** " + "; ".join(edges) + ".")
    best_cfg = study.path / "best_config.yaml"
    if best_cfg.is_file():
        try:  # a path a reader can use from the project root, not this machine's
            best_cfg = best_cfg.resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        lines.append(
            f"- **Train the best setting:** {_code(f'python -m tuner.train --config {best_cfg}')}."
        )
    command = study.meta.get("command")
    if command:
        lines.append(f"- **Reproduce the study:** {_code(_command_text(command))}.")
    lines.append("")
    return lines


def _command_text(command: Any) -> str:
    """The command from study.yaml as one line (it may be stored as a list of arguments)."""
    if isinstance(command, (list, tuple)):
        return shlex.join(str(c) for c in command)
    return " ".join(str(command).split())


def _study_section(study: StudyFiles, ranking: pd.DataFrame, counts: Counts) -> list[str]:
    """The summary table, then the searched space and package versions."""
    search = _mapping(study.meta, "search")
    best = ranking.iloc[0] if len(ranking) else None
    rows: list[tuple[str, str]] = [
        ("study", study.name),
        ("trials", str(counts.total)),
        ("completed", str(counts.completed)),
        ("early-stopped", str(counts.early_stopped)),
        ("diverged", counts.diverged_share()),
        ("errors", str(counts.errors)),
    ]
    if counts.unfinished:
        rows.append(("running or pending", str(counts.unfinished)))
    if search:
        metric = f"{search.get('metric', study.objective)} ({search.get('mode', 'min')})"
        rows.append(("metric", metric))
    rows.append(("objective column", study.objective))
    if best is not None:
        label = f"case {best['setting']}" if study.has_cases else f"trial {best['best_trial']}"
        rows.append(("best objective", f"{an.fmt(best['mean'])} ({label}, n={best['n']})"))
        rows.append(("best config", best["config"] or "-"))
    command = study.meta.get("command")
    rows.append(("command", _code(_command_text(command)) if command else "- (not in study.yaml)"))
    lines = [H_STUDY, "", _md_table(pd.DataFrame(rows, columns=["", "value"])), ""]
    if study.space:
        lines += [
            "Searched space (from study.yaml):",
            "",
            "```yaml",
            yaml.safe_dump(study.space, sort_keys=False).rstrip(),
            "```",
            "",
        ]
    versions = study.meta.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    for note in study.notes:
        lines += [f"> Note: {note}", ""]
    return lines


def _image(rel: str, alt: str) -> str:
    """A markdown image link to a plot, relative to report.md."""
    return f"![{alt}]({rel})"


def _ablation_sections(
    study: StudyFiles, setup: an.AblationSetup, claims: pd.DataFrame
) -> list[str]:
    """The per-case table (with how E, S and the target were chosen) and the claims table."""
    metrics = an.trial_metrics(study.trials, study.epochs, setup)
    table = an.case_summary(metrics, setup)
    lines = [
        H_ABLATION,
        "",
        f"Every cell is the mean [min-max] over the case's seeds. Loss after **E = {setup.epoch}** "
        "epochs (the shortest, over cases, of each case's longest non-diverged run) and after "
        f"**S = {an.fmt(setup.seconds, 3)} s** of training (the same rule on `train_time_s`; a run "
        "that ended earlier keeps its last loss, a diverged run counts as inf). Target loss "
        f"**{an.fmt(setup.target)}** = {setup.target_source}. A spike is an excursion above "
        f"**{setup.factor:g} x** the best loss so far, counted once per excursion (a blow-up "
        "counts). Final chunks N: the schedule's chunk count at the last epoch (1 = whole series).",
        "",
    ]
    lines += [_md_table(table) if len(table) else "No finished case runs.", ""]
    lines += [H_CLAIMS, "", "Verdict rule: " + an.VERDICT_RULE, "", _md_table(claims), ""]
    return lines


def _best_table(study: StudyFiles, k: int = TOP_N) -> pd.DataFrame:
    """The ``k`` best trials with their metrics and configuration."""
    best = an.best_rows(an.finished(study.trials), study.objective, k=k)
    keys = [c for c in an.config_columns(study.trials)]
    rows = []
    for _, r in best.iterrows():
        row: dict[str, Any] = {"trial": r["trial_id"]}
        if study.has_cases:
            row["case"] = r.get("case", "")
        for col in (study.objective, "best_loss", "epochs", "seconds"):
            if col in r.index and col not in row:
                row[col] = an.fmt(float(r[col])) if pd.notna(r[col]) else "-"
        row["config"] = an.setting_key(r, keys)
        rows.append(row)
    return pd.DataFrame(rows)


def _diverged_table(study: StudyFiles, limit: int = 20) -> pd.DataFrame:
    """Up to ``limit`` diverged trials with the epoch they blew up at and their configuration."""
    t = study.trials
    d = t[an.diverged_trials(t, study.objective)]
    keys = [c for c in an.config_columns(t)]
    rows = []
    for _, r in d.head(limit).iterrows():
        row: dict[str, Any] = {"trial": r["trial_id"]}
        if study.has_cases:
            row["case"] = r.get("case", "")
        if "diverged_epoch" in r.index:
            row["diverged at epoch"] = an.fmt(float(r["diverged_epoch"]))
        row["config"] = an.setting_key(r, keys)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def make_report(
    study_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for the study in ``study_dir``; return report.md.

    ``out_dir`` defaults to the study folder. Raises ReportError when the folder or its
    trials.csv is missing. Every file is written atomically, so a report being regenerated is
    never seen half-written.
    """
    study = load_study(study_dir)
    out = Path(out_dir) if out_dir is not None else study.path
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    search = _mapping(study.meta, "search")
    target_loss = search.get("target_loss")
    try:
        target_loss = float(target_loss) if target_loss is not None else None
    except (TypeError, ValueError):
        target_loss = None

    counts = count_trials(study)
    ranking = an.rank_settings(study.trials, study.objective)
    edges = an.edge_warnings(study.trials, study.space, study.objective, top_k=TOP_N)
    setup: an.AblationSetup | None = None
    claims: pd.DataFrame | None = None
    has_epochs = not study.epochs.empty
    if study.has_cases and has_epochs:
        setup = an.ablation_setup(study.trials, study.epochs, target_loss)
        claims = an.claims_table(study.trials, study.epochs, setup)

    lines = [f"# Report: {study.name}", ""]
    lines += _summary(study, ranking, counts, claims, edges)
    lines += _study_section(study, ranking, counts)

    with _style():
        groups = _curve_groups(study) if has_epochs else []
        what = (
            "case (mean over seeds, band = min-max)"
            if study.has_cases
            else f"the {TOP_N} best trials"
        )
        lines += [H_CURVES, ""]
        if groups:
            for axis, fname, label in (
                ("epoch", "loss_vs_epoch.png", "per epoch"),
                ("train_time_s", "loss_vs_seconds.png", "per second of training"),
            ):
                fig = _plot_curves(study, groups, axis, f"{study.name}: training loss {label}")
                _save(fig, plots / fname)
                lines += [_image(f"plots/{fname}", f"training loss {label}"), ""]
            lines += [
                f"One line per {what}. Hollow circles: the chunk schedule moved to its next "
                "stage; red x: the last finite loss of a run that diverged.",
                "",
            ]
        else:
            lines += ["No epochs recorded: no curves to draw.", ""]

        if setup is not None and claims is not None:
            lines += _ablation_sections(study, setup, claims)

        lines += [H_SEARCH, "", H_AXIS, ""]
        keys = searched_keys(study)
        if keys and study.objective in study.trials.columns:
            _save(_plot_axes(study, keys), plots / "axis_objective.png")
            lines += [
                _image("plots/axis_objective.png", "objective against each hyperparameter"),
                "",
                "Dots: finished trials (hollow: early-stopped); gold star: the best "
                "trial; red x at the top: diverged trials (objective +inf). Grey band: the "
                "searched range.",
                "",
            ]
        else:
            lines += ["No searched keys in trials.csv: no axis plot.", ""]

        lines += [H_EDGES, ""]
        if edges:
            lines += [f"- {w}" for w in edges] + [""]
        else:
            lines += [
                f"No best value lies in the outer {an.EDGE_SHARE:.0%} of its searched range "
                "(log scale for log ranges).",
                "",
            ]

        lines += [
            H_DIVERGED,
            "",
            f"Diverged: {counts.diverged_share()}. A large share "
            "means the ranges reach unstable settings (often the learning rate's upper "
            "end): narrow them or add clipping.",
            "",
        ]
        div_table = _diverged_table(study)
        if len(div_table):
            lines += [_md_table(div_table), ""]

        lines += [H_BEST, ""]
        best_table = _best_table(study)
        lines += [_md_table(best_table) if len(best_table) else "No finished trial.", ""]
        if study.has_cases and has_epochs:
            best_ids = [str(t) for t in best_table.get("trial", [])]
            colors = _colors(len(best_ids))
            best_groups = [
                Group(f"#{i + 1} {t}", (t,), c)
                for i, (t, c) in enumerate(zip(best_ids, colors, strict=True))
            ]
            if best_groups:
                _save(
                    _plot_curves(
                        study, best_groups, "epoch", f"{study.name}: the {TOP_N} best trials"
                    ),
                    plots / "best_trials.png",
                )
                lines += [_image("plots/best_trials.png", "best trials"), ""]
        elif groups:
            lines += ["Their curves are the training curves above.", ""]

        lines += [H_GRAD, ""]
        if groups and "grad_norm_mean" in study.epochs.columns:
            _save(_plot_gradients(study, groups), plots / "grad_norms.png")
            lines += [
                _image("plots/grad_norms.png", "gradient norms"),
                "",
                "Top: mean pre-clip global gradient norm per epoch (log scale); bottom: "
                "share of optimizer steps whose gradient was clipped.",
                "",
            ]
        else:
            lines += ["No gradient norms recorded.", ""]

        lines += [H_IMPORTANCE, ""]
        importance, why = parameter_importance(study)
        if importance is not None:
            _save(_plot_importance(importance, study.name), plots / "importance.png")
            table = pd.DataFrame(
                {"parameter": importance.index, "importance": [an.fmt(v, 3) for v in importance]}
            )
            lines += [
                why,
                "",
                _md_table(table),
                "",
                _image("plots/importance.png", "importance"),
                "",
            ]
        else:
            lines += [why, ""]

    report = out / "report.md"
    atomic_write_bytes(report, "\n".join(lines).rstrip("\n").encode("utf-8") + b"\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m tuner.report results/NAME [--out DIR]``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m tuner.report",
        description="Write report.md and plots/*.png for a study folder (results/NAME).",
    )
    parser.add_argument(
        "study_dir", help="the study folder holding trials.csv, epochs.csv, study.yaml"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the study folder)")
    args = parser.parse_args(argv)
    try:
        report = make_report(args.study_dir, args.out)
    except ReportError as exc:
        print(f"tuner.report: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
