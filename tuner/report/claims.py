"""The 2019 article's claims: the verdict rule and each claim's measure, on two readings.

The cases and the per-run numbers (the yardsticks) are in `tuner.report.yardsticks` (re-exported
here); the generic measures in `tuner.report.measures`, `tuner.report.heldout` and
`tuner.core.metrics`.

Conventions: a NaN or +inf loss is a blow-up and counts as +inf; lower is better; "spread"
over seeds is the min-max range, not a standard deviation: with 3 seeds per setting a range is
what the data can honestly show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd

from tuner.report.heldout import RUNNING, TRAIN, VAL
from tuner.report.measures import SPIKE_FACTOR
from tuner.report.yardsticks import (  # noqa: F401  (re-exported: the claims' vocabulary)
    CASES,
    METRIC_COLUMNS,
    AblationSetup,
    _updates_text,
    ablation_setup,
    case_summary,
    case_values,
    ordered_cases,
    readings,
    trial_metrics,
)
from tuner.report.text import clean_values, fmt, fmt_pct_spread, fmt_spread

#: Per-run columns that are gains (1 - loss / zero loss), shown as percentages.
GAIN_COLUMNS = ("gain_E", "gain_S", "early_epochs", "early_seconds", "early_updates")

Verdict = Literal["holds", "does not hold", "unclear"]


#: Verdict strings of the claims table.
HOLDS: Verdict = "holds"


DOES_NOT_HOLD: Verdict = "does not hold"


UNCLEAR: Verdict = "unclear"


#: Verdict of a claim whose cases were not run.
CASE_MISSING = "unclear (case missing)"

#: The article's baseline: SGD, lr 0.01, no clipping, the whole series in one chunk.
BASELINE_CASE = "sgd"

#: Relative margin the means must differ by, on top of non-overlapping seed ranges.
VERDICT_MARGIN = 0.05


VERDICT_RULE = (
    'A claim "A is better than B" **holds** when the min-max ranges over seeds do not overlap (the '
    "worst seed of A is better than the best seed of B) and the means differ by more than "
    f"{VERDICT_MARGIN:.0%} of the larger mean; it **does not hold** when the same is true the other "
    "way round; otherwise it is **unclear** (the difference is within the seed spread). Losses are "
    "compared as the **gain** 1 - loss / zero-predictor loss (the share of the zero predictor's "
    f"error removed), so the {VERDICT_MARGIN:.0%} is of the larger improvement over predicting "
    "zero, not of a raw loss near 1.0. A diverged run counts as +inf loss. A claim made of several "
    "comparisons holds when all of them hold and does not hold when any of them does not; a claim "
    'whose cases were not run is "unclear (case missing)".'
)


def relative_gap(a: Iterable[float], b: Iterable[float]) -> float:
    """|mean(b) - mean(a)| as a share of the larger |mean|; 1 if exactly one mean is infinite."""
    xa, xb = clean_values(a), clean_values(b)
    if xa.size == 0 or xb.size == 0:
        return math.nan
    ma, mb = float(np.mean(xa)), float(np.mean(xb))
    if math.isinf(ma) or math.isinf(mb):
        return 0.0 if ma == mb else 1.0
    scale = max(abs(ma), abs(mb))
    return abs(mb - ma) / scale if scale > 0 else 0.0


def verdict_lower(a: Iterable[float], b: Iterable[float], margin: float = VERDICT_MARGIN) -> Verdict:
    """Verdict on the claim "A is lower than B" from the per-seed values of A and B.

    Holds when every seed of A is below every seed of B (the min-max ranges do not overlap) and the
    means differ by more than ``margin`` of the larger mean; does not hold when the same is true
    the other way round; unclear otherwise, and when either side has no values. See VERDICT_RULE.
    """
    xa, xb = clean_values(a), clean_values(b)
    if xa.size == 0 or xb.size == 0:
        return UNCLEAR
    gap = relative_gap(xa, xb)
    if np.max(xa) < np.min(xb) and gap > margin:
        return HOLDS
    if np.max(xb) < np.min(xa) and gap > margin:
        return DOES_NOT_HOLD
    return UNCLEAR


def verdict_higher(a: Iterable[float], b: Iterable[float], margin: float = VERDICT_MARGIN) -> Verdict:
    """Verdict on "A is higher (better) than B", e.g. for gains; the margin is a share of the
    larger |mean| (for gains: of the larger improvement over the zero predictor)."""
    return verdict_lower([-x for x in a], [-x for x in b], margin)


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """All hold -> holds; any does not hold -> does not hold; otherwise unclear."""
    vs = list(verdicts)
    if not vs:
        return UNCLEAR
    if any(v == DOES_NOT_HOLD for v in vs):
        return DOES_NOT_HOLD
    if all(v == HOLDS for v in vs):
        return HOLDS
    return UNCLEAR


#: The two verdict columns of the claims table.
VERDICT_TRAIN = "as the article measured (training loss)"
VERDICT_VAL = "on held-out data"
NO_HOLDOUT = "- (no hold-out)"


@dataclass(frozen=True)
class Reading:
    """The loss columns one verdict column is decided on: ``same_n`` for comparisons of runs at
    the same chunk count (the article's running loss), ``across_n`` for comparisons with a chunk
    schedule (the end-of-epoch loss: the running loss at N=100 averages 100 models)."""

    same_n: pd.DataFrame
    across_n: pd.DataFrame
    same_name: str
    across_name: str


def _mean_or_inf(values: Iterable[float]) -> float:
    """Mean of the measured values; +inf when there are none (sorts last)."""
    x = clean_values(values)
    return float(np.mean(x)) if x.size else math.inf


def _measure(metrics: pd.DataFrame, column: str, cases: Sequence[str], what: str) -> str:
    """``case value [min-max]`` for each case, then what was measured (a time to a target that
    no seed reached reads "never")."""
    parts = []
    show = fmt_pct_spread if column in GAIN_COLUMNS else fmt_spread
    for c in cases:
        text = show(case_values(metrics, c, column))
        parts.append(f"{c} {'never' if column == 't_target' and text == 'inf' else text}")
    return " vs ".join(parts) + f" ({what})"


def _updates(m: pd.DataFrame, cases: Sequence[str], column: str, when: str) -> str:
    """``updates by epoch E: a 30, b 3,000``: the optimizer updates behind a per-epoch value."""
    parts = [f"{c} {_updates_text(m.loc[m['case'] == c, column])}" for c in cases]
    return f"; optimizer updates by {when}: " + ", ".join(parts)


def _better(
    m: pd.DataFrame, better: str, worse: str, column: str, what: str, higher: bool = False
) -> tuple[str, str]:
    """Claim "``better`` beats ``worse`` on ``column``": (measured text, verdict)."""
    decide = verdict_higher if higher else verdict_lower
    v = decide(case_values(m, better, column), case_values(m, worse, column))
    return _measure(m, column, [better, worse], what), v


def _gain_E(m: pd.DataFrame, setup: AblationSetup, better: str, worse: str, name: str) -> tuple[str, str]:
    """Higher gain after E epochs, with the updates made by then."""
    text, v = _better(
        m, better, worse, "gain_E", f"gain 1 - {name}/zero after {setup.epoch} epochs", higher=True
    )
    return text + _updates(m, [better, worse], "updates_E", f"epoch {setup.epoch}"), v


def _stabilises(m: pd.DataFrame, name: str) -> tuple[str, str]:
    """Roughness with clip below roughness without, for both Adam and RMSprop."""
    pairs = [("adam-clip", "adam"), ("rmsprop-clip", "rmsprop")]
    verdicts = [
        verdict_lower(case_values(m, a, "roughness"), case_values(m, b, "roughness")) for a, b in pairs
    ]
    text = "; ".join(_measure(m, "roughness", [a, b], "roughness") for a, b in pairs)
    return (
        text + f": mean rise of the {name} per epoch, in units of the zero predictor's loss",
        combine_verdicts(verdicts),
    )


def _speedup(m: pd.DataFrame, column: str, what: str, extra: str = "") -> tuple[str, str]:
    """sgd-schedule has a higher mean gain than sgd over an early window."""
    text, verdict = _better(m, "sgd-schedule", "sgd", column, what, higher=True)
    return text + extra, verdict


def _most_efficient(m: pd.DataFrame, at_s: str) -> tuple[str, str]:
    """adam-clip-schedule has a higher gain after S seconds than every other case."""
    star = "adam-clip-schedule"
    others = [c for c in ordered_cases(m["case"]) if c != star]
    if not others:
        return "no other case to compare with", UNCLEAR
    mine = case_values(m, star, "gain_S")
    verdicts = {c: verdict_higher(mine, case_values(m, c, "gain_S")) for c in others}
    means = {c: -_mean_or_inf([-v for v in case_values(m, c, "gain_S")]) for c in others}
    runner = max(others, key=lambda c: (means[c], c))
    text = _measure(m, "gain_S", [star, runner], at_s + "; the best other case shown")
    beaten = [c for c, v in verdicts.items() if v == DOES_NOT_HOLD]
    unclear = [c for c, v in verdicts.items() if v == UNCLEAR]
    if beaten:
        text += "; beaten by " + ", ".join(beaten)
    elif unclear:
        text += "; within the seed spread of " + ", ".join(unclear)
    return text, combine_verdicts(verdicts.values())


Claim = tuple[str, tuple[str, ...], Callable[[], tuple[str, str]]]
"""(claim text, the cases it needs, how to measure it: () -> (measured text, verdict))."""


def _claims(r: Reading, setup: AblationSetup) -> list[Claim]:
    """The article's claims, each with the cases it needs and its measure on one reading."""
    m, mx, name, xname = r.same_n, r.across_n, r.same_name, r.across_name
    spikes = f"spikes per run of the {name}, factor {setup.factor:g}"

    def gain(better: str, worse: str) -> Callable[[], tuple[str, str]]:
        return partial(_gain_E, m, setup, better, worse, name)

    def fewer(better: str, worse: str) -> Callable[[], tuple[str, str]]:
        return partial(_better, m, better, worse, "spikes", spikes)

    early = (
        f"mean gain 1 - {xname}/zero over epochs 1-{setup.early_epoch}"
        if setup.early_epoch > 1
        else f"gain 1 - {xname}/zero at epoch 1"
    )
    early_updates = _updates(mx, ["sgd-schedule", "sgd"], "updates_early", f"epoch {setup.early_epoch}")
    per_s = f"mean gain 1 - {xname}/zero over the first {fmt(setup.early_seconds, 3)} s"
    u0, u1 = setup.early_updates_from, setup.early_updates
    per_u = (
        f"mean gain 1 - {xname}/zero over optimizer updates {fmt(u0, 4)}-{fmt(u1, 4)}"
        if u1 > u0
        else f"gain 1 - {xname}/zero at {fmt(u0, 4)} optimizer updates, the "
        "first count by which every run had been measured"
    )
    return [
        ("1a. RMSprop beats SGD", ("rmsprop", "sgd"), gain("rmsprop", "sgd")),
        ("1b. Adam beats SGD", ("adam", "sgd"), gain("adam", "sgd")),
        ("1c. Adam beats RMSprop", ("adam", "rmsprop"), gain("adam", "rmsprop")),
        ("1d. Adam shows loss spikes (more than RMSprop)", ("adam", "rmsprop"), fewer("rmsprop", "adam")),
        (
            "2a. Clipping (global norm 1.0) removes Adam's spikes",
            ("adam-clip", "adam"),
            fewer("adam-clip", "adam"),
        ),
        (
            "2b. Clipping removes RMSprop's spikes",
            ("rmsprop-clip", "rmsprop"),
            fewer("rmsprop-clip", "rmsprop"),
        ),
        (
            "2c. Adaptive clipping (the text's reading: mean + 1 std) removes Adam's spikes",
            ("adam-adaptive-clip", "adam"),
            fewer("adam-adaptive-clip", "adam"),
        ),
        (
            "2d. Clipping stabilises training (Adam and RMSprop)",
            ("adam-clip", "adam", "rmsprop-clip", "rmsprop"),
            partial(_stabilises, m, name),
        ),
        (
            "2e. With clipping, Adam keeps its lead over RMSprop",
            ("adam-clip", "rmsprop-clip"),
            gain("adam-clip", "rmsprop-clip"),
        ),
        (
            "3a. The schedule gives SGD a large early speed-up (per epoch)",
            ("sgd-schedule", "sgd"),
            partial(_speedup, mx, "early_epochs", early, early_updates),
        ),
        (
            "3b. ... and per wall-clock second",
            ("sgd-schedule", "sgd"),
            partial(_speedup, mx, "early_seconds", per_s),
        ),
        (
            "3c. ... and per optimizer update (not the article's claim: the update count it hides)",
            ("sgd-schedule", "sgd"),
            partial(_speedup, mx, "early_updates", per_u),
        ),
        (
            "4. Adam + clipping + schedule is the most efficient of all",
            ("adam-clip-schedule",),
            partial(_most_efficient, mx, f"gain 1 - {xname}/zero after {fmt(setup.seconds, 3)} s"),
        ),
    ]


def _verdicts(r: Reading, setup: AblationSetup) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) for every claim on one reading."""
    present = set(r.same_n["case"]) & set(r.across_n["case"])
    out = []
    for claim, cases, measure in _claims(r, setup):
        missing = [c for c in cases if c not in present]
        if missing:
            out.append((claim, "case missing: " + ", ".join(missing), CASE_MISSING))
        else:
            out.append((claim, *measure()))
    return out


def claims_table(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    setup: AblationSetup | None = None,
    *,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
    zero_train: float = 1.0,
    zero_val: float = 1.0,
) -> pd.DataFrame:
    """Check each claim of the 2019 article against the ablation's numbers, twice.

    One row per claim; columns ``claim``, VERDICT_TRAIN (as the article measured: its running
    training loss between runs at the same chunk count, the end-of-epoch training loss where a
    chunk schedule is compared), VERDICT_VAL (the held-out loss; NO_HOLDOUT without one), and
    ``measured (training)`` / ``measured (held-out)`` (mean [min-max] over seeds). ``zero_*``:
    the zero predictor's training and held-out loss (study.yaml's baselines).

    1. RMSprop and Adam beat SGD, Adam beats RMSprop (gain after E epochs) but spikes.
    2. Clipping removes the spikes and stabilises training (roughness), Adam keeps its lead.
    3. The schedule gives SGD a large early speed-up: mean gain over the early window per epoch,
       per second and per optimizer update.
    4. Adam + clipping + schedule is the most efficient of all: gain after S seconds.
    """
    setup = setup or ablation_setup(trials, epochs, target_loss, factor)
    r = readings(trials, epochs, setup, zero_train, zero_val)
    cols = ["claim", VERDICT_TRAIN, VERDICT_VAL, "measured (training)", "measured (held-out)"]
    if not {RUNNING, TRAIN} <= set(r):
        return pd.DataFrame(columns=cols)
    train = _verdicts(
        Reading(r[RUNNING], r[TRAIN], "running training loss", "end-of-epoch training loss"), setup
    )
    val = (
        _verdicts(Reading(r[VAL], r[VAL], "held-out loss", "held-out loss"), setup)
        if VAL in r
        else [(c, "-", NO_HOLDOUT) for c, _, _ in train]
    )
    rows = [
        {"claim": c, VERDICT_TRAIN: v, VERDICT_VAL: hv, "measured (training)": m, "measured (held-out)": hm}
        for (c, m, v), (_, hm, hv) in zip(train, val, strict=True)
    ]
    return pd.DataFrame(rows, columns=cols)
