"""Tests of tuner.core.prices and tuner.core.data: generator, files, Q targets, inputs, splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tuner.core import data, prices
from tuner.core.config import ConfigError, DataConfig


def small_cfg(**kw: object) -> DataConfig:
    base: dict[str, object] = dict(n_series=3, length=400, window=8)
    base.update(kw)
    return DataConfig(**base)  # type: ignore[arg-type]


def random_walk(rng: np.random.Generator, n: int) -> np.ndarray:
    return 100.0 + np.cumsum(rng.normal(0.0, 0.5, n))


# ---------------------------------------------------------------- generator


def test_generate_reproducible_per_seed() -> None:
    # The same seed gives the same prices.
    a, b = prices.generate(small_cfg(seed=3)), prices.generate(small_cfg(seed=3))
    np.testing.assert_array_equal(a, b)


def test_generate_differs_across_seeds() -> None:
    # Different seeds give different prices.
    assert not np.array_equal(prices.generate(small_cfg(seed=1)), prices.generate(small_cfg(seed=2)))


def test_generate_shape_and_mean_near_bias() -> None:
    # Prices are (n_series, length) float64 and oscillate around the bias over whole periods.
    p = prices.generate(small_cfg(n_series=4, length=9000))
    assert p.shape == (4, 9000) and p.dtype == np.float64
    assert abs(p.mean() - 100.0) < 0.1


def test_generate_amplitudes_within_unit_interval() -> None:
    # A = |cos theta| and B = |sin theta| lie in [0, 1]; the angle moves by at most walk_step.
    theta, _ = prices.latent(small_cfg(length=2000))
    a, b = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    assert a.min() >= 0 and a.max() <= 1 and b.min() >= 0 and b.max() <= 1
    assert np.abs(np.diff(theta, axis=1)).max() <= 0.01 + 1e-12
    assert np.abs(theta[:, 0]).max() <= math.pi


def test_generate_source_code_matches_literal_formula() -> None:
    # Preset source-code is -A sin(0.0002 t) + B sin(0.0002 t) + 100 + N(0, 0.01), same draws.
    cfg = small_cfg(preset="source-code", length=50, decimals=None, seed=7)
    rng = np.random.default_rng(7)
    theta0 = rng.uniform(-math.pi, math.pi, size=(3, 1))
    walk = rng.uniform(-1.0, 1.0, size=(3, 49))
    z = rng.standard_normal(size=(3, 50))
    expected = np.empty((3, 50))
    for s in range(3):
        theta = theta0[s, 0]
        for t in range(50):
            if t > 0:
                theta += 0.01 * walk[s, t - 1]
            expected[s, t] = (
                -abs(math.cos(theta)) * math.sin(0.0002 * t)
                + abs(math.sin(theta)) * math.sin(0.0002 * t)
                + 100
                + 0.01 * z[s, t]
            )
    np.testing.assert_allclose(prices.generate(cfg), expected, rtol=0, atol=1e-10)
    assert prices.preset_constants(cfg) == (0.0002, 0.0002, 0.01, -1.0)


def test_preset_constants_two_modes_defaults_and_overrides() -> None:
    # two-modes has two distinct frequencies, noise 0.1; config values override the preset.
    w = prices.preset_constants(DataConfig())
    assert w.freq_a != w.freq_b and w.noise_std == 0.1 and w.sign_a == 1.0
    assert 2 * math.pi / w.freq_b < 20000 and 2 * math.pi / w.freq_a < 20000
    o = prices.preset_constants(DataConfig(preset="source-code", freq_a=0.1, freq_b=0.2, noise_std=0))
    assert o == (0.1, 0.2, 0.0, -1.0)


def test_generate_rounds_to_cents() -> None:
    # decimals=2 rounds prices to cents; None keeps full precision.
    p = prices.generate(small_cfg())
    np.testing.assert_array_equal(p, np.round(p, 2))
    raw = prices.generate(small_cfg(decimals=None))
    assert not np.array_equal(raw, np.round(raw, 2))
    np.testing.assert_array_equal(p, np.round(raw, 2))


# ---------------------------------------------------------------- Q targets


@pytest.mark.parametrize("flat", [False, True])
def test_q_targets_satisfy_bellman_without_cost(flat: bool) -> None:
    # Q[t,a] = pos(a)*(p[t+1]-p[t]) + gamma * max Q[t+1], and Q[L-2] = r[L-2].
    rng = np.random.default_rng(0)
    p = random_walk(rng, 30)
    q = data.q_targets([p], 0.9, 0.0, flat)[0]
    pos = data.positions(flat)
    r = np.diff(p)[:, None] * pos[None, :]
    assert q.shape == (29, len(pos))
    np.testing.assert_allclose(q[:-1], r[:-1] + 0.9 * q[1:].max(axis=1, keepdims=True))
    np.testing.assert_allclose(q[-1], r[-1])


def test_q_targets_buy_minus_sell_is_twice_the_change() -> None:
    # Without cost and flat action, Q(buy) - Q(sell) = 2 (p[t+1]-p[t]) whatever gamma is.
    p = random_walk(np.random.default_rng(1), 25)
    q = data.q_targets([p], 0.5)[0]
    np.testing.assert_allclose(q[:, 0] - q[:, 1], 2 * np.diff(p))


@pytest.mark.parametrize("flat", [False, True])
def test_q_targets_satisfy_transition_cost_form(flat: bool) -> None:
    # Q[t,a] = r[t,a] + gamma * max_a' (Q[t+1,a'] - cost*|pos(a')-pos(a)|), checked by a loop.
    p = random_walk(np.random.default_rng(2), 20)
    cost, gamma = 0.3, 0.8
    q = data.q_targets([p], gamma, cost, flat)[0]
    pos = data.positions(flat)
    for t in range(len(p) - 1):
        for a in range(len(pos)):
            cont = (
                0.0
                if t == len(p) - 2
                else max(q[t + 1, b] - cost * abs(pos[b] - pos[a]) for b in range(len(pos)))
            )
            assert q[t, a] == pytest.approx(pos[a] * (p[t + 1] - p[t]) + gamma * cont)


def test_q_targets_shorter_series_padded_with_zeros() -> None:
    # A shorter series gets its own Q on its L-1 steps and 0 on the padded steps.
    rng = np.random.default_rng(3)
    long, short = random_walk(rng, 20), random_walk(rng, 12)
    q = data.q_targets([long, short], 0.9, 0.1, True)
    assert q.shape == (2, 19, 3)
    np.testing.assert_allclose(q[1, :11], data.q_targets([short], 0.9, 0.1, True)[0])
    assert np.all(q[1, 11:] == 0)
    padded, lengths = data.pad_series([long, short])
    np.testing.assert_allclose(data.q_targets(padded, 0.9, 0.1, True, lengths), q)


# ---------------------------------------------------------------- inputs


def lag_example() -> tuple[list[np.ndarray], data.Prepared]:
    rng = np.random.default_rng(4)
    series = [random_walk(rng, 15), random_walk(rng, 11)]
    return series, data.prepare_from(series, small_cfg(window=4))


def test_inputs_are_lagged_differences_newest_first() -> None:
    # inputs[b, t, k] de-standardised = p[t-k] - p[t-k-1], and 0 where t-k <= 0.
    series, prep = lag_example()
    x = prep.train.inputs(0, prep.train.steps) * prep.diff_std + prep.diff_mean
    assert x.shape == (2, 14, 4)
    for b, p in enumerate(series):
        for t in range(len(p) - 1):
            for k in range(4):
                want = p[t - k] - p[t - k - 1] if t - k >= 1 else 0.0
                assert float(x[b, t, k]) == pytest.approx(want, abs=1e-4)


def test_inputs_chunks_concatenate_to_whole() -> None:
    # Consecutive chunks of inputs, and a row subset, equal slices of the whole.
    _, prep = lag_example()
    whole = prep.train.inputs(0, 14)
    parts = [prep.train.inputs(a, b) for a, b in [(0, 3), (3, 10), (10, 14)]]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)
    torch.testing.assert_close(prep.train.inputs(5, 9, rows=torch.tensor([1])), whole[1:, 5:9])
    torch.testing.assert_close(prep.train.select(slice(0, 1)).inputs(2, 6), whole[:1, 2:6])
    with pytest.raises(ValueError):
        prep.train.inputs(3, 15)


def test_series_set_mask_lengths_and_padding() -> None:
    # Shorter series are padded at the end: mask False and targets 0 there.
    _, prep = lag_example()
    s = prep.train
    assert s.steps == 14 and s.lengths.tolist() == [14, 10] and s.n_real == 24
    assert s.diffs.shape == (2, 3 + 14) and s.targets.shape == (2, 14, 2)
    assert s.mask[1, :10].all() and not s.mask[1, 10:].any()
    assert torch.all(s.targets[1, 10:] == 0)
    assert s.diffs.dtype == torch.float32 and s.mask.dtype == torch.bool


# ---------------------------------------------------------------- prepare


def test_prepare_standardisation_uses_training_data_only() -> None:
    # Changing validation-tail prices leaves every statistic and the training set unchanged.
    rng = np.random.default_rng(5)
    series = [random_walk(rng, 41), random_walk(rng, 41)]
    cfg = small_cfg(window=4, val_fraction=0.25)
    changed = [p.copy() for p in series]
    for p in changed:
        p[-5:] *= 1.5
    a, b = data.prepare_from(series, cfg), data.prepare_from(changed, cfg)
    assert (a.diff_mean, a.diff_std, a.target_mean, a.target_std) == (
        b.diff_mean,
        b.diff_std,
        b.target_mean,
        b.target_std,
    )
    torch.testing.assert_close(a.train.targets, b.train.targets)
    torch.testing.assert_close(a.train.diffs, b.train.diffs)


def test_prepare_standardises_training_targets_and_diffs() -> None:
    # Training targets have mean 0, std 1 over real steps; the input pad is a raw zero.
    prep = data.prepare(small_cfg())
    t = prep.train.targets[prep.train.mask]
    assert abs(float(t.mean())) < 1e-4 and abs(float(t.std(unbiased=False)) - 1) < 1e-3
    pad = float(prep.train.diffs[0, 0]) * prep.diff_std + prep.diff_mean
    assert pad == pytest.approx(0.0, abs=1e-6)


def test_prepare_val_fraction_holds_out_tail() -> None:
    # val_fraction: train keeps the head of every series, val the full series masked to the tail.
    prep = data.prepare(small_cfg(val_fraction=0.25))
    assert prep.train.targets.shape == (3, 299, 2) and prep.train.n_real == 3 * 299
    assert prep.val is not None and prep.val.targets.shape == (3, 399, 2)
    assert prep.val_warmup == 299
    assert not prep.val.mask[:, :299].any() and prep.val.mask[:, 299:].all()
    assert prep.val.lengths.tolist() == [399] * 3 and prep.n_actions == 2
    # The val inputs over the training part equal the training inputs.
    torch.testing.assert_close(prep.val.inputs(0, 299), prep.train.inputs(0, 299))


def test_prepare_val_series_holds_out_whole_series() -> None:
    # val_series: the last series is validation from step 0, the rest train in full.
    prep = data.prepare(small_cfg(val_series=1, flat_action=True))
    assert prep.train.targets.shape == (2, 399, 3) and prep.train.mask.all()
    assert prep.val is not None and prep.val.targets.shape == (1, 399, 3)
    assert prep.val.mask.all() and prep.val_warmup == 0 and prep.n_actions == 3


def test_prepare_without_holdout_has_no_val() -> None:
    # No hold-out: val is None and val_warmup 0.
    prep = data.prepare(small_cfg())
    assert prep.val is None and prep.val_warmup == 0


@pytest.mark.parametrize(
    "kw,expected",
    [
        ({}, (3, 3 * 399, 0, 0, 0, False)),
        ({"val_fraction": 0.25}, (3, 3 * 299, 3, 3 * 100, 0, True)),
        ({"val_series": 1}, (2, 2 * 399, 1, 399, 1, False)),
        ({"val_fraction": 0.25, "val_series": 1}, (2, 2 * 299, 3, 2 * 100 + 399, 1, True)),
    ],
)
def test_prepare_split_counts_loss_steps(kw: dict, expected: tuple) -> None:
    # Rule: split() states the series and loss-counted steps of each part, and val_covers_train
    # is set exactly when the first validation rows are the training rows uncut (a tail).
    prep = data.prepare(small_cfg(**kw))
    s = prep.split()
    assert (
        s["train_series"],
        s["train_steps"],
        s["val_series"],
        s["val_steps"],
        s["val_whole_series"],
        prep.val_covers_train,
    ) == expected


def test_data_constants_state_the_preset_periods_and_noise() -> None:
    # Rule: the constants a report prints are the generator's own: two-modes periods 50 and 230
    # steps and noise 0.1, overrides included; a file is named by its path.
    c = prices.data_constants(small_cfg())
    assert (c["preset"], c["period_a"], c["period_b"], c["noise_std"]) == ("two-modes", 50.0, 230.0, 0.1)
    c = prices.data_constants(small_cfg(freq_a=2 * math.pi / 1000, noise_std=0.2))
    assert (c["period_a"], c["period_b"], c["noise_std"]) == (1000.0, 230.0, 0.2)
    assert prices.data_constants(small_cfg(path="prices.csv")) == {"source": "file", "path": "prices.csv"}


def test_prepare_constant_prices_do_not_divide_by_zero() -> None:
    # A zero std (constant prices) becomes 1 instead of producing NaN.
    prep = data.prepare_from([np.full(20, 5.0), np.full(20, 5.0)], small_cfg(window=4))
    assert prep.diff_std == 1.0 and prep.target_std == 1.0
    assert torch.isfinite(prep.train.targets).all() and torch.isfinite(prep.train.diffs).all()


def test_prepare_rejects_holding_out_every_series() -> None:
    # val_series must leave at least one training series of the loaded data.
    with pytest.raises(ConfigError, match="val_series"):
        data.prepare_from([np.full(20, 5.0)], small_cfg(window=4, val_series=1))


# ---------------------------------------------------------------- loading


def test_load_prices_wide_csv_with_mixed_lengths(tmp_path: Path) -> None:
    # Wide CSV: each numeric column is a series; non-numeric columns are skipped; trailing
    # empty cells end a shorter series.
    f = tmp_path / "wide.csv"
    f.write_text("date,a,b\n2020-01-01,1.0,2.0\n2020-01-02,1.5,2.5\n2020-01-03,1.2,\n")
    a, b = prices.load_prices(f)
    np.testing.assert_array_equal(a, [1.0, 1.5, 1.2])
    np.testing.assert_array_equal(b, [2.0, 2.5])


def test_load_prices_long_csv_in_file_order(tmp_path: Path) -> None:
    # Long CSV: grouped by the series column in first-appearance order, values in file order.
    f = tmp_path / "long.csv"
    f.write_text("sym,px\nz,3\na,1\nz,4\na,2\nz,5\n")
    z, a = prices.load_prices(f, "sym", "px")
    np.testing.assert_array_equal(z, [3, 4, 5])
    np.testing.assert_array_equal(a, [1, 2])


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_load_prices_parquet(tmp_path: Path, suffix: str) -> None:
    # Parquet files load like CSV (wide format here).
    f = tmp_path / f"p{suffix}"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, np.nan]}).to_parquet(f)
    x, y = prices.load_prices(f)
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_array_equal(y, [4, 5])


def test_prices_from_path_checks_window_length(tmp_path: Path) -> None:
    # prices(cfg) loads cfg.path and requires window + 2 prices per series.
    f = tmp_path / "w.csv"
    f.write_text("a\n" + "\n".join(str(100 + i) for i in range(6)) + "\n")
    assert len(prices.prices(DataConfig(path=str(f), window=4))[0]) == 6
    with pytest.raises(ConfigError, match="at least 7"):
        prices.prices(DataConfig(path=str(f), window=5))


ERROR_CASES = {
    "missing": ("absent.csv", None, None, "file not found"),
    "unparseable": ("bad.parquet", "not a parquet file", None, "cannot read"),
    "extension": ("prices.txt", "a\n1\n", None, "unknown file extension"),
    "no-numeric": ("s.csv", "a,b\nx,y\nz,w\n", None, "no numeric column"),
    "missing-columns": ("l.csv", "sym,px\na,1\n", ("sym", "price"), "missing column"),
    "nan-inside": ("n.csv", "a\n1\n\n2\n3\n", None, "'a' has a missing value"),
    "inf": ("i.csv", "a\n1\ninf\n2\n", None, "'a' has an infinite value"),
    "non-positive": ("z.csv", "a,b\n1,2\n1,0\n1,3\n", None, "'b' has a non-positive price"),
    "too-short": ("t.csv", "a,b\n1,2\n1,\n1,\n", None, "'b' has 1 prices"),
    "typo": ("y.csv", "a,b\n1,2\n1,2x\n1,3\n", None, "column 'b' has a non-numeric value"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_load_prices_errors_name_the_file(tmp_path: Path, case: str) -> None:
    # Every bad file raises one ConfigError line naming the file and the problem.
    name, text, columns, problem = ERROR_CASES[case]
    f = tmp_path / name
    if text is not None:
        f.write_text(text)
    cols = columns or (None, None)
    with pytest.raises(ConfigError) as info:
        prices.load_prices(f, cols[0], cols[1], min_length=3)
    message = str(info.value)
    assert str(f) in message and problem in message and "\n" not in message
