"""The values a search can minimise, computed from the per-epoch records of one run.

They are "running" values: after every epoch the value so far is reported, so schedulers such as
ASHA compare trials mid-run by the same measure the searcher optimises at the end. The measures
and the rule for a diverged run (every measure is +inf) live in `tuner.core.metrics`; this
module only picks one by name, so Ray workers import nothing from the report layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuner.core import metrics

OBJECTIVES = ("loss", "best_loss", "val_loss", "auc", "time_to_target")


def running_objective(metric: str, records: Sequence[dict[str, Any]], target_loss: float | None,
                      target_unit: str = "seconds") -> float:
    """The objective after the last of `records` (+inf when the run diverged or never got there).

    loss: last epoch's loss; best_loss: lowest so far; val_loss: last validation loss;
    auc: mean loss over the epochs so far (area under the curve, the article's "how fast");
    time_to_target: seconds (or time steps) until the loss first reached `target_loss`."""
    if not records:
        return math.inf
    losses = [float(r["loss"]) for r in records]
    if metrics.diverged(losses):
        return math.inf
    if metric == "loss":
        return metrics.final_loss(losses)
    if metric == "best_loss":
        return metrics.best_loss(losses)
    if metric == "val_loss":
        value = float(records[-1].get("val_loss", math.nan))
        return value if math.isfinite(value) else math.inf
    if metric == "auc":
        return metrics.auc(losses)
    if metric == "time_to_target":
        axis = "train_time_s" if target_unit == "seconds" else "timesteps"
        return metrics.time_to_target([float(r[axis]) for r in records], losses,
                                      float(target_loss))
    raise ValueError(f"unknown objective {metric!r}; allowed: {', '.join(OBJECTIVES)}")
