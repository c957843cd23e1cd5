"""The 2019 article's ablation: its cases, the yardsticks they are compared by, and its claims.

Everything article-specific lives here (case names, the claims and how each is measured); the
generic measures it uses are in `tuner.report.measures` and `tuner.core.metrics`.

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

from tuner.core.metrics import auc, final_finite_loss, losses_array, time_to_target
from tuner.report.measures import (
    SPIKE_FACTOR,
    case_column,
    count_spikes,
    diverged_trials,
    final_stage,
    finished,
    loss_at,
    loss_at_seconds,
    roughness,
)
from tuner.report.text import clean_values, fmt, fmt_spread

Verdict = Literal["holds", "does not hold", "unclear"]


#: Verdict strings of the claims table.
HOLDS: Verdict = "holds"


DOES_NOT_HOLD: Verdict = "does not hold"


UNCLEAR: Verdict = "unclear"


#: Verdict of a claim whose cases were not run.
CASE_MISSING = "unclear (case missing)"

#: Names of the cases of the article's ablation, in the order the article presents them, then the
#: future-work extras. The ablation space file uses exactly these names in the ``case`` column.
CASES: tuple[str, ...] = (
    "sgd",
    "rmsprop",
    "adam",
    "rmsprop-clip",
    "adam-clip",
    "sgd-schedule",
    "adam-clip-schedule",
    "adam-adaptive-clip",
    "adagrad",
    "adadelta",
)


#: The article's baseline: SGD, lr 0.01, no clipping, the whole series in one chunk.
BASELINE_CASE = "sgd"

#: Relative margin the means must differ by, on top of non-overlapping seed ranges.
VERDICT_MARGIN = 0.05


VERDICT_RULE = (
    'A claim "A is lower (better) than B" **holds** when the min-max ranges over seeds do not '
    "overlap (the worst seed of A is better than the best seed of B) and the means differ by more "
    f"than {VERDICT_MARGIN:.0%} of the larger mean; it **does not hold** when the same is true the "
    "other way round; otherwise it is **unclear** (the difference is within the seed spread). A "
    "diverged run counts as +inf. A claim made of several comparisons holds when all of them hold "
    "and does not hold when any of them does not; a claim whose cases were not run is "
    '"unclear (case missing)".'
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


def verdict_lower(
    a: Iterable[float], b: Iterable[float], margin: float = VERDICT_MARGIN
) -> Verdict:
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


@dataclass(frozen=True)
class AblationSetup:
    """The common yardsticks every case of an ablation is measured with."""

    epoch: int
    """E: loss "after E epochs" uses the smallest, over cases, of the longest run of each case
    (diverged runs left out), so every case has runs that trained that long."""
    early_epoch: int
    """An early epoch, ceil(E / 5), for "early speed-up" claims."""
    seconds: float
    """S: the same as E on the wall-clock axis (``train_time_s``); NaN without timings."""
    early_seconds: float
    """S / 5."""
    target: float
    """Target loss for time-to-target."""
    target_source: str
    """How the target was chosen, for the report."""
    factor: float = SPIKE_FACTOR
    """Spike factor (see count_spikes)."""


def _ablation_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials that belong to a case, with ``case`` cleaned and ``trial_id`` as text."""
    case = case_column(trials)
    if case is None:
        return trials.iloc[0:0].assign(case=pd.Series(dtype=object))
    out = trials.assign(case=case, trial_id=trials["trial_id"].astype(str))
    return finished(out.dropna(subset=["case"]))


def _trial_epochs(epochs: pd.DataFrame, trial_ids: Iterable[str]) -> pd.DataFrame:
    """Epoch rows of the given trials, sorted by trial then epoch."""
    ids = set(map(str, trial_ids))
    e = epochs.assign(trial_id=epochs["trial_id"].astype(str))
    e = e[e["trial_id"].isin(ids)]
    return e.sort_values(["trial_id", "epoch"], kind="stable") if "epoch" in e else e


def _run_summaries(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per trial: last epoch, last time, final finite loss, whether the run ended in a blow-up."""
    rows = []
    for trial_id, g in epochs.groupby("trial_id", sort=False):
        loss = losses_array(pd.to_numeric(g["loss"], errors="coerce").to_numpy(dtype=float))
        time = (
            pd.to_numeric(g["train_time_s"], errors="coerce").to_numpy(dtype=float)
            if "train_time_s" in g
            else np.full(len(g), np.nan)
        )
        rows.append(
            {
                "trial_id": str(trial_id),
                "last_epoch": float(pd.to_numeric(g["epoch"], errors="coerce").max()),
                "last_time": float(np.nanmax(time)) if np.isfinite(time).any() else math.nan,
                "final_loss": final_finite_loss(loss),
                "blew_up": bool(loss.size and not math.isfinite(loss[-1])),
            }
        )
    cols = ["trial_id", "last_epoch", "last_time", "final_loss", "blew_up"]
    return pd.DataFrame(rows, columns=cols).set_index("trial_id")


def ablation_setup(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
) -> AblationSetup:
    """Choose E, S and the target loss for an ablation (see AblationSetup for the rules).

    The target is ``target_loss`` when given (the space file's ``search.target_loss``); otherwise
    the median over cases of their mean final loss. A target every case reaches in the first
    epochs (such as the baseline's final loss) would not tell fast settings from slow ones.
    """
    abl = _ablation_trials(trials)
    runs = _run_summaries(_trial_epochs(epochs, abl["trial_id"]))
    runs = runs.join(abl.set_index("trial_id")[["case"]], how="inner")
    diverged = runs["blew_up"] | runs.index.isin(
        abl.loc[diverged_trials(abl).to_numpy(), "trial_id"]
    )
    healthy = runs[~diverged] if (~diverged).any() else runs

    def min_of_case_max(col: str) -> float:
        """Smallest over cases of the largest value of ``col`` among the case's runs."""
        per_case = healthy.groupby("case")[col].max()
        per_case = per_case[np.isfinite(per_case)]
        return float(per_case.min()) if len(per_case) else math.nan

    e = min_of_case_max("last_epoch")
    epoch = int(e) if math.isfinite(e) else 0
    seconds = min_of_case_max("last_time")
    if target_loss is not None and math.isfinite(float(target_loss)):
        target, source = float(target_loss), "search.target_loss of study.yaml"
    else:
        means = runs.groupby("case")["final_loss"].mean()
        means = means[np.isfinite(means)]
        target = float(means.median()) if len(means) else math.nan
        source = ("the median over cases of their mean final loss: half the settings end "
                  "below it, so the time to reach it separates fast from slow")
    return AblationSetup(
        epoch=epoch,
        early_epoch=max(1, math.ceil(epoch / 5)) if epoch else 0,
        seconds=seconds,
        early_seconds=seconds / 5 if math.isfinite(seconds) else math.nan,
        target=target,
        target_source=source,
        factor=factor,
    )


def trial_metrics(trials: pd.DataFrame, epochs: pd.DataFrame, setup: AblationSetup) -> pd.DataFrame:
    """The ablation's per-run numbers, one row per finished trial that has a case.

    Index trial_id; columns ``case``, ``loss_E`` (after ``setup.epoch`` epochs), ``loss_early``
    (after ``setup.early_epoch``), ``loss_S`` and ``loss_S_early`` (after ``setup.seconds`` and a
    fifth of it), ``t_target`` (seconds to ``setup.target``, inf if never), ``spikes``
    (count_spikes with ``setup.factor``), ``roughness``, ``auc``, ``final_loss`` (last finite),
    ``stage`` and ``chunks`` at the last epoch.
    """
    abl = _ablation_trials(trials)
    e = _trial_epochs(epochs, abl["trial_id"])
    cols = [
        "case",
        "loss_E",
        "loss_early",
        "loss_S",
        "loss_S_early",
        "t_target",
        "spikes",
        "roughness",
        "auc",
        "final_loss",
        "stage",
        "chunks",
    ]
    if e.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="trial_id"))
    per: dict[str, dict[str, float]] = {}
    for trial_id, g in e.groupby("trial_id", sort=False):
        loss = pd.to_numeric(g["loss"], errors="coerce").to_numpy(dtype=float)
        time = (
            pd.to_numeric(g["train_time_s"], errors="coerce").to_numpy(dtype=float)
            if "train_time_s" in g
            else np.full(len(g), np.nan)
        )
        per[str(trial_id)] = {
            "t_target": time_to_target(time, loss, setup.target)
            if math.isfinite(setup.target)
            else math.nan,
            "spikes": float(count_spikes(loss, setup.factor)),
            "roughness": roughness(loss),
            "auc": auc(loss),
            "final_loss": final_finite_loss(loss),
        }
    out = pd.DataFrame.from_dict(per, orient="index")
    out.index.name = "trial_id"
    out["loss_E"] = loss_at(e, setup.epoch) if setup.epoch else math.nan
    out["loss_early"] = loss_at(e, setup.early_epoch) if setup.early_epoch else math.nan
    if math.isfinite(setup.seconds):
        out["loss_S"] = loss_at_seconds(e, setup.seconds)
        out["loss_S_early"] = loss_at_seconds(e, setup.early_seconds)
    else:
        out["loss_S"] = math.nan
        out["loss_S_early"] = math.nan
    out = out.join(final_stage(e))
    out = out.join(abl.set_index("trial_id")[["case"]], how="inner")
    return out[cols]


def case_values(metrics: pd.DataFrame, case: str, column: str) -> list[float]:
    """Per-seed values of ``column`` for one case (empty when the case was not run)."""
    return [float(v) for v in metrics.loc[metrics["case"] == case, column]]


def ordered_cases(names: Iterable[str]) -> list[str]:
    """Case names in the article's order (CASES), then any others alphabetically."""
    names = list(dict.fromkeys(names))
    known = [c for c in CASES if c in names]
    return known + sorted(c for c in names if c not in CASES)


def case_summary(metrics: pd.DataFrame, setup: AblationSetup) -> pd.DataFrame:
    """The ablation table: one row per case, every cell ``mean [min-max]`` over seeds as text.

    Columns: case, seeds, loss after E epochs, loss after S seconds, seconds to target (with how
    many seeds reached it), spikes per run, final stage (the chunk counts at the last epoch).
    """
    rows = []
    for case in ordered_cases(metrics["case"]):
        m = metrics[metrics["case"] == case]
        reached = np.isfinite(m["t_target"].to_numpy(dtype=float))
        t = m["t_target"].to_numpy(dtype=float)
        t_text = fmt_spread(t[reached], 3) if reached.any() else "never"
        chunks = sorted({int(c) for c in m["chunks"] if pd.notna(c)})
        rows.append(
            {
                "case": case,
                "seeds": len(m),
                f"loss after {setup.epoch} epochs": fmt_spread(m["loss_E"]),
                f"loss after {fmt(setup.seconds, 3)} s": fmt_spread(m["loss_S"]),
                "seconds to target": f"{t_text} ({int(reached.sum())}/{len(m)} reached)",
                f"spikes per run (x{setup.factor:g})": fmt_spread(m["spikes"], 3),
                "final chunks N": "/".join(map(str, chunks)) if chunks else "-",
            }
        )
    return pd.DataFrame(rows)


def _mean_or_inf(values: Iterable[float]) -> float:
    """Mean of the measured values; +inf when there are none (sorts last)."""
    x = clean_values(values)
    return float(np.mean(x)) if x.size else math.inf


def _measure(metrics: pd.DataFrame, column: str, cases: Sequence[str], what: str) -> str:
    """``case value [min-max]`` for each case, then what was measured (a time to a target that
    no seed reached reads "never")."""
    parts = []
    for c in cases:
        text = fmt_spread(case_values(metrics, c, column))
        parts.append(f"{c} {'never' if column == 't_target' and text == 'inf' else text}")
    return " vs ".join(parts) + f" ({what})"


def _lower(m: pd.DataFrame, better: str, worse: str, column: str, what: str) -> tuple[str, str]:
    """Claim "``better`` has a lower ``column`` than ``worse``": (measured text, verdict)."""
    v = verdict_lower(case_values(m, better, column), case_values(m, worse, column))
    return _measure(m, column, [better, worse], what), v


def _stabilises(m: pd.DataFrame) -> tuple[str, str]:
    """Roughness with clip below roughness without, for both Adam and RMSprop."""
    pairs = [("adam-clip", "adam"), ("rmsprop-clip", "rmsprop")]
    verdicts = [verdict_lower(case_values(m, a, "roughness"), case_values(m, b, "roughness"))
                for a, b in pairs]
    text = "; ".join(_measure(m, "roughness", [a, b], "roughness") for a, b in pairs)
    return text + ": mean rise of log10 loss per epoch", combine_verdicts(verdicts)


def _speedup(m: pd.DataFrame, column: str, what: str) -> tuple[str, str]:
    """sgd-schedule lower than sgd on ``column``, with seconds-to-target for context."""
    text, verdict = _lower(m, "sgd-schedule", "sgd", column, what)
    ttt = _measure(m, "t_target", ["sgd-schedule", "sgd"], "seconds to target")
    return f"{text}; {ttt}", verdict


def _most_efficient(m: pd.DataFrame, at_s: str) -> tuple[str, str]:
    """adam-clip-schedule has a lower loss after S seconds than every other case."""
    star = "adam-clip-schedule"
    others = [c for c in ordered_cases(m["case"]) if c != star]
    if not others:
        return "no other case to compare with", UNCLEAR
    mine = case_values(m, star, "loss_S")
    verdicts = {c: verdict_lower(mine, case_values(m, c, "loss_S")) for c in others}
    means = {c: _mean_or_inf(case_values(m, c, "loss_S")) for c in others}
    runner = min(others, key=lambda c: (means[c], c))
    text = _measure(m, "loss_S", [star, runner], at_s + "; the best other case shown")
    beaten = [c for c, v in verdicts.items() if v == DOES_NOT_HOLD]
    unclear = [c for c, v in verdicts.items() if v == UNCLEAR]
    if beaten:
        text += "; beaten by " + ", ".join(beaten)
    elif unclear:
        text += "; within the seed spread of " + ", ".join(unclear)
    ttt = _measure(m, "t_target", [star, runner], "seconds to target")
    return f"{text}; {ttt}", combine_verdicts(verdicts.values())


Claim = tuple[str, tuple[str, ...], Callable[[], tuple[str, str]]]
"""(claim text, the cases it needs, how to measure it: () -> (measured text, verdict))."""


def _claims(m: pd.DataFrame, setup: AblationSetup) -> list[Claim]:
    """The article's claims, each with the cases it needs and its measure."""
    at_e = f"loss after {setup.epoch} epochs"
    spikes = f"spikes per run, factor {setup.factor:g}"

    def lower(better: str, worse: str, column: str, what: str) -> Callable[[], tuple[str, str]]:
        return partial(_lower, m, better, worse, column, what)

    return [
        ("1a. RMSprop beats SGD", ("rmsprop", "sgd"), lower("rmsprop", "sgd", "loss_E", at_e)),
        ("1b. Adam beats SGD", ("adam", "sgd"), lower("adam", "sgd", "loss_E", at_e)),
        ("1c. Adam beats RMSprop", ("adam", "rmsprop"), lower("adam", "rmsprop", "loss_E", at_e)),
        ("1d. Adam shows loss spikes (more than RMSprop)", ("adam", "rmsprop"),
         lower("rmsprop", "adam", "spikes", spikes)),
        ("2a. Clipping (global norm 1.0) removes Adam's spikes", ("adam-clip", "adam"),
         lower("adam-clip", "adam", "spikes", spikes)),
        ("2b. Clipping removes RMSprop's spikes", ("rmsprop-clip", "rmsprop"),
         lower("rmsprop-clip", "rmsprop", "spikes", spikes)),
        ("2c. Adaptive clipping (the text's reading: mean + 1 std) removes Adam's spikes",
         ("adam-adaptive-clip", "adam"), lower("adam-adaptive-clip", "adam", "spikes", spikes)),
        ("2d. Clipping stabilises training (Adam and RMSprop)",
         ("adam-clip", "adam", "rmsprop-clip", "rmsprop"), partial(_stabilises, m)),
        ("2e. With clipping, Adam keeps its lead over RMSprop", ("adam-clip", "rmsprop-clip"),
         lower("adam-clip", "rmsprop-clip", "loss_E", at_e)),
        ("3a. The schedule gives SGD a large early speed-up (per epoch)", ("sgd-schedule", "sgd"),
         partial(_speedup, m, "loss_early", f"loss after {setup.early_epoch} epochs")),
        ("3b. ... and per wall-clock second", ("sgd-schedule", "sgd"),
         partial(_speedup, m, "loss_S_early", f"loss after {fmt(setup.early_seconds, 3)} s")),
        ("4. Adam + clipping + schedule is the most efficient of all", ("adam-clip-schedule",),
         partial(_most_efficient, m, f"loss after {fmt(setup.seconds, 3)} s")),
    ]


def claims_table(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    setup: AblationSetup | None = None,
    *,
    target_loss: float | None = None,
    factor: float = SPIKE_FACTOR,
) -> pd.DataFrame:
    """Check each claim of the 2019 article against the ablation's numbers.

    One row per claim, columns ``claim``, ``measured`` (the numbers, as text, mean [min-max] over
    seeds) and ``verdict`` (holds / does not hold / unclear, by VERDICT_RULE; "unclear (case
    missing)" when a case the claim needs was not run). ``setup`` defaults to
    ``ablation_setup(trials, epochs, target_loss, factor)``.

    Claims and their measures:
    1. RMSprop and Adam beat SGD; Adam beats RMSprop but spikes: loss after E epochs; spike count.
    2. Clipping removes the spikes (norm clip, and the text's adaptive reading) and stabilises
       training (roughness), and Adam keeps its lead (loss after E epochs, both clipped).
    3. The schedule gives SGD a large early speed-up: loss at the early epoch E/5, and after S/5 s.
    4. Adam + clipping + schedule is the most efficient of all: loss after S seconds vs every case.
    """
    setup = setup or ablation_setup(trials, epochs, target_loss, factor)
    metrics = trial_metrics(trials, epochs, setup)
    present = set(metrics["case"])
    rows: list[dict[str, str]] = []
    for claim, cases, measure in _claims(metrics, setup):
        missing = [c for c in cases if c not in present]
        if missing:
            measured, verdict = "case missing: " + ", ".join(missing), CASE_MISSING
        else:
            measured, verdict = measure()
        rows.append({"claim": claim, "measured": measured, "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "measured", "verdict"])
