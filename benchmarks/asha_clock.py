"""Which clock and which signal let ASHA keep the best setting alive? An offline replay.

    python benchmarks/asha_clock.py results/search_quality/reference   # trials.csv + epochs.csv

From the full per-epoch curves of a grid run to the end (the reference of
`bench_search_quality.py`), successive halving is replayed for every combination of
* clock (ASHA's `time_attr`): time steps, training seconds, optimizer updates (an N-chunk epoch
  makes N updates, so N=100 trials race ahead on this clock and N=1 trials crawl);
* rank signal: the last held-out loss, the best held-out loss so far, and an exponentially
  smoothed training loss (the training loss is noisy epoch to epoch; smoothing is what a user would
  do before trusting it);
* grace period: 1/81, 1/27, 1/9, 1/3 of the longest trial's clock (so each clock gets the same
  number of rungs).
Reduction factor 3. The replay is synchronous successive halving: at each rung, of the trials that
reach it (a trial that ends before a rung is never stopped there, as in Tune's ASHA), those whose
signal is at or below the 1/3 quantile continue, the cut-off Tune's ASHA uses once a rung is full.
Tune's asynchronous ASHA decides with the trials recorded so far, so early arrivals are judged
more leniently; the synchronous replay is the order-free version of the same rule.

It reports whether the setting with the lowest held-out loss of the whole grid survives (runs to
its end), the epoch at which it is first judged and its rank there, where it was stopped, the
compute spent (time steps, as a fraction of the grid's) and the best held-out loss among the
epochs that were run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuner.report.anytime import SECONDS, TIMESTEPS, TRAIN_LOSS, UPDATES, VAL_LOSS  # noqa: E402

CLOCKS = {"timesteps": TIMESTEPS, "train seconds": SECONDS, "updates": UPDATES}
SIGNALS = ("val_loss", "best_val_loss", "train_loss_ema")
GRACE_FRACTIONS = (1 / 81, 1 / 27, 1 / 9, 1 / 3)
REDUCTION = 3
EMA_ALPHA = 0.3
"""Weight of the newest epoch in the smoothed training loss."""


def _finite(values: pd.Series) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    return np.where(np.isfinite(v), v, np.inf)


def signal(curve: pd.DataFrame, name: str) -> np.ndarray:
    """A trial's per-epoch rank signal (lower is better; +inf where unknown or diverged)."""
    if name == "val_loss":
        return _finite(curve[VAL_LOSS])
    if name == "best_val_loss":
        return np.minimum.accumulate(_finite(curve[VAL_LOSS]))
    if name == "train_loss_ema":
        train = _finite(curve[TRAIN_LOSS])
        out = np.empty_like(train)
        level = math.nan
        for i, x in enumerate(train):
            level = x if (i == 0 or not math.isfinite(level)) else (EMA_ALPHA * x + (1 - EMA_ALPHA) * level)
            out[i] = level
        return np.where(np.isfinite(out), out, np.inf)
    raise ValueError(f"signal {name!r}; allowed: {', '.join(SIGNALS)}")


def halve(
    curves: dict[str, pd.DataFrame], clock: str, name: str, grace: float, reduction: int = REDUCTION
) -> dict[str, int]:
    """Synchronous successive halving: trial -> the number of epochs it is allowed to run."""
    runs = {t: len(c) for t, c in curves.items()}
    alive = set(curves)
    horizon = max(float(c[clock].iloc[-1]) for c in curves.values())
    rung = grace
    while rung < horizon and len(alive) > 1:
        at: dict[str, tuple[int, float]] = {}
        for t in alive:
            clocks = curves[t][clock].to_numpy(float)
            reached = np.nonzero(clocks >= rung)[0]
            if len(reached):
                i = int(reached[0])
                at[t] = (i, float(signal(curves[t], name)[i]))
        if len(at) > 1:
            values = np.array([v for _, v in at.values()])
            finite = values[np.isfinite(values)]
            cut = np.percentile(finite, 100 / reduction) if len(finite) else -np.inf
            for t, (i, v) in at.items():
                if not v <= cut:
                    runs[t] = i + 1
                    alive.discard(t)
        rung *= reduction
    return runs


def clock_table(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per (clock, signal, grace): does the grid's best setting survive, at what cost."""
    label = trials.set_index(trials["trial_id"].astype(str))
    label = label["case"] if "case" in label else label.index.to_series()
    curves = {
        str(t): g.sort_values("epoch").reset_index(drop=True)
        for t, g in epochs.assign(trial_id=epochs["trial_id"].astype(str)).groupby("trial_id")
    }
    best_val = {t: float(np.min(signal(c, "best_val_loss"))) for t, c in curves.items()}
    if not any(math.isfinite(v) for v in best_val.values()):
        raise ValueError(
            "no finite held-out loss in epochs.csv; allowed: a grid run with "
            "data.val_fraction > 0 or data.val_series > 0"
        )
    winner = min(best_val, key=best_val.get)
    total = sum(float(c[TIMESTEPS].iloc[-1]) for c in curves.values())
    rows = []
    for clock_name, clock in CLOCKS.items():
        horizon = max(float(c[clock].iloc[-1]) for c in curves.values())
        for name in SIGNALS:
            for frac in GRACE_FRACTIONS:
                runs = halve(curves, clock, name, horizon * frac)
                first, judged = _first_rung(curves, clock, name, horizon * frac, winner)
                spent = sum(float(curves[t][TIMESTEPS].iloc[n - 1]) for t, n in runs.items())
                found = min(
                    float(np.min(signal(curves[t].iloc[:n], "best_val_loss"))) for t, n in runs.items()
                )
                survived = runs[winner] == len(curves[winner])
                rows.append(
                    {
                        "clock": clock_name,
                        "signal": name,
                        "grace": f"1/{round(1 / frac)}",
                        "grace_value": horizon * frac,
                        "best_survives": "yes" if survived else "no",
                        "best_stopped_at_epoch": "" if survived else runs[winner],
                        "best_first_judged_at_epoch": judged,
                        "best_rank_at_first_rung": first,
                        "compute_fraction": spent / total,
                        "best_val_found": found,
                        "grid_best_val": best_val[winner],
                        "grid_best_case": label.get(winner, winner),
                    }
                )
    return pd.DataFrame(rows)


def _first_rung(curves, clock, name, grace, winner) -> tuple[int | str, int | str]:
    """(rank of the grid's best setting among the trials at the first rung (1 = best), the
    epoch at which it reaches that rung); '-' when it ends before the rung."""
    values, epoch = {}, "-"
    for t, c in curves.items():
        reached = np.nonzero(c[clock].to_numpy(float) >= grace)[0]
        if len(reached):
            values[t] = float(signal(c, name)[int(reached[0])])
            if t == winner:
                epoch = int(reached[0]) + 1
    if winner not in values:
        return "-", epoch
    return 1 + sum(v < values[winner] for v in values.values()), epoch


def recommend(table: pd.DataFrame) -> str:
    """The cheapest (clock, signal, grace) that keeps the best setting alive, in one line."""
    ok = table[table["best_survives"] == "yes"].sort_values("compute_fraction", kind="stable")
    if not len(ok):
        return "no combination keeps the grid's best setting alive: use a longer grace period"
    r = ok.iloc[0]
    return (
        f"cheapest that keeps the best setting ({r['grid_best_case']}) alive: time_attr="
        f"{r['clock']}, signal={r['signal']}, grace={r['grace']} of the longest trial "
        f"({r['grace_value']:.4g}), {r['compute_fraction']:.0%} of the grid's time steps"
    )


def to_markdown(table: pd.DataFrame) -> str:
    cols = [
        "clock",
        "signal",
        "grace",
        "best_first_judged_at_epoch",
        "best_rank_at_first_rung",
        "best_survives",
        "best_stopped_at_epoch",
        "compute_fraction",
        "best_val_found",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = [
            f"{r[c]:.2f}"
            if c == "compute_fraction"
            else f"{r[c]:.4f}"
            if c == "best_val_found"
            else str(r[c])
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a folder with the reference grid's trials.csv and epochs.csv")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    try:
        trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
        epochs = pd.read_csv(folder / "epochs.csv", dtype={"trial_id": str})
    except OSError as exc:
        print(
            f"error: {folder}: {exc.strerror or exc}; allowed: a folder with trials.csv and epochs.csv",
            file=sys.stderr,
        )
        return 2
    try:
        table = clock_table(trials, epochs)
    except ValueError as exc:
        print(f"error: {folder}: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(table))
    print(recommend(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
