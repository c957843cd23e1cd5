"""Two reference predictors on the model's own inputs and split, closed form, no training loop.

- ``zero``: predicts 0 in the standardised units the loss is measured in, i.e. the training
  mean of the Q values (whose raw value is close to 0). Its training loss is 1 by construction.
- ``ridge``: a linear map (with an unpenalised intercept) from the same 128-lag standardised
  inputs to the same standardised Q targets, fitted by the normal equations. Its penalty
  ``alpha`` is chosen on the training part only, forecasting-style: fit on the first 80% of every
  training series' steps, score on the last 20%, take the best alpha of a grid, refit on every
  training step. The held-out steps are never seen.

Losses are the training loop's masked MSE (mean over counted steps and actions). Everything is
accumulated in float64 over chunks of steps into a (window+1) x (window+1) Gram matrix, so a
source-scale data set (15 x 20,000 steps) costs about a second and little memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tuner.core.config import DataConfig
from tuner.core.data import Prepared, SeriesSet, prepare
from tuner.core.prices import data_constants

CHUNK_STEPS = 2048
FIT_SHARE = 0.8
"""Of every training series, the leading share of steps that fits ridge while alpha is chosen."""
ALPHAS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Candidate penalties, in units of the number of fitted steps (the Gram diagonal's scale)."""


@dataclass
class Moments:
    """Sufficient statistics of a least-squares problem: X'X, X'Y, sum of Y^2, rows, targets."""

    gram: np.ndarray
    xty: np.ndarray
    yty: float
    rows: int
    n_targets: int

    @classmethod
    def empty(cls, n_features: int, n_targets: int) -> Moments:
        return cls(np.zeros((n_features, n_features)), np.zeros((n_features, n_targets)), 0.0, 0, n_targets)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        self.gram += x.T @ x
        self.xty += x.T @ y
        self.yty += float(np.sum(y * y))
        self.rows += len(x)

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.gram + other.gram,
            self.xty + other.xty,
            self.yty + other.yty,
            self.rows + other.rows,
            self.n_targets,
        )

    def mse(self, w: np.ndarray | None) -> float:
        """Mean squared error of predicting X @ w (w None: predicting 0) over every target."""
        if self.rows == 0:
            return math.nan
        sq = (
            self.yty
            if w is None
            else (self.yty - 2 * float(np.sum(w * self.xty)) + float(np.sum(w * (self.gram @ w))))
        )
        return max(sq, 0.0) / (self.rows * self.n_targets)


def design(inputs: torch.Tensor) -> np.ndarray:
    """(n, window) inputs -> (n, window + 1) float64 with a trailing column of ones (intercept)."""
    x = inputs.detach().to("cpu", torch.float64).numpy()
    return np.concatenate([x, np.ones((len(x), 1))], axis=1)


def moments(data: SeriesSet, cut: np.ndarray | None = None) -> tuple[Moments, Moments]:
    """(moments of counted steps before `cut`, moments of counted steps from `cut` on), per row.

    `cut` (S,) is a step index per series; None puts every counted step in the first part."""
    n_targets = data.targets.shape[-1]
    before, after = (Moments.empty(data.window + 1, n_targets) for _ in range(2))
    steps = torch.arange(data.steps, device=data.mask.device)
    cut_t = None if cut is None else torch.as_tensor(cut, device=data.mask.device)
    for a in range(0, data.steps, CHUNK_STEPS):
        b = min(a + CHUNK_STEPS, data.steps)
        mask = data.mask[:, a:b]
        if not bool(mask.any()):
            continue
        x, y = data.inputs(a, b), data.targets[:, a:b]
        early = torch.ones_like(mask) if cut_t is None else steps[None, a:b] < cut_t[:, None]
        for part, keep in ((before, mask & early), (after, mask & ~early)):
            if bool(keep.any()):
                part.add(design(x[keep]), y[keep].detach().to("cpu", torch.float64).numpy())
    return before, after


def ridge_solve(m: Moments, alpha: float) -> np.ndarray:
    """argmin_w |Xw - Y|^2 + alpha |w without intercept|^2 from the moments (normal equations)."""
    penalty = np.eye(len(m.gram)) * alpha
    penalty[-1, -1] = 0.0  # the intercept is not penalised
    return np.linalg.lstsq(m.gram + penalty, m.xty, rcond=None)[0]


def choose_alpha(fit: Moments, score: Moments) -> float:
    """The candidate of `ALPHAS` (scaled by the fitted rows) with the lowest loss on `score`."""
    losses = [(score.mse(ridge_solve(fit, a * fit.rows)), a * fit.rows) for a in ALPHAS]
    return min(losses, key=lambda t: (not math.isfinite(t[0]), t[0]))[1]


def baselines(data: Prepared) -> dict[str, dict[str, Any]]:
    """{zero: {train, val}, ridge: {train, val, alpha}}; val is None without a hold-out."""
    lengths = data.train.lengths.detach().cpu().numpy()
    cut = np.maximum(1, np.round(FIT_SHARE * lengths)).astype(np.int64)
    fit_part, score_part = moments(data.train, cut)
    alpha = choose_alpha(fit_part, score_part) if score_part.rows else 0.0
    train = fit_part + score_part
    w = ridge_solve(train, alpha)
    val = moments(data.val)[0] if data.val is not None else None

    def on_val(weights: np.ndarray | None) -> float | None:
        return None if val is None else val.mse(weights)

    return {
        "zero": {"train": train.mse(None), "val": on_val(None)},
        "ridge": {"train": train.mse(w), "val": on_val(w), "alpha": float(alpha)},
    }


def reference(cfg: DataConfig, data: Prepared | None = None) -> dict[str, Any]:
    """What a study states once at its start: the data's constants, the split and baselines.

    {data_constants: {...} (see `data_constants`), split: {train_series, train_steps,
    val_series, val_steps, ...}, baselines: {zero: {train, val}, ridge: {train, val, alpha}}}
    in plain values (YAML-safe); study.yaml holds these three keys at its top level."""
    data = data if data is not None else prepare(cfg, device="cpu")
    split = {"window": cfg.window, "val_fraction": cfg.val_fraction, **data.split()}
    return {"data_constants": data_constants(cfg), "split": split, "baselines": baselines(data)}


def describe(ref: dict[str, Any]) -> list[str]:
    """Lines for a terminal: the split and both baselines' train and held-out losses."""
    s, b = ref["split"], ref["baselines"]
    parts = ([f"the last {s['val_fraction']:.0%} of each series"] if s["val_fraction"] else []) + (
        [f"{s['val_whole_series']} whole series"] if s["val_whole_series"] else []
    )
    held = f"held out: {s['val_steps']:,} steps ({' and '.join(parts)})" if s["val_steps"] else "no hold-out"
    lines = [f"split: {s['train_series']} training series, {s['train_steps']:,} training steps; " + held]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines.append(
        f"baselines (masked MSE, standardised): zero train {fmt(b['zero']['train'])} "
        f"held-out {fmt(b['zero']['val'])}; ridge on the {s['window']} lags "
        f"(alpha {b['ridge']['alpha']:.3g}) train {fmt(b['ridge']['train'])} "
        f"held-out {fmt(b['ridge']['val'])}"
    )
    return lines
