"""The values a search can minimise, computed from the per-epoch records of one run.

They are "running" values: after every epoch the value so far is reported, so schedulers such as
ASHA compare trials mid-run by the same measure the searcher optimises at the end.

Every training-side objective uses `train_loss`, the end-of-epoch loss of the model on the
training steps in eval mode, because it compares across chunk counts N (the running loss does
not; see `tuner.core.train.EPOCH_COLUMNS`). That includes `auc` and `time_to_target`: they
measure how fast a setting fits its training data, as the article did; for how well it
predicts unseen data use `val_loss` or `best_val_loss`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from tuner.analysis import auc, time_to_target

OBJECTIVES = ("train_loss", "best_train_loss", "val_loss", "best_val_loss", "auc",
              "time_to_target")
HELD_OUT_OBJECTIVES = ("val_loss", "best_val_loss")
"""Objectives that need a hold-out (data.val_fraction or data.val_series)."""
RENAMED = {"loss": "train_loss", "best_loss": "best_train_loss"}
"""Objective names of version 0.1 and their successors (refused with this hint)."""


def renamed_hint(metric: str) -> str:
    """'' or a one-line hint naming the new objective for a name of version 0.1."""
    new = RENAMED.get(metric)
    return (f"{metric!r} was renamed {new!r} (end-of-epoch training loss, eval mode); "
            "for held-out data use 'val_loss' or 'best_val_loss'") if new else ""


def running_objective(metric: str, records: Sequence[dict[str, Any]], target_loss: float | None,
                      target_unit: str = "seconds") -> float:
    """The objective after the last of `records` (+inf when the run diverged or never got there).

    train_loss: last epoch's train_loss; best_train_loss: lowest so far; val_loss: last held-out
    loss; best_val_loss: the best epoch's held-out loss
    (the record's `best_val_loss`, else the lowest so far); auc: mean train_loss over the epochs so far
    (area under the curve, the article's "how fast"); time_to_target: seconds (or time steps)
    until train_loss first reached `target_loss`."""
    if not records:
        return math.inf
    losses = [float(r["train_loss"]) for r in records]
    if not math.isfinite(losses[-1]):
        return math.inf
    if metric == "train_loss":
        return losses[-1]
    if metric == "best_train_loss":
        return min(losses)
    if metric == "best_val_loss" and "best_val_loss" in records[-1]:
        # The best epoch's own loss (the model early stopping keeps), which differs from the
        # lowest val_loss only when early_stopping.min_delta > 0.
        value = float(records[-1]["best_val_loss"])
        return value if math.isfinite(value) else math.inf
    if metric in HELD_OUT_OBJECTIVES:
        vals = [float(r.get("val_loss", math.nan)) for r in records]
        vals = vals[-1:] if metric == "val_loss" else vals
        finite = [v for v in vals if math.isfinite(v)]
        return min(finite) if finite else math.inf
    if metric == "auc":
        return float(auc(losses))
    if metric == "time_to_target":
        axis = "train_time_s" if target_unit == "seconds" else "timesteps"
        return float(time_to_target([float(r[axis]) for r in records], losses, float(target_loss)))
    hint = renamed_hint(metric)
    raise ValueError(hint or f"unknown objective {metric!r}; allowed: {', '.join(OBJECTIVES)}")
