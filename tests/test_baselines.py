"""The reference predictors: closed-form ridge and predict-zero on the model's own split."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tuner.core import baselines as bl
from tuner.core.config import DataConfig
from tuner.core.data import prepare, prepare_from


def _cfg(**kw) -> DataConfig:
    return DataConfig(**{"n_series": 3, "length": 300, "window": 8, **kw})


def _design(s):
    """Every counted step of a SeriesSet as one row: (X with a ones column, Y), by brute force."""
    x = s.inputs(0, s.steps)[s.mask].double().numpy()
    y = s.targets[s.mask].double().numpy()
    return np.concatenate([x, np.ones((len(x), 1))], axis=1), y


def _lstsq_ridge(x, y, alpha):
    """Ridge by ordinary least squares on the augmented design [X; sqrt(alpha) I'] (no
    penalty on the intercept column)."""
    p = x.shape[1]
    pen = np.sqrt(alpha) * np.eye(p)[:-1]
    return np.linalg.lstsq(np.vstack([x, pen]), np.vstack([y, np.zeros((p - 1, y.shape[1]))]), rcond=None)[0]


@pytest.mark.parametrize("alpha", [0.0, 3.0, 500.0])
def test_baselines_ridge_solve_equals_direct_lstsq(alpha):
    # Rule: the normal equations accumulated in chunks give the same weights as a direct
    # least-squares fit of the same design with the same ridge penalty.
    d = prepare(_cfg(val_fraction=0.2))
    m, rest = bl.moments(d.train)
    assert rest.rows == 0 and m.rows == d.train.n_real
    x, y = _design(d.train)
    np.testing.assert_allclose(bl.ridge_solve(m, alpha), _lstsq_ridge(x, y, alpha), rtol=1e-6, atol=1e-8)


def test_baselines_losses_equal_direct_fit_predictions():
    # Rule: the reported train and held-out losses are the masked MSE of the direct fit's (and
    # of zero's) predictions on the training and held-out steps, at the chosen alpha.
    d = prepare(_cfg(val_fraction=0.2))
    out = bl.baselines(d)
    x, y = _design(d.train)
    w = _lstsq_ridge(x, y, out["ridge"]["alpha"])
    xv, yv = _design(d.val)
    assert out["ridge"]["train"] == pytest.approx(np.mean((x @ w - y) ** 2), rel=1e-6)
    assert out["ridge"]["val"] == pytest.approx(np.mean((xv @ w - yv) ** 2), rel=1e-6)
    assert out["zero"]["train"] == pytest.approx(np.mean(y**2), rel=1e-6)
    assert out["zero"]["train"] == pytest.approx(1.0, rel=1e-5)  # standardised targets
    assert out["zero"]["val"] == pytest.approx(np.mean(yv**2), rel=1e-6)
    assert out["ridge"]["train"] < out["zero"]["train"]


def test_baselines_alpha_chosen_without_held_out_data():
    # Rule: alpha and the training loss depend on the training part only: scrambling every
    # held-out target changes the held-out losses and nothing else.
    d = prepare(_cfg(val_series=1, n_series=4))
    a = bl.baselines(d)
    d.val.targets.copy_(torch.randn_like(d.val.targets) * 5)
    b = bl.baselines(d)
    assert a["ridge"]["alpha"] == b["ridge"]["alpha"]
    assert a["ridge"]["train"] == b["ridge"]["train"] and a["zero"]["train"] == b["zero"]["train"]
    assert a["ridge"]["val"] != b["ridge"]["val"]


def test_baselines_choose_alpha_prefers_penalty_when_it_predicts_better():
    # Rule: on noisy few-step data with many lags, the split of the training steps picks a
    # penalty above zero (the fit part alone would always prefer alpha 0).
    rng = np.random.default_rng(0)
    series = [100 + np.cumsum(rng.normal(0, 1, 60)) for _ in range(2)]
    d = prepare_from(series, _cfg(window=32))
    assert bl.baselines(d)["ridge"]["alpha"] > 0


def test_baselines_reference_without_holdout_and_from_csv(tmp_path):
    # Rule: a user's CSV gets the same split and baselines as synthetic data; without a
    # hold-out the held-out values are None (null in study.yaml).
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({f"s{i}": 50 + np.cumsum(rng.normal(0, 0.3, 250)) for i in range(3)})
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    ref = bl.reference(_cfg(path=str(path), val_fraction=0.2))
    assert ref["data_constants"] == {"source": "file", "path": str(path)}
    assert ref["split"]["train_series"] == 3 and ref["split"]["val_steps"] == 3 * 50
    assert math.isfinite(ref["baselines"]["ridge"]["val"])
    none = bl.reference(_cfg(path=str(path)))
    assert none["baselines"]["zero"]["val"] is None and none["baselines"]["ridge"]["val"] is None
    assert any("no hold-out" in line for line in bl.describe(none))


@pytest.mark.process
def test_baselines_cli_on_user_csv(tmp_path):
    # Rule: `tuner.train` on a user's CSV (data.path) prints the split, the baselines and the
    # three losses per epoch, exactly as on synthetic data.
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({f"s{i}": 50 + np.cumsum(rng.normal(0, 0.3, 150)) for i in range(2)})
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.train",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "run"),
            f"data.path={path}",
            "data.val_fraction=0.2",
            "data.window=8",
            "model.dense_units=4",
            "model.lstm_units=4",
            "train.threads=1",
        ],
        capture_output=True,
        text=True,
        cwd=str(root),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "split: 2 training series, 238 training steps; held out: 60 steps" in out
    assert "baselines" in out and "ridge" in out
    assert out.count("train_loss_running") == 2 and out.count("val_loss") >= 2
