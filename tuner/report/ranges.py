"""Searched ranges and the playbook's edge-of-range warnings.

Ranges come from the searched keys' Optuna distributions (built from the space file by
`tuner.report.load`), never from re-reading the YAML."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import optuna.distributions as od
import pandas as pd

from tuner.report.measures import best_rows, is_seed_key

#: Share of a searched range, at each end, that counts as "near the edge".
EDGE_SHARE = 0.10


@dataclass(frozen=True)
class NumericRange:
    """The numeric extent of one searched key, as declared in the space file."""

    low: float
    high: float
    log: bool
    """Positions along the range are measured in log space (loguniform, log ints, wide grids)."""
    discrete_values: tuple[float, ...] | None = None
    """For ``choice``/``grid`` keys: the values tried (edge = the smallest/largest of them)."""


def numeric_range(dist: od.BaseDistribution | None) -> NumericRange | None:
    """The numeric extent of one searched key's distribution; None for categorical keys.

    Float and int distributions give their bounds and log flag. A categorical one (``choice``
    or ``grid``) counts when every value is a number and at least three distinct values were
    tried (with two, one is always "at the edge"); positive values spanning two decades or more
    are read on a log scale."""
    if isinstance(dist, (od.FloatDistribution, od.IntDistribution)):
        if dist.high <= dist.low:
            return None
        return NumericRange(float(dist.low), float(dist.high), bool(dist.log))
    if not isinstance(dist, od.CategoricalDistribution):
        return None
    values = dist.choices
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    distinct = tuple(sorted({float(v) for v in values if math.isfinite(float(v))}))
    if len(distinct) < 3:
        return None
    lo, hi = distinct[0], distinct[-1]
    return NumericRange(lo, hi, lo > 0 and hi / lo >= 100.0, distinct)


def range_position(value: float, rng: NumericRange) -> float:
    """Where ``value`` sits in ``rng``: 0 at the low end, 1 at the high end (log space if log)."""
    if rng.log:
        return (math.log(value) - math.log(rng.low)) / (math.log(rng.high) - math.log(rng.low))
    return (value - rng.low) / (rng.high - rng.low)


def edge_warnings(
    trials_df: pd.DataFrame,
    space: Mapping[str, od.BaseDistribution],
    metric_col: str = "objective",
    top_k: int = 5,
    mode: str = "min",
) -> list[str]:
    """Warn for every searched numeric key whose best value lies near the edge of its range.

    The rule (Deep Learning Tuning Playbook): when the best trial's value lies in the outer
    ``EDGE_SHARE`` (10%) of the searched range at either end (measured in log space for loguniform
    ranges, log ints and wide numeric grids), the optimum may lie outside the range, so the range
    should be widened on that side. For ``choice``/``grid`` numeric keys the edge is the smallest
    or largest value tried. Seeds are skipped; so is a key the best trial does not have (a
    conditional parameter that was inactive). Each message also says how many of the ``top_k``
    best trials sit at the same edge, a hint of how strong the pull is.
    """
    best = best_rows(trials_df, metric_col, mode, k=max(1, top_k))
    if best.empty:
        return []
    warnings: list[str] = []
    for key, dist in space.items():
        if is_seed_key(str(key)) or key not in trials_df.columns:
            continue
        rng = numeric_range(dist)
        if rng is None:
            continue
        values = pd.to_numeric(best[key], errors="coerce")
        value = values.iloc[0]
        if not np.isfinite(value) or (rng.log and value <= 0):
            continue

        def side(v: float, r: NumericRange = rng) -> str | None:
            """Which edge ``v`` is near, if any."""
            if not np.isfinite(v) or (r.log and v <= 0):
                return None
            pos = range_position(float(v), r)
            if pos <= EDGE_SHARE:
                return "lower"
            if pos >= 1.0 - EDGE_SHARE:
                return "upper"
            return None

        where = side(value)
        if where is None:
            continue
        same = sum(1 for v in values if side(v) == where)
        scale = " (log scale)" if rng.log else ""
        if rng.discrete_values is not None:
            tried = ", ".join(f"{v:g}" for v in rng.discrete_values)
            word = "smallest" if where == "lower" else "largest"
            more = "smaller" if where == "lower" else "larger"
            msg = f"{key}: best {value:.3g} is the {word} value tried ({tried}): add {more} values"
        else:
            msg = (
                f"{key}: best {value:.3g} is near the {where} edge of "
                f"[{rng.low:g}, {rng.high:g}]{scale}: widen the range"
            )
        if len(values) > 1:
            msg += f" ({same} of the best {len(values)} trials are near that edge)"
        warnings.append(msg)
    return warnings
