"""The objectives a search minimises, as running values over per-epoch records."""

from __future__ import annotations

import math

import pytest

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
