"""Held-out truth: the study's reference predictors, gains over them, and overfitting.

study.yaml states once, for the data the trials trained on, the split and two closed-form
baselines (`tuner.core.baselines`): predicting zero and ridge regression on the same lags, each
with a training and a held-out loss. The report measures every setting against them:

- **gain** = 1 - loss / zero_loss: the share of the zero predictor's error a model removes
  (0: no better than predicting zero; 1: perfect). Margins between settings are stated on this
  scale, not on the raw loss near 1.0, where a 5% difference of the loss can be most of what any
  model learnt.
- **against ridge**: "held-out loss 0.74 vs ridge 0.83: 11% better" (the relative difference).
- **overfitting**: a run whose held-out loss ended more than `OVERFIT_MARGIN` above its own
  minimum while its training loss kept falling (see `overfit_rows`).

Pure pandas/numpy; nothing reads files or draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tuner.core.metrics import losses_array
from tuner.report.text import fmt

#: Epoch columns (tuner.core.metrics.EPOCH_COLUMNS): the three losses the report reads.
RUNNING, TRAIN, VAL = "train_loss_running", "train_loss", "val_loss"

#: A run overfits when its last held-out loss is more than this share above its own minimum
#: while its training loss kept falling.
OVERFIT_MARGIN = 0.10

OVERFIT_RULE = (
    f"A run is listed when its last held-out loss (`val_loss`) is more than {OVERFIT_MARGIN:.0%} "
    "above its own minimum while its end-of-epoch training loss (`train_loss`) is lower at the end "
    "than at that minimum: it kept fitting its training series and got worse on unseen ones. "
    "*Gap opened*: the epoch of the held-out minimum; *margin crossed*: the first later epoch "
    f"whose held-out loss is more than {OVERFIT_MARGIN:.0%} above it."
)


def _number(value: Any) -> float:
    """A float from a YAML value; NaN for None, text or anything else."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x


@dataclass(frozen=True)
class Baselines:
    """The two reference predictors' losses from study.yaml (NaN where not stated)."""

    zero_train: float = math.nan
    zero_val: float = math.nan
    ridge_train: float = math.nan
    ridge_val: float = math.nan
    ridge_alpha: float = math.nan

    @property
    def known(self) -> bool:
        """study.yaml had a ``baselines`` section with at least the zero predictor's loss."""
        return math.isfinite(self.zero_train) or math.isfinite(self.zero_val)

    @property
    def has_val(self) -> bool:
        return math.isfinite(self.ridge_val) and math.isfinite(self.zero_val)

    def zero(self, column: str) -> float:
        """The zero predictor's loss on the part of the data ``column`` is measured on; 1.0
        (its training loss by construction, standardised units) when study.yaml does not say."""
        value = self.zero_val if column == VAL else self.zero_train
        return value if math.isfinite(value) and value > 0 else 1.0

    def ridge(self, column: str) -> float:
        return self.ridge_val if column == VAL else self.ridge_train

    def hlines(self, column: str) -> dict[str, float]:
        """Label -> value of the baselines on ``column``'s part of the data, for plots."""
        part = "held-out" if column == VAL else "train"
        out = {}
        for name, value in (
            ("zero", self.zero_val if column == VAL else self.zero_train),
            ("ridge", self.ridge(column)),
        ):
            if math.isfinite(value):
                out[f"{name} predictor, {part} ({fmt(value, 3)})"] = value
        return out


def read_baselines(meta: dict[str, Any]) -> Baselines:
    """The ``baselines`` section of study.yaml ({zero: {train, val}, ridge: {train, val, alpha}})."""
    b = meta.get("baselines")
    if not isinstance(b, dict):
        return Baselines()
    zero = b.get("zero") if isinstance(b.get("zero"), dict) else {}
    ridge = b.get("ridge") if isinstance(b.get("ridge"), dict) else {}
    return Baselines(
        _number(zero.get("train")),
        _number(zero.get("val")),
        _number(ridge.get("train")),
        _number(ridge.get("val")),
        _number(ridge.get("alpha")),
    )


def gain(loss: Any, zero_loss: float) -> Any:
    """1 - loss / zero_loss: the share of the zero predictor's error removed (higher is better;
    a blow-up is -inf)."""
    g = 1.0 - losses_array(np.atleast_1d(loss)) / zero_loss
    return g if np.ndim(loss) else float(g[0])


def against(loss: float, ref: float, ref_name: str, what: str = "held-out loss") -> str:
    """``held-out loss 0.74 vs ridge 0.83: 11% better`` (or worse)."""
    if not (math.isfinite(loss) and math.isfinite(ref) and ref > 0):
        return f"{what} {fmt(loss)} vs {ref_name} {fmt(ref)}"
    rel = (ref - loss) / ref
    word = "better" if rel > 0 else "worse"
    return f"{what} {fmt(loss)} vs {ref_name} {fmt(ref)}: {abs(rel):.0%} {word}"


def data_lines(meta: dict[str, Any]) -> list[str]:
    """The data's constants and the split, from study.yaml, as markdown bullet lines."""
    lines: list[str] = []
    dc = meta.get("data_constants")
    if isinstance(dc, dict) and dc:
        if dc.get("source") == "file":
            lines.append(f"- **Data:** the file `{dc.get('path')}` (real prices).")
        else:
            lines.append(
                f"- **Data:** synthetic, preset `{dc.get('preset')}`: two waves with periods "
                f"{fmt(_number(dc.get('period_a')), 4)} and {fmt(_number(dc.get('period_b')), 4)} "
                f"steps, noise std {fmt(_number(dc.get('noise_std')), 3)}, angle walk step "
                f"{fmt(_number(dc.get('walk_step')), 3)}; {dc.get('n_series')} series x "
                f"{dc.get('length')} steps, data seed {dc.get('seed')}."
            )
    s = meta.get("split")
    if isinstance(s, dict) and s:
        held = []
        if _number(s.get("val_fraction")) > 0:
            held.append(f"the last {_number(s.get('val_fraction')):.0%} of each series")
        if _number(s.get("val_whole_series")) > 0:
            held.append(f"{s.get('val_whole_series')} whole series")
        val_steps = _number(s.get("val_steps"))
        out = (
            f"held out: {int(val_steps):,} steps ({' and '.join(held) or 'as configured'})"
            if val_steps > 0
            else "**no hold-out**: every loss is on the training series"
        )
        lines.append(
            f"- **Split:** {s.get('train_series')} training series, "
            f"{int(_number(s.get('train_steps')) or 0):,} training steps; {out}."
        )
    b = read_baselines(meta)
    if b.known:
        lines.append(
            f"- **Baselines** (masked MSE, standardised): predict zero: train {fmt(b.zero_train)}, "
            f"held-out {fmt(b.zero_val)}; ridge on the same lags (alpha {fmt(b.ridge_alpha, 3)}): "
            f"train {fmt(b.ridge_train)}, held-out {fmt(b.ridge_val)}."
        )
    return lines


def overfit_onset(
    train: Any, val: Any, epochs: Any, margin: float = OVERFIT_MARGIN
) -> dict[str, float] | None:
    """How one run overfit, or None when it did not by the rule (see OVERFIT_RULE).

    ``train``, ``val``, ``epochs``: aligned per-epoch arrays. Returns the epoch of the held-out
    minimum (``gap_epoch``), the first later epoch beyond the margin (``crossed_epoch``), the
    held-out minimum and last value, and the training loss at the minimum and at the end."""
    t = losses_array(train)
    v = np.asarray(val, dtype=float)
    e = np.asarray(epochs, dtype=float)
    ok = np.isfinite(v) & np.isfinite(t)
    if ok.sum() < 2:
        return None
    t, v, e = t[ok], v[ok], e[ok]
    i = int(np.argmin(v))
    vmin, vend = float(v[i]), float(v[-1])
    if not (vend > (1 + margin) * vmin and t[-1] < t[i]):
        return None
    crossed = np.flatnonzero(v[i:] > (1 + margin) * vmin)
    return {
        "gap_epoch": float(e[i]),
        "crossed_epoch": float(e[i + int(crossed[0])]),
        "val_min": vmin,
        "val_end": vend,
        "train_at_min": float(t[i]),
        "train_end": float(t[-1]),
        "last_epoch": float(e[-1]),
    }


def overfit_rows(
    epochs: pd.DataFrame, trial_ids: list[str] | None = None, margin: float = OVERFIT_MARGIN
) -> pd.DataFrame:
    """One row per trial that overfit (see overfit_onset), ordered by trial id."""
    cols = [
        "trial_id",
        "gap_epoch",
        "crossed_epoch",
        "val_min",
        "val_end",
        "train_at_min",
        "train_end",
        "last_epoch",
    ]
    if epochs.empty or VAL not in epochs.columns or TRAIN not in epochs.columns:
        return pd.DataFrame(columns=cols)
    e = epochs if trial_ids is None else epochs[epochs["trial_id"].isin(trial_ids)]
    rows = []
    for tid, g in e.groupby("trial_id", sort=True):
        g = g.sort_values("epoch")
        hit = overfit_onset(
            g[TRAIN].to_numpy(float), g[VAL].to_numpy(float), g["epoch"].to_numpy(float), margin
        )
        if hit is not None:
            rows.append({"trial_id": str(tid), **hit})
    return pd.DataFrame(rows, columns=cols)
