"""The loss measures of one run, and the one rule for a run that diverged.

Pure Python and numpy (no Ray, no pandas), so the trial's running objective (inside Ray
workers), the trial tables (`tuner.results`) and the report all compute them the same way.

The rule for blow-ups: a NaN or +-inf loss is a blow-up and counts as +inf. Training stops at
the first blow-up, so a run whose last loss is a blow-up has **diverged**, and every measure of
a diverged run is +inf: its final, best and mean loss and its time to target. A search must never
prefer a run that blew up, however low it got before; the loss it reached before the blow-up is
`final_finite_loss`, a separate measure the report uses to draw where a run ended.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

EPOCH_COLUMNS = (
    "epoch",
    "train_loss_running",
    "train_loss",
    "val_loss",
    "best_val_loss",
    "best_epoch",
    "chunks",
    "stage",
    "lr",
    "grad_norm_mean",
    "grad_norm_max",
    "clip_fraction",
    "epoch_time_s",
    "eval_time_s",
    "steps_per_s",
    "timesteps",
    "updates",
    "train_time_s",
    "wall_time",
)
"""The per-epoch record, in column order. The three losses (masked MSE, standardised units):

- `train_loss_running`: the squared error summed over the epoch's training steps as the
  optimizer met them (the weights change N times during the epoch; noise on), divided by their
  number: what Keras prints. At N=100 it averages 100 different models, at N=1 it is measured
  before the epoch's single update, so it does not compare across N.
- `train_loss`: the model as it stands at the epoch's end, on the same training steps, eval mode
  (noise off), state from zero: comparable across N and with `val_loss`.
- `val_loss`: the same model on the held-out steps (NaN without a hold-out).

`best_val_loss` is the `val_loss` of the best epoch so far, `best_epoch` that epoch: the lowest
`val_loss` (lowest `train_loss` without a hold-out), where a new best must beat the old by more
than `train.early_stopping.min_delta` (0 by default, then it is simply the lowest).
`eval_time_s` is the time of the end-of-epoch evaluation, not counted in `epoch_time_s` or the
cumulative `train_time_s`; `timesteps`, `updates`, `train_time_s` are cumulative. `wall_time`:
Unix time at the epoch's end (evaluation included), which puts the epochs of concurrent trials
in the order they ended (the report's anytime curve)."""


def losses_array(values: Iterable[float]) -> np.ndarray:
    """Losses as a float array with NaN and -inf turned into +inf (a blow-up)."""
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    return np.where(np.isnan(x) | np.isneginf(x), np.inf, x)


def diverged(losses: Iterable[float]) -> bool:
    """The run ended in a blow-up: its last loss is NaN or infinite."""
    y = losses_array(losses)
    return bool(y.size) and not math.isfinite(y[-1])


def final_loss(losses: Iterable[float]) -> float:
    """The last loss (+inf for a diverged run); NaN for a run with no epochs."""
    y = losses_array(losses)
    return float(y[-1]) if y.size else math.nan


def best_loss(losses: Iterable[float]) -> float:
    """The lowest loss (+inf for a diverged run); NaN for a run with no epochs."""
    y = losses_array(losses)
    if not y.size:
        return math.nan
    return math.inf if diverged(y) else float(np.min(y))


def auc(losses: Iterable[float]) -> float:
    """Mean loss over the run: the area under the loss-per-epoch curve divided by its length.

    One number for "how low was the loss on average while training", which rewards fast early
    progress as well as a low end point. +inf for a diverged run; NaN for no epochs."""
    y = losses_array(losses)
    return float(np.mean(y)) if y.size else math.nan


def time_to_target(times: Iterable[float], losses: Iterable[float], target: float) -> float:
    """The first value of `times` at which the loss is <= `target`; +inf when never reached and
    for a diverged run.

    `times` is whatever axis the caller wants the answer in (cumulative seconds, epochs or time
    steps), one value per loss."""
    t = np.asarray(times if isinstance(times, np.ndarray) else list(times), dtype=float)
    y = losses_array(losses)
    if t.shape != y.shape:
        raise ValueError(f"time_to_target: {t.size} times but {y.size} losses")
    if diverged(y):
        return math.inf
    hits = np.flatnonzero(y <= target)
    return float(t[hits[0]]) if hits.size else math.inf


def final_finite_loss(losses: Iterable[float]) -> float:
    """The last finite loss (for a diverged run: the loss before the blow-up); NaN if none."""
    y = losses_array(losses)
    finite = y[np.isfinite(y)]
    return float(finite[-1]) if finite.size else math.nan
