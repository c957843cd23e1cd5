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
from tuner.objectives import running_objective


def _records(losses, seconds=None, val=None):
    seconds = seconds or [float(i + 1) for i in range(len(losses))]
    return [{"loss": loss, "train_time_s": s, "timesteps": 100 * (i + 1),
             "val_loss": (val[i] if val else math.nan)}
            for i, (loss, s) in enumerate(zip(losses, seconds))]


def test_objective_loss_best_and_auc():
    # Rule: loss is the last epoch's, best_loss the lowest so far, auc the mean so far.
    r = _records([3.0, 1.0, 2.0])
    assert running_objective("loss", r, None) == 2.0
    assert running_objective("best_loss", r, None) == 1.0
    assert running_objective("auc", r, None) == pytest.approx(2.0)


def test_objective_time_to_target_in_seconds_or_timesteps():
    # Rule: the first time (training seconds, or time steps) the loss reached the target;
    # +inf until it does, so unreached trials rank last instead of failing.
    r = _records([3.0, 1.5, 0.9, 0.5], seconds=[0.5, 1.25, 2.0, 2.5])
    assert running_objective("time_to_target", r, 1.0) == 2.0
    assert running_objective("time_to_target", r, 1.0, "timesteps") == 300
    assert running_objective("time_to_target", r[:2], 1.0) == math.inf


def test_objective_val_loss_and_divergence():
    # Rule: val_loss is the last validation loss (+inf when missing); a diverged last epoch
    # makes every objective +inf.
    r = _records([1.0, 0.8], val=[1.2, 0.9])
    assert running_objective("val_loss", r, None) == 0.9
    assert running_objective("val_loss", _records([1.0]), None) == math.inf
    blown = _records([1.0, math.inf])
    for metric in ("loss", "best_loss", "auc", "val_loss"):
        assert running_objective(metric, blown, None) == math.inf


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


@pytest.mark.parametrize("losses", [[3.0, 1.0, 2.0], [3.0, 1.0, math.inf]])
def test_tables_and_objective_agree(losses):
    # Rule: trials.csv's best_loss/final_loss/auc are the running objective's values for the
    # same epochs (one definition: before, auc was the mean of finite losses in the table but
    # +inf as an objective for a diverged trial).
    records = [{"epoch": i + 1, **r} for i, r in enumerate(_records(losses))]
    records[-1].update(trial_id="t1", seed=0, diverged=not math.isfinite(losses[-1]))
    trials, _ = results.tables([results.TrialLog("search", "t1", {}, records)], [])
    row = trials.iloc[0]
    for column, metric in (("best_loss", "best_loss"), ("final_loss", "loss"), ("auc", "auc")):
        assert row[column] == pytest.approx(running_objective(metric, records, None))


def test_objectives_import_no_report_layer():
    # Rule: Ray workers import tuner.objectives; it must not pull in the report layer,
    # matplotlib or pandas.
    code = ("import sys, tuner.objectives; bad = [m for m in sys.modules if m.startswith("
            "('tuner.report', 'matplotlib', 'pandas'))]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stdout + done.stderr
