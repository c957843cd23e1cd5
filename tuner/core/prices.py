"""Price series: the synthetic presets or a CSV/Parquet file, checked before any tensor is built.

``prices`` gives the configured series (generated or loaded, every one finite, positive and long
enough) and ``check_split`` the checks of the train/validation split; `tuner.core.data` turns them
into tensors. Apart from them because reading and checking prices is its own job (numpy and
pandas, no torch): the preflight runs it on a search's data before Ray starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tuner.core.config import MAX_PRICE, ConfigError, DataConfig
from tuner.core.yamlio import short

# ---------------------------------------------------------------- synthetic generator

SOURCE_CODE_FREQ = 0.0002
"""The article's code: one angular frequency (rad/step) for both waves."""
SOURCE_CODE_NOISE_STD = 0.01
"""The article's code: noise standard deviation 0.01."""
TWO_MODES_FREQ_A = 2 * math.pi / 50
"""`two-modes`: the first wave has a period of 50 steps."""
TWO_MODES_FREQ_B = 2 * math.pi / 230
"""`two-modes`: the second wave has a period of 230 steps.

Why such short periods (the article's code uses one period of ~31,000 steps): many full periods
fit in every series (80 and 17 in the reduced scale's 4,000 steps, 400 and 87 in 20,000), so a
held-out tail of 20% still sees both waves over several periods and in every mix the slow walk
of the angle gives them, and a model can learn the waves in tens of epochs, which keeps a study
at the reduced scale to minutes. It is a choice for speed and for a meaningful hold-out, not a
necessity: with periods of thousands of steps the settings separate as well (an independent
re-run: SGD 1.0 vs Adam 0.43 training loss). A 128-step window covers 2.6 periods of the first
wave and 0.56 of the second, so the second must be tracked by the LSTM's memory."""
TWO_MODES_NOISE_STD = 0.1
"""`two-modes`: noise standard deviation 0.1, the article's text ("variance 0.01")."""


class Waves(NamedTuple):
    """The constants of the price formula ``sign_a*A*sin(freq_a t) + B*sin(freq_b t) + noise``."""

    freq_a: float
    freq_b: float
    noise_std: float
    sign_a: float


def preset_constants(cfg: DataConfig) -> Waves:
    """The preset's frequencies, noise std and sign of the first wave, with `cfg` overrides.

    `source-code` keeps the article's minus sign on the first wave; `two-modes` adds both."""
    if cfg.preset == "source-code":
        base = Waves(SOURCE_CODE_FREQ, SOURCE_CODE_FREQ, SOURCE_CODE_NOISE_STD, -1.0)
    else:
        base = Waves(TWO_MODES_FREQ_A, TWO_MODES_FREQ_B, TWO_MODES_NOISE_STD, 1.0)
    return Waves(
        freq_a=base.freq_a if cfg.freq_a is None else float(cfg.freq_a),
        freq_b=base.freq_b if cfg.freq_b is None else float(cfg.freq_b),
        noise_std=base.noise_std if cfg.noise_std is None else float(cfg.noise_std),
        sign_a=base.sign_a,
    )


def latent(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The hidden angle ``theta`` and the unit-normal noise draws, both (n_series, length).

    Draw order from ``np.random.default_rng(cfg.seed)``, fixed so results are reproducible:
    ``theta0 = uniform(-pi, pi, (S, 1))``, then ``uniform(-1, 1, (S, length-1))`` walk steps,
    then ``standard_normal((S, length))`` noise."""
    rng = np.random.default_rng(cfg.seed)
    s, n = cfg.n_series, cfg.length
    theta0 = rng.uniform(-math.pi, math.pi, size=(s, 1))
    steps = cfg.walk_step * rng.uniform(-1.0, 1.0, size=(s, n - 1))
    theta = theta0 + np.concatenate([np.zeros((s, 1)), np.cumsum(steps, axis=1)], axis=1)
    noise = rng.standard_normal(size=(s, n))
    return theta, noise


def generate(cfg: DataConfig) -> np.ndarray:
    """Synthetic prices (n_series, length), float64, seeded by ``cfg.seed``.

    ``price[t] = sign_a*|cos theta[t]|*sin(freq_a t) + |sin theta[t]|*sin(freq_b t) + bias
    + noise_std*z[t]``, rounded to ``cfg.decimals`` when set (see `latent` and
    `preset_constants`)."""
    waves = preset_constants(cfg)
    theta, z = latent(cfg)
    t = np.arange(cfg.length, dtype=np.float64)
    price = (
        waves.sign_a * np.abs(np.cos(theta)) * np.sin(waves.freq_a * t)
        + np.abs(np.sin(theta)) * np.sin(waves.freq_b * t)
        + cfg.bias
        + waves.noise_std * z
    )
    if cfg.decimals is not None:
        price = np.round(price, cfg.decimals)
    return price


def data_constants(cfg: DataConfig) -> dict[str, Any]:
    """What the data is, in plain values for study.yaml and the report.

    Synthetic: preset, both wave periods (steps) and angular frequencies, noise std, the
    angle's walk step, series count and length, seed. A file: its path."""
    if cfg.path is not None:
        return {"source": "file", "path": cfg.path}
    waves = preset_constants(cfg)

    def period(freq: float) -> float | None:
        return round(2 * math.pi / freq, 6) if freq > 0 else None

    return {
        "source": "synthetic",
        "preset": cfg.preset,
        "period_a": period(waves.freq_a),
        "period_b": period(waves.freq_b),
        "freq_a": waves.freq_a,
        "freq_b": waves.freq_b,
        "noise_std": waves.noise_std,
        "walk_step": cfg.walk_step,
        "n_series": cfg.n_series,
        "length": cfg.length,
        "seed": cfg.seed,
    }


# ---------------------------------------------------------------- loading real prices

_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _read_table(path: Path) -> pd.DataFrame:
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"{path}: unknown file extension {path.suffix!r}; allowed: {', '.join(_EXTENSIONS)}"
        )
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; allowed: a CSV or Parquet file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        # A blank line is a missing price, not nothing: keep it so a gap is reported.
        if kind == "csv":
            return pd.read_csv(path, skip_blank_lines=False)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"{path}: cannot read as {kind} ({exc.__class__.__name__}{': ' + detail if detail else ''})"
        ) from None


def _is_numeric(column: pd.Series | np.dtype) -> bool:
    """A numeric, non-boolean column (or dtype)."""
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _wide(frame: pd.DataFrame, path: Path) -> dict[str, np.ndarray]:
    # Decided per dtype and converted as one block: per-column pandas access costs ~75 us,
    # 15 s for a 200,000-column file (and a list membership test per column made it quadratic).
    dtypes = list(frame.dtypes)
    numeric = [i for i, dt in enumerate(dtypes) if _is_numeric(dt)]
    texts = [
        i
        for i, dt in enumerate(dtypes)
        if not _is_numeric(dt) and (pd.api.types.is_object_dtype(dt) or pd.api.types.is_string_dtype(dt))
    ]
    for i in texts:
        c, col = frame.columns[i], frame.iloc[:, i]
        # A price column with one typo would otherwise be skipped silently as a text column.
        parsed = pd.to_numeric(col, errors="coerce")
        bad = parsed.isna() & col.notna()
        if parsed.notna().sum() > bad.sum():
            if not bad.any():  # e.g. a Parquet string column of numbers
                raise ConfigError(
                    f"{path}: column {short(str(c), 60)} holds numbers stored as "
                    "text; allowed: a numeric column"
                )
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(
                f"{path}: column {short(str(c), 60)} has a non-numeric value "
                f"{short(str(col.iloc[row]), 40)} at row {row}"
            )
    if not numeric:
        raise ConfigError(
            f"{path}: no numeric column; expected one column of prices per series "
            "(or set data.series_column and data.value_column for long format)"
        )
    block = frame.iloc[:, numeric].to_numpy(dtype=np.float64)
    present = ~np.isnan(block)
    # Trailing NaN pads a shorter series; anything else is a gap (checked later).
    ends = np.where(present.any(axis=0), len(block) - np.argmax(present[::-1], axis=0), 0)
    names = [str(frame.columns[i]) for i in numeric]
    return {name: block[:end, j] for j, (name, end) in enumerate(zip(names, ends))}


def _long(frame: pd.DataFrame, path: Path, series_column: str, value_column: str) -> dict[str, np.ndarray]:
    missing = [c for c in (series_column, value_column) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
            f"columns: {', '.join(map(str, frame.columns))}"
        )
    values = frame[value_column]
    if not _is_numeric(values):
        raise ConfigError(f"{path}: column {value_column!r} is not numeric")
    if frame[series_column].isna().any():
        raise ConfigError(f"{path}: column {series_column!r} has missing series names")
    groups = frame.groupby(series_column, sort=False)[value_column]
    return {str(name): group.to_numpy(dtype=np.float64) for name, group in groups}


def check_series(series: dict[str, np.ndarray], min_length: int, source: str) -> None:
    """Raise ConfigError (one line naming `source` and the series) unless every series is finite,
    strictly positive and at least `min_length` prices long."""
    for name, p in series.items():
        where = f"{source}: series {name!r}"
        if np.isnan(p).any():
            row = int(np.argmax(np.isnan(p)))
            raise ConfigError(f"{where} has a missing value (NaN) at row {row}")
        if np.isinf(p).any():
            raise ConfigError(f"{where} has an infinite value at row {int(np.argmax(np.isinf(p)))}")
        if (np.abs(p) > MAX_PRICE).any():
            row = int(np.argmax(np.abs(p) > MAX_PRICE))
            raise ConfigError(
                f"{where} has a price {float(p[row]):g} at row {row}; prices must be <= {MAX_PRICE:g}"
            )
        if (p <= 0).any():
            raise ConfigError(
                f"{where} has a non-positive price {float(p[p <= 0][0])!r} "
                f"at row {int(np.argmax(p <= 0))}; prices must be > 0"
            )
        if p.size < min_length:
            raise ConfigError(
                f"{where} has {p.size} prices; at least {min_length} are needed (data.window + 2)"
            )


def load_prices(
    path: str | Path, series_column: str | None = None, value_column: str | None = None, min_length: int = 2
) -> list[np.ndarray]:
    """Price series from a CSV or Parquet file (chosen by extension: .csv, .parquet, .pq).

    Wide format (no column names given): every numeric column is one series; trailing empty
    cells end a shorter series. Long format (both names given): rows are grouped by
    `series_column` in order of first appearance, prices taken from `value_column` in file order.
    Every problem raises ConfigError with one line naming the file."""
    p = Path(path)
    if (series_column is None) != (value_column is None):
        raise ConfigError(f"{p}: set both series_column and value_column (long format) or neither")
    frame = _read_table(p)
    if series_column is not None and value_column is not None:
        series = _long(frame, p, series_column, value_column)
    else:
        series = _wide(frame, p)
    if not series:
        raise ConfigError(f"{p}: no rows")
    check_series(series, min_length, str(p))
    return list(series.values())


def prices(cfg: DataConfig) -> list[np.ndarray]:
    """The configured price series: loaded from ``cfg.path`` or generated, at least
    ``cfg.window + 2`` prices each."""
    if cfg.path is not None:
        return load_prices(cfg.path, cfg.series_column, cfg.value_column, min_length=cfg.window + 2)
    return list(generate(cfg))


# ---------------------------------------------------------------- the split


def check_split(series: Sequence[np.ndarray], cfg: DataConfig) -> list[int]:
    """Every check `prepare_from` makes before building tensors (prices finite, positive and
    long enough; a split that leaves training data), cheap enough to run before a search
    starts; returns the training steps of each kept series. Raises ConfigError (one line)."""
    check_series({str(i): p for i, p in enumerate(series)}, cfg.window + 2, "data")
    n_train_series = len(series) - cfg.val_series
    if n_train_series < 1:
        raise ConfigError(
            f"data.val_series: got {cfg.val_series}; allowed: fewer than the {len(series)} series in the data"
        )
    train_steps: list[int] = []
    for i, p in enumerate(series[:n_train_series]):
        steps = len(p) - 1
        n_val = max(1, round(cfg.val_fraction * steps)) if cfg.val_fraction > 0 else 0
        if steps - n_val < 1:
            raise ConfigError(
                f"data.val_fraction: got {cfg.val_fraction}; series {i} has "
                f"{steps} steps and would keep no training step"
            )
        train_steps.append(steps - n_val)
    return train_steps
