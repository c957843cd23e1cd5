"""Search strategies side by side: how much compute each spends before it finds a good setting.

    python benchmarks/bench_search_quality.py            # the full run (~25-35 min, idle 2 cores)
    python benchmarks/bench_search_quality.py --quick    # a tiny version (~2-4 min on 2 cores)
    python benchmarks/bench_search_quality.py --grace-epochs 9 --out results/search_quality_g9

Scale (full): the `two-modes` data, 8 series x 4,000 steps, window 128, the last 20% of every
series held out (`data.val_fraction=0.2`), the model of `full.yaml` (64 + 64 units, noise 0.1),
30 epochs per trial. Why: the issue's "8 x 4,000" reduced scale (an epoch ~0.5 s), held-out tail
because training loss at this scale ranks memorisation (issue 8), and 30 epochs because the
held-out loss of the good settings bottoms out around epoch 8-20 at this scale (FACTS.md), so 30
epochs reach every setting's best while the grid (10 x 30 epochs) stays ~3 minutes of wall time;
1 grid + 3 strategies x 3 repeats is then ~10 grid-equivalents of compute, ~30-40 minutes.
--quick: 4 series x 300 steps, window 16, 8 units, 4 epochs, 2 repeats, a reference grid of 3 cases
(sgd, adam, adam-clip-schedule): it checks the plumbing, not the science.

Every strategy runs through `tuner.api.run` (what `python -m tuner.search` runs; `--no-dashboard
--no-report`) in this process, one study after the other on one Ray (local with 2 CPUs, or
joined with `--address`), on a space file generated from the project's own files, with the same
data, model, epochs and `train.seed=0`:
* (a) reference: the ten article cases of `seed_ablation.yaml`, one seed, FIFO, run to the end.
  Its best held-out loss (any epoch of any case) is the target; its total time steps the budget.
* (b) random + ASHA, (c) TPE + ASHA, (d) TPE + ASHA + warm start: the space of `full.yaml`
  (optimizer, lr, momentum, clip mode and threshold, chunk schedule, patience) searched by
  Optuna's random or TPE sampler with the ASHA settings of `full.yaml` scaled to this data
  (time_attr time steps, grace `--grace-epochs` epochs of time steps, reduction 3), each repeated
  with search seeds 0, 1, 2. (d) adds `search.start_from` with the article's best setting and
  plain Adam; a tuner.search that rejects that key (exit 2) makes (d) "skipped" in the table.
Same budget: each strategy gets a generous `num_samples` and `search.timestep_budget` = the
grid's total time steps, which stops the search (Tune's stopper) at the first result that passes
it; the curves are then cut at the budget, so the last epochs' overshoot costs wall time, not
fairness.

Measures come from the study files alone, as the report draws them (`tuner.report.anytime`): the best
held-out loss so far against the time steps spent by all trials (epochs ordered by when they
ended, the two trial slots replayed). Per strategy: compute to reach the target (median and range
over repeats, as a fraction of the budget; "never" counts as never), best held-out loss at 1/10,
1/3 and all of the budget, wall time, and for (d) the best held-out loss of the warm-start points
themselves (what the search added to what was known). Then the offline ASHA clock replay
(`asha_clock.py`) on the reference's full curves. Writes to `--out` (default
results/search_quality/): table.md, summary.csv, runs.csv, anytime.png, anytime_seconds.png,
asha_clock.csv, reference/*.csv (the grid's tables: `python benchmarks/asha_clock.py` re-reads them).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.asha_clock import clock_table, recommend  # noqa: E402
from benchmarks.asha_clock import to_markdown as clock_markdown  # noqa: E402
from benchmarks.machine import machine_line  # noqa: E402
from tuner.report.anytime import best_at, compute_to_reach, study_curve  # noqa: E402
from tuner.report.anytime_plot import plot_strategies  # noqa: E402

SEARCH_METRIC = "best_val_loss"
"""What the strategies optimise and ASHA ranks (full.yaml's objective): the lowest held-out loss
so far, which early stopping keeps and which is less noisy than the last epoch's."""
CURVE_METRIC = "best_val_loss"
"""The curve: the lowest held-out loss of any epoch so far (the model early stopping keeps)."""
ARTICLE_BEST = {
    "train.optimizer": "adam",
    "train.lr": 0.01,
    "train.clip.mode": "norm",
    "train.clip.threshold": 1.0,
    "train.schedule.chunks": [100, 50, 10, 2, 1],
    "train.schedule.patience": 20,
}
PLAIN_ADAM = {
    "train.optimizer": "adam",
    "train.lr": 0.01,
    "train.clip.mode": "none",
    "train.schedule.chunks": [1],
    "train.schedule.patience": 20,
}
STRATEGIES = {
    "(b) random+ASHA": ("random", False),
    "(c) TPE+ASHA": ("tpe", False),
    "(d) TPE+ASHA+warm": ("tpe", True),
}
REFERENCE = "(a) grid"
FRACTIONS = {"1/10": 1 / 10, "1/3": 1 / 3, "all": 1.0}
GOAL = 1 / 3


@dataclasses.dataclass(frozen=True)
class Scale:
    n_series: int
    length: int
    window: int
    units: int
    epochs: int
    val_fraction: float = 0.2
    grace_epochs: float = 3.0
    repeats: int = 3
    cases: tuple[str, ...] = ()
    """The reference grid's cases (empty: all ten of seed_ablation.yaml)."""
    concurrent: int = 2
    """Trials at a time (--quick: 1; its trials last under a second, less than starting the
    second trial process they would need, ~3.5 CPU-s)."""


FULL = Scale(n_series=8, length=4000, window=128, units=64, epochs=30)
QUICK = Scale(
    n_series=4,
    length=300,
    window=16,
    units=8,
    epochs=4,
    grace_epochs=1.0,
    repeats=2,
    cases=("sgd", "adam", "adam-clip-schedule"),
    concurrent=1,
)


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "search_spaces" / name).read_text())


def _common(doc: dict[str, Any], scale: Scale, name: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["name"] = name
    doc["data"] = {
        "preset": "two-modes",
        "n_series": scale.n_series,
        "length": scale.length,
        "window": scale.window,
        "gamma": 0.9,
        "seed": 0,
        "val_fraction": scale.val_fraction,
    }
    doc["model"] = {"dense_units": scale.units, "lstm_units": scale.units, "noise_std": 0.1}
    doc.setdefault("train", {}).update(max_epochs=scale.epochs, seed=0)
    doc["search"].update(
        metric=SEARCH_METRIC,
        mode="min",
        max_concurrent=scale.concurrent,
        checkpoint_every=max(5, scale.epochs // 3),
    )
    doc["resources"] = {"cpu": 1, "gpu": 0}
    return doc


def reference_space(scale: Scale) -> dict[str, Any]:
    """seed_ablation.yaml's ten cases, one seed, at the benchmark's scale."""
    doc = _common(_load("seed_ablation.yaml"), scale, "reference")
    doc["space"]["train.seed"] = {"grid": [0]}
    if scale.cases:  # --quick: a smaller grid, so a smaller budget and fewer trials
        grid = doc["space"]["case"]["grid"]
        doc["space"]["case"]["grid"] = [c for c in grid if c["name"] in scale.cases]
    doc["search"]["time_budget_s"] = None
    return doc


def strategy_space(
    scale: Scale, sampler: str, warm: bool, seed: int, steps_per_epoch: int, name: str
) -> dict[str, Any]:
    """full.yaml's space and ASHA, its grace period rescaled to this data's epoch."""
    doc = _common(_load("full.yaml"), scale, name)
    sched = dict(
        doc["search"]["scheduler"],
        type="asha",
        time_attr="timesteps",
        grace_period=float(scale.grace_epochs * steps_per_epoch),
        max_t=None,
    )
    doc["search"].update(
        algorithm="optuna", sampler=sampler, seed=seed, num_samples=1000, scheduler=sched, time_budget_s=None
    )
    doc["search"].pop("start_from", None)  # full.yaml's own warm start: only for (d)
    if warm:
        doc["search"]["start_from"] = [dict(ARTICLE_BEST), dict(PLAIN_ADAM)]
    return doc


def run_study(
    doc: dict[str, Any], work: Path, budget: float | None = None, cap_s: float = 7200.0
) -> dict[str, Any]:
    """The search of `doc` through `tuner.api.run` (what `python -m tuner.search` runs), on the
    Ray this process started or joined; `budget`: `search.timestep_budget` (time steps of all
    trials together), `cap_s`: its `time_budget_s`. Tune's progress goes to work/logs/NAME.log.

    Returns wall_s, rc (0 finished, 2 rejected file, 1 failed, 130 interrupted), stopped (by a
    budget) and error (the one-line message of a rejected file, or the failure)."""
    from tuner.api import SearchOptions, run
    from tuner.core.config import ConfigError

    if budget is not None:
        doc = copy.deepcopy(doc)
        doc["search"].update(timestep_budget=math.ceil(budget), time_budget_s=cap_s)
    space = work / "spaces" / f"{doc['name']}.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    log_path = work / "logs" / f"{doc['name']}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    opts = SearchOptions(space=space, results_dir=work / "studies", dashboard=False, report=False)
    started, why, rc, error = time.monotonic(), "", 0, ""
    with log_path.open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            study = run(opts)
            why, rc = study.why, (0 if study.finished else 130)
        except ConfigError as exc:  # '<space file>: <key>: <what>; allowed: ...' -> '<key>: <what>'
            rc, error = 2, str(exc).split(": ", 1)[-1].split("; allowed")[0]
        except Exception as exc:  # one failed study must not lose the others
            rc, error = 1, f"{exc.__class__.__name__}: {exc} (see {log_path})"
    stopped = "budget" in why
    return {"wall_s": time.monotonic() - started, "rc": rc, "stopped": stopped, "error": error}


def _med_range(values: list[float], fmt: str = "{:.3f}") -> str:
    """'median [min-max]' with +inf shown as never (a median that is never is 'never')."""
    if not values:
        return "-"
    show = lambda v: "never" if math.isinf(v) else ("nan" if math.isnan(v) else fmt.format(v))  # noqa: E731
    ordered = sorted(values)
    mid = statistics.median(ordered)  # [x, inf] -> inf: half of the repeats never got there
    if len(ordered) == 1:
        return show(ordered[0])
    return f"{show(mid)} [{show(ordered[0])}-{show(ordered[-1])}]"


def measure(curve: pd.DataFrame, target: float, budget: float) -> dict[str, float]:
    row = {
        "to_target": compute_to_reach(curve, target, "timesteps", budget=budget) / budget,
        "trials": curve["trial_id"].nunique(),
        "spent": float(curve["timesteps"].max()),
    }
    for label, frac in FRACTIONS.items():
        row[f"best_at_{label}"] = best_at(curve, budget * frac)
    warm = curve.loc[curve["warm"], "value"]
    row["warm_points_best"] = float(warm[warm.map(math.isfinite)].min()) if len(warm) else math.nan
    return row


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per strategy: reached k/n, compute to target and best values, median [range]."""
    rows = []
    for strategy, part in runs.groupby("strategy", sort=False):
        ok = part[part["error"] == ""]
        if not len(ok):
            rows.append(
                {
                    "strategy": strategy,
                    "repeats": 0,
                    "reached": "-",
                    "to_target": "skipped: " + part["error"].iloc[0],
                }
            )
            continue
        row = {
            "strategy": strategy,
            "repeats": len(ok),
            "reached": f"{int(ok['to_target'].map(math.isfinite).sum())}/{len(ok)}",
            "to_target": _med_range(list(ok["to_target"]), "{:.2f}"),
        }
        for label in FRACTIONS:
            row[f"best_at_{label}"] = _med_range(list(ok[f"best_at_{label}"]), "{:.4f}")
        warm = list(ok["warm_points_best"].dropna())
        row["warm_points_best"] = _med_range(warm, "{:.4f}") if warm else "-"
        row["trials"] = _med_range(list(ok["trials"].astype(float)), "{:.0f}")
        row["wall_s"] = _med_range(list(ok["wall_s"]), "{:.0f}")
        rows.append(row)
    return pd.DataFrame(rows)


def goal_line(runs: pd.DataFrame) -> str:
    parts, met = [], False
    for strategy in ("(c) TPE+ASHA", "(d) TPE+ASHA+warm"):
        ok = runs[(runs["strategy"] == strategy) & (runs["error"] == "")]
        if not len(ok):
            parts.append(f"{strategy}: not run")
            continue
        median = statistics.median(ok["to_target"])
        met = met or median <= GOAL
        parts.append(f"{strategy}: median {'never' if math.isinf(median) else f'{median:.2f}'} of the budget")
    verdict = "met" if met else "not met"
    return (
        f"goal: (c) or (d) reaches the target with <= 1/3 of the grid's time steps "
        f"(median): {verdict} ({'; '.join(parts)})"
    )


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(lines)


def run_all(scale: Scale, work: Path, out: Path, repeats: int) -> tuple[pd.DataFrame, dict]:
    """The reference, then every strategy x repeat; returns (runs, curves by strategy)."""
    cases = len(scale.cases) or 10
    print(f"(a) reference grid: {cases} cases x {scale.epochs} epochs ...", flush=True)
    ref = run_study(reference_space(scale), work)
    if ref["error"]:
        raise SystemExit(f"error: the reference grid failed: {ref['error']}")
    ref_dir = work / "studies" / "reference"
    (out / "reference").mkdir(parents=True, exist_ok=True)
    for f in ("trials.csv", "epochs.csv", "study.yaml"):
        shutil.copy(ref_dir / f, out / "reference" / f)
    ref_curve = study_curve(ref_dir, CURVE_METRIC)
    target, budget = float(ref_curve["best"].iloc[-1]), float(ref_curve["timesteps"].iloc[-1])
    epochs = pd.read_csv(ref_dir / "epochs.csv")
    steps_per_epoch = int(epochs.loc[epochs["epoch"] == 1, "timesteps"].iloc[0])
    print(
        f"    target (best held-out loss) {target:.4f}, budget {budget:,.0f} time steps, "
        f"{ref['wall_s']:.0f} s",
        flush=True,
    )
    runs = [{"strategy": REFERENCE, "seed": 0, **ref, **measure(ref_curve, target, budget)}]
    curves: dict[str, list[pd.DataFrame]] = {REFERENCE: [ref_curve]}
    for strategy, (sampler, warm) in STRATEGIES.items():
        for seed in range(repeats):
            name = f"{strategy.split()[0].strip('()')}-seed{seed}"
            doc = strategy_space(scale, sampler, warm, seed, steps_per_epoch, name)
            result = run_study(doc, work, budget=budget, cap_s=max(600.0, 4 * ref["wall_s"]))
            row = {"strategy": strategy, "seed": seed, **result}
            if not result["error"]:
                curve = study_curve(work / "studies" / name, CURVE_METRIC)
                curves.setdefault(strategy, []).append(curve)
                row.update(measure(curve, target, budget))
            runs.append(row)
            print(
                f"    {strategy} seed {seed}: "
                + (
                    f"skipped ({result['error']})"
                    if result["error"]
                    else f"{row['trials']} trials, to target {row['to_target']:.2f} of budget, best "
                    f"{row['best_at_all']:.4f}, {result['wall_s']:.0f} s"
                ),
                flush=True,
            )
            if result["error"] and result["rc"] == 2:
                break  # the space file is rejected: the other seeds would be too
    info = {
        "target": target,
        "budget": budget,
        "steps_per_epoch": steps_per_epoch,
        "budget_s": float(ref_curve["seconds"].iloc[-1]),
    }
    return pd.DataFrame(runs), {"curves": curves, **info}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny version (a few minutes)")
    p.add_argument("--address", help="join this running Ray (2 CPUs) instead of starting one")
    p.add_argument("--repeats", type=int, help="search seeds per strategy (default 3, quick 2)")
    p.add_argument(
        "--grace-epochs", type=float, help="ASHA grace period in epochs of time steps (default 3, quick 1)"
    )
    p.add_argument("--out", default=str(ROOT / "results" / "search_quality"))
    p.add_argument("--keep", action="store_true", help="keep the study folders and logs (--out/work)")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.grace_epochs is not None:
        scale = dataclasses.replace(scale, grace_epochs=args.grace_epochs)
    repeats = args.repeats or scale.repeats
    if repeats < 1 or scale.grace_epochs <= 0:
        print("error: --repeats and --grace-epochs: allowed: values > 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work" if args.keep else Path(tempfile.mkdtemp(prefix="search_quality_"))
    started = time.monotonic()
    import ray

    # One Ray for every study (each search reuses it): joined, or local with 2 CPUs.
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs, info = run_all(scale, work, out, repeats)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(scale, repeats, runs, info, out, time.monotonic() - started)
    return 0


def write_outputs(
    scale: Scale, repeats: int, runs: pd.DataFrame, info: dict, out: Path, total_s: float
) -> None:
    target, budget = info["target"], info["budget"]
    summary = summarise(runs)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    summary.to_csv(out / "summary.csv", index=False)
    hlines = {f"target: grid's best held-out loss {target:.4f}": target}
    plot_strategies(
        info["curves"],
        out / "anytime.png",
        budget,
        "timesteps",
        title="best held-out loss so far (median, min-max over search seeds)",
        hlines=hlines,
    )
    plot_strategies(
        info["curves"],
        out / "anytime_seconds.png",
        info["budget_s"],
        "seconds",
        title="best held-out loss so far, against training seconds",
        hlines=hlines,
    )
    clock = clock_table(
        pd.read_csv(out / "reference" / "trials.csv", dtype={"trial_id": str}),
        pd.read_csv(out / "reference" / "epochs.csv", dtype={"trial_id": str}),
    )
    clock.to_csv(out / "asha_clock.csv", index=False, float_format="%.6g")
    scale_line = (
        f"scale: two-modes, {scale.n_series} series x {scale.length:,} steps, window "
        f"{scale.window}, held-out tail {scale.val_fraction:.0%}, {scale.units}+"
        f"{scale.units} units, {scale.epochs} epochs per trial ({info['steps_per_epoch']:,}"
        f" time steps per epoch); ASHA grace {scale.grace_epochs:g} epochs of time steps,"
        f" reduction 3; {repeats} search seeds per strategy (why this scale: see the "
        "benchmark's docstring)"
    )
    budget_line = (
        f"target: {target:.4f} (the grid's best held-out loss); budget: "
        f"{budget:,.0f} time steps (the grid's total); compute columns are fractions "
        f"of the budget; best held-out loss at 1/10, 1/3 and all of it"
    )
    text = "\n".join(
        [
            "# Search quality: compute to find the article's best, per strategy",
            "",
            machine_line("torch", "ray", "optuna"),
            "",
            scale_line,
            "",
            budget_line,
            "",
            markdown(summary),
            "",
            goal_line(runs),
            "",
            f"total wall time {total_s:.0f} s",
            "",
            "## ASHA on a fair clock (offline replay on the grid's curves)",
            "",
            clock_markdown(clock),
            "",
            recommend(clock),
            "",
        ]
    )
    (out / "table.md").write_text(text)
    print("\n" + text)
    print(
        f"files: {out}/table.md, summary.csv, runs.csv, anytime.png, anytime_seconds.png, "
        "asha_clock.csv, reference/"
    )


if __name__ == "__main__":
    sys.exit(main())
