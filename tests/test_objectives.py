"""The objectives a search minimises, as running values over per-epoch records, and the loss
measures (tuner.core.metrics) they share with the trial tables."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuner import results
from tuner.core import metrics
from tuner.objectives import OBJECTIVES, running_objective


def _records(losses, seconds=None, val=None):
    seconds = seconds or [float(i + 1) for i in range(len(losses))]
    return [
        {
            "train_loss": loss,
            "train_loss_running": 9.0,
            "train_time_s": s,
            "timesteps": 100 * (i + 1),
            "val_loss": (val[i] if val else math.nan),
        }
        for i, (loss, s) in enumerate(zip(losses, seconds))
    ]


def test_objective_train_loss_best_and_auc():
    # Rule: train_loss is the last epoch's end-of-epoch training loss (never the running one),
    # best_train_loss the lowest so far, auc the mean train_loss so far.
    r = _records([3.0, 1.0, 2.0])
    assert running_objective("train_loss", r, None) == 2.0
    assert running_objective("best_train_loss", r, None) == 1.0
    assert running_objective("auc", r, None) == pytest.approx(2.0)


def test_objective_time_to_target_in_seconds_or_timesteps():
    # Rule: the first time (training seconds, or time steps) train_loss reached the target;
    # +inf until it does, so unreached trials rank last instead of failing.
    r = _records([3.0, 1.5, 0.9, 0.5], seconds=[0.5, 1.25, 2.0, 2.5])
    assert running_objective("time_to_target", r, 1.0) == 2.0
    assert running_objective("time_to_target", r, 1.0, "timesteps") == 300
    assert running_objective("time_to_target", r[:2], 1.0) == math.inf


def test_objective_val_loss_best_val_loss_and_divergence():
    # Rule: val_loss is the last held-out loss, best_val_loss the best epoch's (the record's
    # best_val_loss, else the lowest so far); +inf when missing; a diverged last epoch makes
    # every objective +inf.
    r = _records([1.0, 0.8, 0.7], val=[1.2, 0.9, 1.1])
    assert running_objective("val_loss", r, None) == 1.1
    assert running_objective("best_val_loss", r, None) == 0.9
    r[-1]["best_val_loss"] = 1.2  # early_stopping.min_delta kept epoch 1 as the best
    assert running_objective("best_val_loss", r, None) == 1.2
    assert running_objective("val_loss", _records([1.0]), None) == math.inf
    assert running_objective("best_val_loss", _records([1.0]), None) == math.inf
    blown = _records([1.0, math.inf], val=[1.0, 1.0])
    for metric in OBJECTIVES:
        assert running_objective(metric, blown, 0.5) == math.inf


@pytest.mark.parametrize("old,new", [("loss", "train_loss"), ("best_loss", "best_train_loss")])
def test_objective_old_names_refused_with_new_name(old, new):
    # Rule: the names of version 0.1 are refused in one line that names the successor.
    with pytest.raises(ValueError) as err:
        running_objective(old, _records([1.0]), None)
    assert f"renamed {new!r}" in str(err.value) and "\n" not in str(err.value)


def test_metrics_one_rule_for_a_diverged_run():
    # Rule (tuner.core.metrics): a run whose last loss is NaN/inf diverged, and its final,
    # best and mean loss and its time to target are all +inf, even when it reached the target
    # before blowing up; the loss before the blow-up is final_finite_loss.
    blown = [2.0, 0.5, math.nan]
    assert metrics.diverged(blown) and not metrics.diverged([2.0, 0.5])
    assert metrics.final_loss(blown) == metrics.best_loss(blown) == math.inf
    assert metrics.auc(blown) == math.inf
    assert metrics.time_to_target([1, 2, 3], blown, 1.0) == math.inf
    assert metrics.final_finite_loss(blown) == 0.5
    # A healthy run: last, lowest and mean loss; no epochs at all: NaN.
    assert (metrics.final_loss([3, 1, 2]), metrics.best_loss([3, 1, 2])) == (2.0, 1.0)
    assert math.isnan(metrics.best_loss([])) and math.isnan(metrics.auc([]))


@pytest.mark.parametrize(
    "losses,val",
    [
        ([3.0, 1.0, 2.0], None),
        ([3.0, 1.0, 2.0], [2.0, 1.5, 1.7]),
        ([3.0, 1.0, math.inf], [2.0, 1.5, math.inf]),
    ],
)
def test_tables_and_objective_agree(losses, val):
    # Rule: trials.csv's loss columns are the running objective's values for the same epochs
    # (one definition), a diverged trial's included; without a hold-out the held-out columns
    # are NaN.
    records = [{"epoch": i + 1, **r} for i, r in enumerate(_records(losses, val=val))]
    records[-1].update(trial_id="t1", seed=0, diverged=not math.isfinite(losses[-1]))
    trials, _ = results.tables([results.TrialLog("search", "t1", {}, records)], [])
    row = trials.iloc[0]
    for column in ("train_loss", "best_train_loss", "auc", "val_loss", "best_val_loss"):
        if val is None and column in ("val_loss", "best_val_loss"):
            assert math.isnan(row[column])
        else:
            assert row[column] == pytest.approx(running_objective(column, records, None))


def test_objectives_import_no_report_layer():
    # Rule: Ray workers import tuner.objectives; it must not pull in the report layer,
    # matplotlib or pandas.
    code = (
        "import sys, tuner.objectives; bad = [m for m in sys.modules if m.startswith("
        "('tuner.report', 'matplotlib', 'pandas'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_tables_keep_wall_time_to_the_millisecond_and_losses_to_9_digits(tmp_path):
    # Rule: CSVs round floats to 9 significant digits (enough for float32 losses), but a Unix
    # time (1.8e9 s) would then lose everything below 10 s: `wall_time` keeps milliseconds, and a
    # missing one stays empty.
    import pandas as pd

    frame = pd.DataFrame({"loss": [0.123456789123, 2.0], "wall_time": [1796219377.2339985, float("nan")]})
    results.atomic_write_csv(tmp_path / "epochs.csv", frame)
    back = pd.read_csv(tmp_path / "epochs.csv")
    assert back["wall_time"].iloc[0] == pytest.approx(1796219377.234, abs=1e-6)
    assert math.isnan(back["wall_time"].iloc[1])
    assert back["loss"].iloc[0] == 0.123456789
