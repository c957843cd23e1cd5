"""Price series, Bellman Q targets and lagged-difference inputs, ready for stateful TBPTT.

The pipeline is ``prices`` (`tuner.core.prices`: generated or read, checked) -> ``prepare`` ->
``Prepared`` holding a training and an optional validation ``SeriesSet``. A ``SeriesSet`` keeps
only the padded, standardised one-step differences of each series and builds a chunk's
``window``-wide inputs on demand, because the full input tensor (15 x 20,000 x 128 floats)
would be ~150 MB for data that is only ~1 MB of differences.

Conventions (see STUDY.md, "Inputs and targets"):

- A series of ``L`` prices has ``L - 1`` steps ``t = 0 .. L-2``; step ``t`` predicts the Q values
  of acting at ``t``, whose rewards use ``p[t+1] - p[t]``.
- Differences ``d[t] = p[t] - p[t-1]`` with ``d[0] = 0``; the input at step ``t`` is
  ``d[t], d[t-1], ..., d[t-window+1]`` (newest first), zero before the series starts.
- Actions: 0 = buy (position +1), 1 = sell (-1), 2 = flat (0) when ``flat_action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch

from tuner.core.config import DataConfig
from tuner.core.prices import check_split, prices

# ---------------------------------------------------------------- Q targets


def positions(flat_action: bool) -> np.ndarray:
    """Position held by each action: buy +1, sell -1, and flat 0 when `flat_action`."""
    return np.array([1.0, -1.0, 0.0] if flat_action else [1.0, -1.0])


def pad_series(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Series of different lengths -> (S, max length) float64 padded by repeating each series'
    last price (so padded one-step changes are zero), and the lengths (S,) int64."""
    lengths = np.array([len(p) for p in series], dtype=np.int64)
    out = np.empty((len(series), int(lengths.max())), dtype=np.float64)
    for i, p in enumerate(series):
        out[i, : len(p)] = p
        out[i, len(p) :] = p[-1]
    return out, lengths


def q_targets(
    prices: Sequence[np.ndarray] | np.ndarray,
    gamma: float,
    cost: float = 0.0,
    flat_action: bool = False,
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Bellman Q values (S, Tmax-1, A) float64 of every step and action, computed backwards.

    ``Q[t,a] = r[t,a] + gamma * max_a' (Q[t+1,a'] - cost*|pos(a') - pos(a)|)`` with
    ``r[t,a] = pos(a)*(p[t+1]-p[t])`` and Q = 0 beyond a series' last step, so
    ``Q[L-2] = r[L-2]``: the cost is that of switching from `a` to the next action.
    `prices` is a list of 1-D series or a padded (S, Tmax) array with `lengths` (None: all
    full). Steps ``t >= L-1`` of a shorter series are 0."""
    if isinstance(prices, np.ndarray) and prices.ndim == 2:
        padded = np.asarray(prices, dtype=np.float64)
        lens = np.full(len(padded), padded.shape[1]) if lengths is None else np.asarray(lengths)
    else:
        padded, lens = pad_series([np.asarray(p, dtype=np.float64) for p in prices])
    s, n = padded.shape
    steps = n - 1
    pos = positions(flat_action)
    change = np.diff(padded, axis=1)
    change[np.arange(steps)[None, :] >= (lens[:, None] - 1)] = 0.0
    # Time-major so each backward step touches one contiguous (S, A) block.
    reward = np.ascontiguousarray(change.T[:, :, None] * pos[None, None, :])
    q = np.empty_like(reward)
    switch = cost * np.abs(pos[None, :] - pos[:, None])  # switch[a, a'] charged after action a
    nxt = np.zeros((s, len(pos)))
    # Padded steps have zero reward and zero Q after them, so they come out 0 without masking;
    # a series' last real step then sees Q[t+1] = 0 and max_a'(0 - switch) = 0 (stay put).
    for t in range(steps - 1, -1, -1):
        if cost == 0.0:
            cont = nxt.max(axis=1, keepdims=True)
        else:
            cont = (nxt[:, None, :] - switch[None, :, :]).max(axis=2)
        nxt = reward[t] + gamma * cont
        q[t] = nxt
    return np.ascontiguousarray(q.transpose(1, 0, 2))


# ---------------------------------------------------------------- tensors for training


def differences(series: Sequence[np.ndarray], steps: int) -> np.ndarray:
    """One-step differences (S, steps): ``d[t] = p[t] - p[t-1]``, ``d[0] = 0``, and 0 on a
    series' padded steps ``t >= L-1``."""
    out = np.zeros((len(series), steps), dtype=np.float64)
    for i, p in enumerate(series):
        n = len(p) - 1  # real steps of this series
        out[i, 1:n] = np.diff(p[:n])
    return out


@dataclass
class SeriesSet:
    """Series ready for stateful TBPTT, as float32/bool/int64 tensors on one device.

    ``diffs`` (S, window-1+T): standardised differences with ``window - 1`` leading pad values
    (a raw difference of 0, standardised) so any step's window is a plain slice;
    ``targets`` (S, T, A): standardised Q values, 0 where ``mask`` is False;
    ``mask`` (S, T): True on the steps that count in the loss (real steps; for a tail hold-out
    only the held-out steps); ``lengths`` (S,): steps that hold data (the LSTM must run through
    them, loss or not). Shorter series are padded at the end."""

    diffs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    window: int

    @property
    def steps(self) -> int:
        """T, the number of steps of the longest series."""
        return int(self.targets.shape[1])

    @property
    def n_series(self) -> int:
        return int(self.targets.shape[0])

    @property
    def n_real(self) -> int:
        """Number of steps that count in the loss (``mask.sum()``)."""
        return int(self.mask.sum())

    def inputs(self, start: int, stop: int, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Inputs (B, stop-start, window) of steps ``start .. stop-1``: element ``[b, i, k]`` is
        the standardised ``d[start+i-k]``, newest first, built from a view by `unfold`."""
        if not 0 <= start < stop <= self.steps:
            raise ValueError(
                f"inputs: need 0 <= start < stop <= {self.steps}; got start={start}, stop={stop}"
            )
        d = self.diffs if rows is None else self.diffs[rows]
        seg = d[:, start : stop + self.window - 1]
        # unfold gives oldest-first windows: [..., j] = d[t - (window-1) + j].
        return seg.unfold(1, self.window, 1).flip(-1)

    def select(self, rows: slice | torch.Tensor) -> SeriesSet:
        """The rows `rows` (e.g. a mini-batch of series), keeping T so chunks stay aligned."""
        return SeriesSet(
            self.diffs[rows], self.targets[rows], self.mask[rows], self.lengths[rows], self.window
        )

    def to(self, device: str | torch.device) -> SeriesSet:
        """The same set on `device`."""
        return SeriesSet(
            self.diffs.to(device),
            self.targets.to(device),
            self.mask.to(device),
            self.lengths.to(device),
            self.window,
        )


@dataclass
class Prepared:
    """Training and validation sets plus the statistics that standardised them.

    Validation keeps whole rows: a whole held-out series (``data.val_series``) counts from step
    0; for a tail hold-out (``data.val_fraction``) the row is the full series and its ``mask`` is
    False on the leading training part, which only warms the LSTM state. ``val_warmup`` is the
    number of leading steps masked in every validation row (the training part when all series
    have the same length, 0 when a whole series is held out), so a caller may run those steps
    without computing the loss. ``val_covers_train``: the first validation rows are the training
    rows uncut (a tail hold-out), so one pass over them scores both sets. Raw Q =
    ``targets * target_std + target_mean``; raw difference = ``diffs * diff_std + diff_mean``."""

    train: SeriesSet
    val: SeriesSet | None
    val_warmup: int
    target_mean: float
    target_std: float
    diff_mean: float
    diff_std: float
    n_actions: int
    val_covers_train: bool = False

    def split(self) -> dict[str, Any]:
        """The split in numbers: series and loss-counted steps of each part, for printing."""
        val = self.val
        return {
            "train_series": self.train.n_series,
            "train_steps": self.train.n_real,
            "val_series": 0 if val is None else val.n_series,
            "val_steps": 0 if val is None else val.n_real,
            "val_whole_series": 0
            if val is None
            else val.n_series - (self.train.n_series if self.val_covers_train else 0),
        }


def _std_or_one(x: np.ndarray) -> float:
    std = float(x.std()) if x.size else 0.0
    return std if std > 0 else 1.0


def _series_set(
    series: Sequence[np.ndarray],
    cfg: DataConfig,
    loss_from: Sequence[int],
    diff_mean: float,
    diff_std: float,
    target_mean: float,
    target_std: float,
    device: str | torch.device,
) -> SeriesSet:
    padded, lens = pad_series(series)
    steps_per = lens - 1
    steps = int(steps_per.max())
    q = q_targets(padded, cfg.gamma, cfg.cost, cfg.flat_action, lens)
    t = np.arange(steps)[None, :]
    mask = (t < steps_per[:, None]) & (t >= np.asarray(loss_from)[:, None])
    targets = np.where(mask[:, :, None], (q - target_mean) / target_std, 0.0)
    d = (differences(series, steps) - diff_mean) / diff_std
    pad = np.full((len(series), cfg.window - 1), (0.0 - diff_mean) / diff_std)
    diffs = np.concatenate([pad, d], axis=1)
    return SeriesSet(
        diffs=torch.as_tensor(diffs, dtype=torch.float32, device=device),
        targets=torch.as_tensor(targets, dtype=torch.float32, device=device),
        mask=torch.as_tensor(mask, dtype=torch.bool, device=device),
        lengths=torch.as_tensor(steps_per, dtype=torch.int64, device=device),
        window=cfg.window,
    )


def prepare_from(
    series: Sequence[np.ndarray], cfg: DataConfig, device: str | torch.device = "cpu"
) -> Prepared:
    """`prepare` on given price series (used by `prepare`; handy for tests and real data).

    Split: the last ``cfg.val_series`` series are held out whole; of every other series the last
    ``round(val_fraction * steps)`` steps (at least 1) are held out. Training rows are cut to
    their training prices, so their Q targets and every statistic ignore validation prices.
    Statistics: ``diff_mean/std`` over the one-step differences of the training prices;
    ``target_mean/std`` one scalar each over all training Q values (a zero std becomes 1)."""
    series = [np.asarray(p, dtype=np.float64) for p in series]
    train_steps = check_split(series, cfg)
    n_train_series = len(train_steps)
    kept = series[:n_train_series]
    train_prices = [p[: n + 1] for p, n in zip(kept, train_steps)]

    diffs = np.concatenate([np.diff(p) for p in train_prices])
    diff_mean, diff_std = float(diffs.mean()), _std_or_one(diffs)
    q_train = q_targets(train_prices, cfg.gamma, cfg.cost, cfg.flat_action)
    real = np.arange(q_train.shape[1])[None, :] < np.asarray(train_steps)[:, None]
    q_real = q_train[real]
    target_mean, target_std = float(q_real.mean()), _std_or_one(q_real)
    stats = (diff_mean, diff_std, target_mean, target_std)

    train = _series_set(train_prices, cfg, [0] * len(train_prices), *stats, device)
    val_rows: list[np.ndarray] = []
    loss_from: list[int] = []
    if cfg.val_fraction > 0:
        val_rows += kept
        loss_from += train_steps
    val_rows += series[n_train_series:]
    loss_from += [0] * cfg.val_series
    val = _series_set(val_rows, cfg, loss_from, *stats, device) if val_rows else None
    return Prepared(
        train=train,
        val=val,
        val_warmup=min(loss_from) if loss_from else 0,
        target_mean=target_mean,
        target_std=target_std,
        diff_mean=diff_mean,
        diff_std=diff_std,
        n_actions=cfg.n_actions,
        val_covers_train=cfg.val_fraction > 0,
    )


def prepare(cfg: DataConfig, device: str | torch.device = "cpu") -> Prepared:
    """Prices from `cfg` (generated or loaded), split, standardised and moved to `device`."""
    return prepare_from(prices(cfg), cfg, device)
