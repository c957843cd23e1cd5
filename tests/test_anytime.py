"""The anytime curve (tuner.report.anytime) on constructed tables, and its plots on real files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from pathlib import Path

from tuner.report.anytime import (
    anytime_curve,
    best_at,
    compute_to_reach,
    experiment_order,
    study_curve,
    value_column,
    warm_start_trials,
)
from tuner.report.anytime_plot import band, plot_strategies, plot_study
from tuner.report.load import StudyFiles
from tuner.report.markdown import warm_start_lines


def _epochs(trial_id: str, values, steps: int = 100, seconds: float = 1.0, val=None):
    """epochs.csv rows of one trial: `values` are the training losses, one per epoch."""
    n = len(values)
    return pd.DataFrame(
        {
            "trial_id": trial_id,
            "epoch": range(1, n + 1),
            "train_loss": values,
            "val_loss": val if val is not None else [math.nan] * n,
            "epoch_time_s": [seconds] * n,
            "timesteps": [steps * (i + 1) for i in range(n)],
            "updates": range(1, n + 1),
            "train_time_s": [seconds * (i + 1) for i in range(n)],
        }
    )


def _trials(*rows):
    return pd.DataFrame([{"trial_id": t, "experiment": e} for t, e in rows])


def test_anytime_curve_monotone_and_correct_at_known_points():
    # Rule: the best value never gets worse, and equals the lowest value among rows ended so far.
    trials = _trials(("a_00000", "search"), ("a_00001", "search"))
    epochs = pd.concat([_epochs("a_00000", [1.0, 0.8, 0.9]), _epochs("a_00001", [0.95, 0.5, 0.6])])
    curve = anytime_curve(trials, epochs, "train_loss", slots=1)
    # One worker: trial 0's three epochs, then trial 1's.
    assert list(curve["trial_id"]) == ["a_00000"] * 3 + ["a_00001"] * 3
    assert list(curve["best"]) == [1.0, 0.8, 0.8, 0.8, 0.5, 0.5]
    assert list(curve["timesteps"]) == [100, 200, 300, 400, 500, 600]
    assert list(curve["seconds"]) == [1, 2, 3, 4, 5, 6]
    assert (np.diff(curve["best"]) <= 0).all()
    assert list(curve["improved"]) == [True, True, False, False, True, False]
    assert best_at(curve, 350) == 0.8 and best_at(curve, 600) == 0.5
    assert math.isnan(best_at(curve, 50))
    assert compute_to_reach(curve, 0.8) == 200
    assert compute_to_reach(curve, 0.5, axis="seconds") == 5
    assert compute_to_reach(curve, 0.4) == math.inf
    # Reached only after the budget counts as never.
    assert compute_to_reach(curve, 0.5, budget=450) == math.inf


def test_anytime_curve_orders_concurrent_trials_by_epoch_end():
    # Rule: with 2 workers, trials run side by side: rows interleave by when each epoch ended,
    # and the third trial starts on the worker that frees first.
    trials = _trials(("a_00000", "search"), ("a_00001", "search"), ("a_00002", "search"))
    epochs = pd.concat(
        [
            _epochs("a_00000", [1.0, 0.9], seconds=1.0),
            _epochs("a_00001", [0.7, 0.6, 0.5], seconds=1.5),
            _epochs("a_00002", [0.4], seconds=0.2),
        ]
    )
    curve = anytime_curve(trials, epochs, "train_loss", slots=2)
    # Ends: a0 at 1, 2; a1 at 1.5, 3, 4.5; a2 starts at 2 (a0's worker) and ends at 2.2.
    order = list(zip(curve["trial_id"], curve["epoch"]))
    assert order == [
        ("a_00000", 1),
        ("a_00001", 1),
        ("a_00000", 2),
        ("a_00002", 1),
        ("a_00001", 2),
        ("a_00001", 3),
    ]
    assert list(curve["best"]) == [1.0, 0.7, 0.7, 0.4, 0.4, 0.4]
    # A wall_time column, when present, decides the order instead of the replay.
    epochs = epochs.assign(wall_time=[5, 6, 1, 2, 3, 0.5])
    curve = anytime_curve(trials, epochs, "train_loss", slots=2)
    assert list(curve["trial_id"])[:2] == ["a_00002", "a_00001"]
    assert curve["best"].iloc[0] == 0.4


def test_anytime_curve_diverged_and_missing_values_spend_compute_without_improving():
    # Rule: +inf, NaN and -inf-free rows count as compute but never set a best; before the first
    # finite value the best is NaN, afterwards it carries through non-finite rows.
    trials = _trials(("a_00000", "search"), ("a_00001", "search"))
    epochs = pd.concat(
        [_epochs("a_00000", [math.inf, math.nan]), _epochs("a_00001", [0.9, math.inf, math.nan, 0.95])]
    )
    curve = anytime_curve(trials, epochs, "train_loss", slots=1)
    assert curve["best"].iloc[:2].isna().all()
    assert list(curve["best"].iloc[2:]) == [0.9, 0.9, 0.9, 0.9]
    assert curve["timesteps"].iloc[-1] == 600
    assert compute_to_reach(curve, 0.9) == 300
    assert curve["improved"].sum() == 1


def test_anytime_curve_held_out_metric_and_max_mode():
    # Rule: val_loss/best_val_loss read the held-out column; mode max keeps the largest value.
    trials = _trials(("a_00000", "search"))
    epochs = _epochs("a_00000", [0.1, 0.1, 0.1], val=[0.9, 0.7, 0.8])
    assert list(anytime_curve(trials, epochs, "best_val_loss")["best"]) == [0.9, 0.7, 0.7]
    assert list(anytime_curve(trials, epochs, "val_loss", mode="max")["best"]) == [0.9, 0.9, 0.9]
    with pytest.raises(ValueError, match="auc"):
        value_column("auc")


def test_anytime_curve_experiments_follow_each_other_and_warm_points_flagged():
    # Rule: an extension's curve starts where the search ended and keeps its best; the warm
    # points are trials of the first experiment (an extension does not redo them).
    trials = _trials(
        ("a_00000", "search"), ("a_00001", "search"), ("b_00000", "extend-1"), ("b_00001", "extend-1")
    ).assign(**{"train.lr": [0.01, 0.02, 0.01, 0.03]})
    epochs = pd.concat(
        [
            _epochs("a_00000", [0.5]),
            _epochs("a_00001", [0.6]),
            _epochs("b_00000", [0.7]),
            _epochs("b_00001", [0.4]),
        ]
    )
    curve = anytime_curve(trials, epochs, "train_loss", slots=2, start_from=[{"train.lr": 0.01}])
    assert list(curve["experiment"]) == ["search", "search", "extend-1", "extend-1"]
    assert list(curve["timesteps"]) == [100, 200, 300, 400]
    assert list(curve["best"]) == [0.5, 0.5, 0.5, 0.4]
    assert list(curve["warm"]) == [True, False, False, False]


def test_warm_points_and_experiment_order_do_not_depend_on_table_order():
    # Rule: trials.csv is sorted best first, so an extension's trials may come first: the
    # experiments still run search, extend-1, extend-2, extend-10 (by number, not text), and the
    # warm points are the `search` trials with the points' values, in the points' order (an
    # extension's trial with the same values is not one).
    trials = _trials(
        ("c_00000", "extend-10"),
        ("b_00000", "extend-2"),
        ("a_00001", "search"),
        ("d_00000", "extend-1"),
        ("a_00000", "search"),
    ).assign(**{"train.lr": [0.01, 0.02, 0.02, 0.01, 0.01], "train.schedule.chunks": ["1"] * 5})
    assert experiment_order(trials["experiment"]) == ["search", "extend-1", "extend-2", "extend-10"]
    p1, p2 = {"train.lr": 0.01, "train.schedule.chunks": [1]}, {"train.lr": 0.02}
    assert warm_start_trials(trials, [p1]) == ["a_00000"]
    assert warm_start_trials(trials, [p2, p1]) == ["a_00001", "a_00000"]
    assert warm_start_trials(trials, [{"train.lr": 0.05}]) == []
    assert warm_start_trials(trials, []) == []
    epochs = pd.concat([_epochs(t, [0.5]) for t in trials["trial_id"]])
    curve = anytime_curve(trials, epochs, "train_loss", start_from=[p1])
    assert list(curve["experiment"]) == ["search", "search", "extend-1", "extend-2", "extend-10"]
    assert list(curve.loc[curve["warm"], "trial_id"]) == ["a_00000"]


def test_trial_order_from_started_when_ids_are_random():
    # Rule: a searcher's trial ids are random hex: trials.csv's `started` gives the order they
    # began in (the replay's order, and the earlier of two trials with a point's values);
    # without it, the id's index or text.
    trials = _trials(("f00d", "search"), ("0abc", "search"), ("beef", "search")).assign(
        started=[100.0, 300.0, 200.0], **{"train.lr": [0.01, 0.02, 0.02]}
    )
    assert warm_start_trials(trials, [{"train.lr": 0.02}]) == ["beef"]
    epochs = pd.concat([_epochs(t, [0.5]) for t in trials["trial_id"]])
    curve = anytime_curve(trials, epochs, "train_loss", slots=1)
    assert list(curve["trial_id"]) == ["f00d", "beef", "0abc"]
    assert warm_start_trials(trials.drop(columns="started"), [{"train.lr": 0.02}]) == ["0abc"]


def test_anytime_creation_order_from_trial_index_not_text():
    # Rule: trials start in Tune's creation order (the numeric suffix), so a_00010 follows a_00002.
    trials = _trials(("a_00010", "search"), ("a_00002", "search"))
    epochs = pd.concat([_epochs("a_00010", [0.1]), _epochs("a_00002", [0.2])])
    curve = anytime_curve(trials, epochs, "train_loss", slots=1)
    assert list(curve["trial_id"]) == ["a_00002", "a_00010"]


def test_study_curve_and_plots_from_files(tmp_path):
    # Rule: a study folder's files alone give the curve (objective, slots and warm-start points
    # from study.yaml) and both plots are written.
    trials = _trials(("a_00000", "search"), ("a_00001", "search")).assign(
        **{"train.optimizer": ["adam", "sgd"]}
    )
    epochs = pd.concat(
        [_epochs("a_00000", [1.0, 0.8], val=[0.9, 0.85]), _epochs("a_00001", [0.7, 0.6], val=[0.95, 0.8])]
    )
    trials.to_csv(tmp_path / "trials.csv", index=False)
    epochs.to_csv(tmp_path / "epochs.csv", index=False)
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "search": {
                    "metric": "val_loss",
                    "mode": "min",
                    "max_concurrent": 2,
                    "start_from": [{"train.optimizer": "adam"}],
                }
            }
        )
    )
    curve = study_curve(tmp_path)
    assert curve["best"].iloc[-1] == 0.8
    assert curve.loc[curve["trial_id"] == "a_00000", "warm"].all()
    assert not curve.loc[curve["trial_id"] == "a_00001", "warm"].any()
    assert plot_study(curve, tmp_path / "anytime.png", hlines={"target": 0.8}).stat().st_size > 0
    out = plot_strategies({"x": [curve, curve]}, tmp_path / "bench.png", budget=400)
    assert out.stat().st_size > 0


def test_band_median_and_range_over_repeats():
    # Rule: at each compute the band is the median / min / max of the repeats' best so far; a
    # repeat that ended keeps its last best.
    t = _trials(("a_00000", "search"))
    fast = anytime_curve(t, _epochs("a_00000", [0.5, 0.4]), "train_loss")
    slow = anytime_curve(t, _epochs("a_00000", [0.9, 0.8, 0.7]), "train_loss")
    mid = anytime_curve(t, _epochs("a_00000", [0.6, 0.6, 0.6]), "train_loss")
    b = band([fast, slow, mid], np.array([50.0, 100.0, 300.0]))
    assert b["median"].isna().iloc[0]
    assert list(b["median"].iloc[1:]) == [0.6, 0.6]
    assert list(b["min"].iloc[1:]) == [0.5, 0.4]
    assert list(b["max"].iloc[1:]) == [0.9, 0.7]


def _summary_of(trials: pd.DataFrame, start_from: list[dict], mode: str = "min") -> list[str]:
    """The report's warm-start line for a constructed trials table (objective column)."""
    study = StudyFiles(
        name="s",
        path=Path("s"),
        trials=trials,
        epochs=pd.DataFrame(),
        meta={"search": {"mode": mode, "start_from": start_from}},
        space={},
        distributions={},
        cases={},
        objective="objective",
    )
    return warm_start_lines(study)


def _warm_table(values: dict[str, float]) -> pd.DataFrame:
    """Trials a_0000i with train.lr = i / 100 and the given objective values."""
    return pd.DataFrame(
        [
            {
                "trial_id": t,
                "experiment": "search",
                "status": "completed",
                "epochs": 10,
                "objective": v,
                "train.lr": i / 100,
            }
            for i, (t, v) in enumerate(values.items())
        ]
    )


POINTS = [{"train.lr": 0.0}, {"train.lr": 0.01}]  # the values of a_00000 and a_00001


def test_report_states_the_best_against_the_warm_start_points():
    # Rule: with start points, the summary gives the best trial's value, how much better it is
    # than the best start point (relative), and every start point's value and how it ended.
    trials = _warm_table({"a_00000": 0.80, "a_00001": 1.00, "a_00002": 0.72, "a_00003": 0.90})
    (line,) = _summary_of(trials, POINTS)
    assert "the best trial `a_00002` reached 0.72, 10.0% lower than the best of them" in line
    assert "point 1 (trial `a_00000`, completed, 10 epochs): 0.8" in line
    assert "point 2 (trial `a_00001`, completed, 10 epochs): 1" in line
    # Rule: when a start point stays best, the summary says the search found nothing better.
    trials = _warm_table({"a_00000": 0.70, "a_00001": 1.00, "a_00002": 0.72})
    (line,) = _summary_of(trials, POINTS)
    assert (
        "the best trial is warm-start point 1 itself: the other 1 finished trial found nothing better" in line
    )
    # Rule: max mode compares the other way; no start points, no line.
    trials = _warm_table({"a_00000": 0.5, "a_00001": 0.6})
    (line,) = _summary_of(trials, POINTS[:1], mode="max")
    assert "20.0% higher than the best of them" in line
    assert _summary_of(trials, []) == []
