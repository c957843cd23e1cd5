"""The values a search can minimise, computed from the per-epoch records of one run.

They are "running" values: after every epoch the value so far is reported, so schedulers such as
ASHA compare trials mid-run by the same measure the searcher optimises at the end. The measures
and the rule for a diverged run (every measure is +inf) live in `tuner.core.metrics`; this
module only picks one by name, so Ray workers import nothing from the report layer.

Every training-side objective uses `train_loss`, the end-of-epoch loss of the model on the
training steps in eval mode, because it compares across chunk counts N (the running loss does
not; see `tuner.core.metrics.EPOCH_COLUMNS`). That includes `auc` and `time_to_target`: they
measure how fast a setting fits its training data, as the article did; for how well it
predicts unseen data use `val_loss` or `best_val_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.core import metrics

OBJECTIVES = ("train_loss", "best_train_loss", "val_loss", "best_val_loss", "auc", "time_to_target")
HELD_OUT_OBJECTIVES = ("val_loss", "best_val_loss")
"""Objectives that need a hold-out (data.val_fraction or data.val_series)."""
RENAMED = {"loss": "train_loss", "best_loss": "best_train_loss"}
"""Objective names of version 0.1 and their successors (refused with this hint)."""


def renamed_hint(metric: str) -> str:
    """'' or a one-line hint naming the new objective for a name of version 0.1."""
    new = RENAMED.get(metric)
    return (
        (
            f"{metric!r} was renamed {new!r} (end-of-epoch training loss, eval mode); "
            "for held-out data use 'val_loss' or 'best_val_loss'"
        )
        if new
        else ""
    )


def _held_out(metric: str, records: Sequence[dict[str, Any]]) -> float:
    """val_loss: the last epoch's; best_val_loss: the best epoch's (the model early stopping
    keeps; the lowest val_loss unless early_stopping.min_delta > 0). +inf when missing."""
    last = records[-1]
    if metric == "best_val_loss" and "best_val_loss" in last:
        value = float(last["best_val_loss"])
    elif metric == "best_val_loss":
        value = min((float(r.get("val_loss", math.inf)) for r in records), default=math.inf)
    else:
        value = float(last.get("val_loss", math.nan))
    return value if math.isfinite(value) else math.inf


def running_objective(
    metric: str, records: Sequence[dict[str, Any]], target_loss: float | None, target_unit: str = "seconds"
) -> float:
    """The objective after the last of `records` (+inf when the run diverged or never got there).

    train_loss: last epoch's train_loss; best_train_loss: lowest so far; val_loss: last held-out
    loss; best_val_loss: the best epoch's held-out loss; auc: mean train_loss over the epochs so
    far (area under the curve, the article's "how fast"); time_to_target: seconds (or time
    steps) until train_loss first reached `target_loss`."""
    if not records:
        return math.inf
    losses = [float(r["train_loss"]) for r in records]
    if metrics.diverged(losses):
        return math.inf
    if metric == "train_loss":
        return metrics.final_loss(losses)
    if metric == "best_train_loss":
        return metrics.best_loss(losses)
    if metric in HELD_OUT_OBJECTIVES:
        return _held_out(metric, records)
    if metric == "auc":
        return metrics.auc(losses)
    if metric == "time_to_target":
        axis = "train_time_s" if target_unit == "seconds" else "timesteps"
        return metrics.time_to_target([float(r[axis]) for r in records], losses, float(target_loss))
    raise ValueError(
        renamed_hint(metric) or f"unknown objective {metric!r}; allowed: {', '.join(OBJECTIVES)}"
    )
