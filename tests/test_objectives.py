"""The objectives a search minimises, as running values over per-epoch records."""

from __future__ import annotations

import math

import pytest

from tuner.objectives import OBJECTIVES, running_objective


def _records(losses, seconds=None, val=None):
    seconds = seconds or [float(i + 1) for i in range(len(losses))]
    return [{"train_loss": loss, "train_loss_running": 9.0, "train_time_s": s,
             "timesteps": 100 * (i + 1), "val_loss": (val[i] if val else math.nan)}
            for i, (loss, s) in enumerate(zip(losses, seconds))]


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
    # Rule: val_loss is the last held-out loss, best_val_loss the lowest so far (+inf when
    # missing); a diverged last epoch makes every objective +inf.
    r = _records([1.0, 0.8, 0.7], val=[1.2, 0.9, 1.1])
    assert running_objective("val_loss", r, None) == 1.1
    assert running_objective("best_val_loss", r, None) == 0.9
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
