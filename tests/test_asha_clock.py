"""The offline ASHA replay of benchmarks/asha_clock.py on constructed curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.asha_clock import clock_table, halve, recommend, signal


def _curve(trial_id, val, train=None, updates_per_epoch=1, steps=100, seconds=1.0):
    n = len(val)
    return pd.DataFrame(
        {
            "trial_id": trial_id,
            "epoch": np.arange(1, n + 1),
            "val_loss": val,
            "train_loss": train if train is not None else val,
            "timesteps": steps * np.arange(1, n + 1),
            "train_time_s": seconds * np.arange(1, n + 1),
            "updates": updates_per_epoch * np.arange(1, n + 1),
        }
    )


def _late_bloomer_grid():
    """Three settings that lead early and stall; one that starts worst and ends best."""
    curves = {f"t{i}": _curve(f"t{i}", [0.5 + i * 0.01] * 9) for i in range(3)}
    curves["late"] = _curve("late", [0.9, 0.6, 0.45, 0.4, 0.38, 0.35, 0.33, 0.3, 0.3])
    return curves


def test_halve_stops_a_late_bloomer_at_a_short_grace_but_not_a_long_one():
    # Rule: at each rung only trials at or below the 1/3 quantile go on; a trial that is worst at
    # an early rung is stopped there, while a rung after it has overtaken keeps it.
    curves = _late_bloomer_grid()
    short = halve(curves, "timesteps", "val_loss", grace=100)  # rungs at epochs 1, 3 (and 9)
    assert short["late"] == 1
    assert max(short.values()) == 9  # someone always runs to the end
    long = halve(curves, "timesteps", "val_loss", grace=500)  # first rung at epoch 5
    assert long["late"] == 9


def test_halve_never_stops_a_trial_that_ends_before_the_rung():
    # Rule: on the updates clock an N=1 trial (one update per epoch) may end before the first
    # rung; Tune's ASHA never judges it there, so it runs to its end however bad it is.
    curves = {
        "n1": _curve("n1", [2.0] * 9, updates_per_epoch=1),
        "a": _curve("a", [0.5] * 9, updates_per_epoch=100),
        "b": _curve("b", [0.6] * 9, updates_per_epoch=100),
        "c": _curve("c", [0.7] * 9, updates_per_epoch=100),
    }
    runs = halve(curves, "updates", "val_loss", grace=100)
    assert runs["n1"] == 9 and runs["a"] == 9 and runs["c"] == 1


def test_signal_smooths_training_loss_and_tracks_best_held_out():
    # Rule: best_val_loss is the running minimum; the EMA damps a one-epoch spike; NaN/inf = +inf.
    c = _curve("x", [1.0, 0.5, 0.7, np.nan], train=[1.0, 1.0, 3.0, 1.0])
    assert list(signal(c, "best_val_loss")) == [1.0, 0.5, 0.5, 0.5]
    assert signal(c, "val_loss")[-1] == np.inf
    ema = signal(c, "train_loss_ema")
    assert ema[2] < 3.0 and ema[2] > 1.0 and abs(ema[2] - (0.3 * 3 + 0.7)) < 1e-12


def test_clock_table_reports_whether_the_grid_best_survives():
    # Rule: one row per clock x signal x grace; the grid's best is the lowest held-out loss of any
    # epoch; a stopped best is reported with its epoch, and the cheapest surviving row is named.
    curves = _late_bloomer_grid()
    epochs = pd.concat(curves.values(), ignore_index=True)
    trials = pd.DataFrame({"trial_id": list(curves), "case": ["a", "b", "c", "late-case"]})
    table = clock_table(trials, epochs)
    assert len(table) == 3 * 3 * 4
    assert set(table["grid_best_case"]) == {"late-case"}
    ts = table[(table["clock"] == "timesteps") & (table["signal"] == "val_loss")]
    assert ts.iloc[0]["best_survives"] == "no" and ts.iloc[0]["best_stopped_at_epoch"] == 1
    assert ts.iloc[-1]["best_survives"] == "yes"
    assert (table["compute_fraction"] <= 1.0 + 1e-12).all()
    assert "late-case" in recommend(table)


def test_asha_clock_cli_without_held_out_loss_is_one_line_exit_2(tmp_path, capsys):
    # Rule: a grid without held-out losses cannot name the best setting: one line, exit 2.
    from benchmarks.asha_clock import main

    curves = [_curve("a", [np.nan] * 3, train=[1.0, 0.9, 0.8]), _curve("b", [np.nan] * 3)]
    pd.concat(curves).to_csv(tmp_path / "epochs.csv", index=False)
    pd.DataFrame({"trial_id": ["a", "b"]}).to_csv(tmp_path / "trials.csv", index=False)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finite held-out loss" in err[0] and "allowed:" in err[0]
    assert main([str(tmp_path / "missing")]) == 2


def test_clock_table_says_when_the_best_is_first_judged():
    # Rule: the first rung is reached at the epoch whose clock first passes the grace period;
    # on the updates clock an N=1 best with few updates may never be judged ('-').
    curves = _late_bloomer_grid()
    trials = pd.DataFrame({"trial_id": list(curves)})
    table = clock_table(trials, pd.concat(curves.values(), ignore_index=True))
    ts = table[(table["clock"] == "timesteps") & (table["signal"] == "val_loss")]
    assert list(ts["best_first_judged_at_epoch"]) == [1, 1, 1, 3]  # grace 11, 33, 100, 300 steps
    assert list(ts["best_rank_at_first_rung"])[-1] == 1
