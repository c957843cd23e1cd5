"""Typed, frozen configuration for one training run, loaded and validated once at the edge.

A run is described by three sections, ``data``, ``model`` and ``train`` (with ``train.clip`` and
``train.schedule`` nested), the same names the YAML files, the ``key=value`` overrides and the
search spaces use. Every value is checked when the dataclass is built, so a bad value fails here
with one line naming the key, the value and what is allowed, never deep inside a training loop.

Over 500 lines on purpose: every field's documentation lives under the field (what `python -m
tuner.keys` prints), and the loader that validates them sits beside them, one definition each.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Mapping

from tuner.core import yamlio
from tuner.core.yamlio import short


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message is one line meant for the user."""


SEED_LIMIT = 2**32 - 1000 * 1000
"""Seeds (data, train, search) must fit numpy's, torch's and Optuna's 32-bit range, with room for
the offsets `--extend` adds to the search seed."""
MAX_PRICE = 1e15
"""Largest price (and |data.bias|) accepted: beyond it cents are lost in float64 and differences
and Q values can overflow into a loss that reads as "diverged"."""


def bounded(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A dataclass field whose loaded value must lie in [low, high] (None: unbounded).

    The loader (`_build`) checks every such field generically, so a key added later with a
    range is covered by the same code and the same key-walking test. Semantic rules that
    depend on other keys stay in `__post_init__`."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class DataConfig:
    """Where the price series come from and how inputs and targets are built from them."""

    preset: Literal["two-modes", "source-code"] = "two-modes"
    """Synthetic generator: `source-code` is the article's literal formula (one frequency for
    both waves, noise std 0.01); `two-modes` uses two distinct frequencies and noise std 0.1."""
    n_series: int = bounded(15, 1, 10**6)
    """Number of synthetic series (ignored when `path` is set)."""
    length: int = bounded(20000, 3, 10**10)
    """Time steps per synthetic series (ignored when `path` is set)."""
    window: int = bounded(128, 1, 10**5)
    """Input features per step: the last `window` one-step price differences, newest first."""
    gamma: float = 0.9
    """Discount of the Bellman Q targets."""
    cost: float = 0.0
    """Transaction cost per unit of position change, subtracted from the reward."""
    flat_action: bool = False
    """Add a third action, flat (position 0), to buy (+1) and sell (-1)."""
    seed: int = bounded(0, 0, SEED_LIMIT)
    """Seed of the synthetic generator."""
    path: str | None = None
    """CSV or Parquet file of real prices; replaces the synthetic generator when set."""
    series_column: str | None = None
    """Long-format files: the column naming the series (then `value_column` holds prices)."""
    value_column: str | None = None
    """Long-format files: the column of prices."""
    freq_a: float | None = None
    """Angular frequency (rad/step) of the first wave; None takes the preset's."""
    freq_b: float | None = None
    """Angular frequency (rad/step) of the second wave; None takes the preset's."""
    noise_std: float | None = None
    """Standard deviation of the Gaussian price noise; None takes the preset's."""
    walk_step: float = bounded(0.01, 0, 1e6)
    """The angle's random walk: theta[t+1] = theta[t] + walk_step * U(-1, 1)."""
    bias: float = bounded(100.0, -MAX_PRICE, MAX_PRICE)
    """Added to every price so prices stay positive."""
    decimals: int | None = bounded(2, 0, 15)
    """Round prices to this many decimals (cents); None keeps full precision."""
    val_fraction: float = 0.0
    """Hold out the last fraction of every series as validation data (0 = no hold-out)."""
    val_series: int = 0
    """Hold out this many whole series (the last ones) as validation data."""

    def __post_init__(self) -> None:
        _check(self.n_series >= 1, "data.n_series", self.n_series, "an integer >= 1")
        _check(self.window >= 1, "data.window", self.window, "an integer >= 1")
        _check(
            self.length >= self.window + 2,
            "data.length",
            self.length,
            f"an integer >= window + 2 = {self.window + 2}",
        )
        _check(0.0 <= self.gamma < 1.0, "data.gamma", self.gamma, "a number in [0, 1)")
        _check(self.cost >= 0.0, "data.cost", self.cost, "a number >= 0")
        _check(0.0 <= self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "a number in [0, 1)")
        _check(self.val_series >= 0, "data.val_series", self.val_series, "an integer >= 0")
        if self.path is None:
            _check(
                self.val_series < self.n_series,
                "data.val_series",
                self.val_series,
                f"fewer than data.n_series = {self.n_series}",
            )
        _check(
            self.noise_std is None or self.noise_std >= 0, "data.noise_std", self.noise_std, "a number >= 0"
        )
        _check(self.walk_step >= 0, "data.walk_step", self.walk_step, "a number >= 0")
        _check(
            self.decimals is None or self.decimals >= 0,
            "data.decimals",
            self.decimals,
            "an integer >= 0 or null",
        )
        _check(
            (self.series_column is None) == (self.value_column is None),
            "data.series_column",
            self.series_column,
            "set together with data.value_column (long format) or neither",
        )

    @property
    def n_actions(self) -> int:
        return 3 if self.flat_action else 2


@dataclass(frozen=True)
class ModelConfig:
    """Two Dense layers, Gaussian noise after each, two LSTM layers, a linear Q head."""

    dense_units: int = bounded(64, 1, 10**6)
    """Units of each Dense layer."""
    lstm_units: int = bounded(64, 1, 10**6)
    """Units of each LSTM layer."""
    noise_std: float = 0.1
    """Std of the Gaussian-noise layers (active only in training)."""
    activation: Literal["relu", "tanh", "elu", "gelu", "linear"] = "relu"
    """Activation of the Dense layers."""
    lstm_segment: int = bounded(4096, 0, 10**10)
    """In training, chunks longer than this many steps run the LSTM in segments whose
    activations are recomputed in backward (gradient checkpointing): the same gradients, peak
    memory bounded (15 x 20,000 steps at N=1: 2.6 GB -> about 1.3 GB) for ~25% more time at
    such lengths. 0 turns it off."""

    def __post_init__(self) -> None:
        _check(self.lstm_segment >= 0, "model.lstm_segment", self.lstm_segment, "an integer >= 0 (0 = off)")
        _check(self.dense_units >= 1, "model.dense_units", self.dense_units, "an integer >= 1")
        _check(self.lstm_units >= 1, "model.lstm_units", self.lstm_units, "an integer >= 1")
        _check(self.noise_std >= 0, "model.noise_std", self.noise_std, "a number >= 0")


@dataclass(frozen=True)
class ClipConfig:
    """Gradient clipping, applied to the gradients of each optimizer step."""

    mode: Literal["none", "norm", "value", "per-tensor-norm", "adaptive", "percentile"] = "none"
    """`norm`: global L2 norm (the 2019 Keras clipnorm); `value`: element-wise; `per-tensor-norm`:
    each tensor's norm (today's Keras clipnorm); `adaptive`: global norm at mean + k std of the
    recent norms (k = threshold); `percentile`: global norm at the p-th percentile of the recent
    norms (AutoClip; p = threshold)."""
    threshold: float = 1.0
    """The bound for norm/value/per-tensor-norm, k for adaptive, the percentile for percentile."""
    history: int = bounded(1000, 2, 10**7)
    """How many recent pre-clip gradient norms the adaptive modes remember."""
    warmup: int = bounded(10, 2, 10**9)
    """The adaptive modes clip only once they have seen this many steps."""

    def __post_init__(self) -> None:
        if self.mode == "percentile":
            _check(
                0 < self.threshold <= 100,
                "train.clip.threshold",
                self.threshold,
                "a percentile in (0, 100] for mode percentile",
            )
        elif self.mode == "adaptive":
            _check(
                self.threshold >= 0,
                "train.clip.threshold",
                self.threshold,
                "a number >= 0 (k standard deviations) for mode adaptive",
            )
        else:
            _check(self.threshold > 0, "train.clip.threshold", self.threshold, "a number > 0")
        _check(self.history >= 2, "train.clip.history", self.history, "an integer >= 2")
        _check(self.warmup >= 2, "train.clip.warmup", self.warmup, "an integer >= 2")


@dataclass(frozen=True)
class ScheduleConfig:
    """Chunk counts N per epoch (truncated BPTT), advanced when the loss plateaus."""

    chunks: tuple[int, ...] = bounded((1,), 1, 10**10)
    """Chunk counts in order, e.g. [100, 50, 10, 2, 1]; one number means a fixed N."""
    patience: int = bounded(20, 1, 10**9)
    """Move to the next stage after this many epochs without improvement."""
    min_delta: float = 0.0
    """An epoch improves when its loss is below the best by more than this."""
    min_stage: int = bounded(0, 0, 10**6)
    """The schedule never sits below this stage (clamped to the last): PBT mutates it to move a
    trial to longer chunks mid-run; a restored run jumps forward to it."""

    def __post_init__(self) -> None:
        _check(
            len(self.chunks) >= 1,
            "train.schedule.chunks",
            list(self.chunks),
            "a non-empty list of integers >= 1",
        )
        _check(
            all(n >= 1 for n in self.chunks), "train.schedule.chunks", list(self.chunks), "chunk counts >= 1"
        )
        _check(self.patience >= 1, "train.schedule.patience", self.patience, "an integer >= 1")
        _check(self.min_delta >= 0, "train.schedule.min_delta", self.min_delta, "a number >= 0")
        _check(self.min_stage >= 0, "train.schedule.min_stage", self.min_stage, "an integer >= 0")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop a run whose held-out loss has stopped improving, and keep its best weights.

    Like Keras' ``EarlyStopping(monitor="val_loss", restore_best_weights=True)``: after
    `patience` epochs in a row without a held-out loss below the best by more than `min_delta`,
    the run ends with status ``early_stopped`` and the model's weights are those of its best
    epoch. Needs a hold-out (``data.val_fraction`` or ``data.val_series``)."""

    patience: int | None = None
    """Epochs without improvement before stopping; None (the default) never stops early."""
    min_delta: float = 0.0
    """An epoch improves when its held-out loss is below the best by more than this."""

    def __post_init__(self) -> None:
        _check(
            self.patience is None or self.patience >= 1,
            "train.early_stopping.patience",
            self.patience,
            "an integer >= 1 or null (off)",
        )
        _check(self.min_delta >= 0, "train.early_stopping.min_delta", self.min_delta, "a number >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """The optimizer, clipping, schedule and budget of one run."""

    optimizer: Literal["sgd", "rmsprop", "adam", "adamw", "adagrad", "adadelta"] = "sgd"
    """The optimizer."""
    lr: float = 0.01
    """Learning rate."""
    momentum: float = 0.0
    """Momentum of sgd and rmsprop (ignored by the others)."""
    nesterov: bool = False
    """Nesterov momentum for sgd."""
    weight_decay: float = 0.0
    """L2 penalty (decoupled for adamw)."""
    beta1: float = 0.9
    """Adam/AdamW first-moment decay."""
    beta2: float = 0.999
    """Adam/AdamW second-moment decay."""
    eps: float | None = None
    """The optimizer's epsilon; None takes torch's default for that optimizer."""
    alpha: float = 0.99
    """RMSprop's squared-gradient decay."""
    rho: float = 0.9
    """AdaDelta's decay."""
    clip: ClipConfig = field(default_factory=ClipConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    max_epochs: int = bounded(100, 1, 10**9)
    """Epochs to train (one epoch = one pass over the whole length of every series)."""
    eval_every: int = bounded(1, 1, 10**6)
    """Run the end-of-epoch evaluation (train_loss, val_loss, the best model, early stopping)
    every this many epochs, and always at the first and the last; in between, both losses
    repeat the last evaluated values (`eval_time_s` 0). 1 = every epoch. The pass costs about
    20-26% of an epoch at 8 x 4,000 steps, but ~43% at the article's scale with N=100 chunks
    (a forward pass over 300,000 steps against a 1.4 s epoch), where 2 or 3 pays it back.
    Early stopping's patience counts evaluated epochs."""
    batch_series: int | None = bounded(None, 1, 10**6)
    """Series per batch; None puts all series in one batch, as the article did."""
    threads: int | None = bounded(None, 1, 4096)
    """Torch CPU threads; None leaves torch's default."""
    seed: int = bounded(0, 0, SEED_LIMIT)
    """Seed of weights, noise and batching."""
    device: Literal["auto", "cpu", "cuda"] | None = None
    """Where to train. null (default): follow the resources; in a search, CUDA when Ray gave the
    trial a GPU (an error if torch sees no CUDA there, never a silent CPU run) and the CPU
    otherwise; in a single run (`python -m tuner.train`), CUDA when available. `auto`: CUDA when
    available, else the CPU, with a warning when a GPU was reserved (the opt-in fallback).
    `cpu`: always the CPU. `cuda`: CUDA or an error."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "train.lr", self.lr, "a number > 0")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(0 <= self.beta1 < 1, "train.beta1", self.beta1, "a number in [0, 1)")
        _check(0 <= self.beta2 < 1, "train.beta2", self.beta2, "a number in [0, 1)")
        _check(self.eps is None or self.eps > 0, "train.eps", self.eps, "a number > 0 or null")
        _check(0 <= self.alpha < 1, "train.alpha", self.alpha, "a number in [0, 1)")
        _check(0 <= self.rho < 1, "train.rho", self.rho, "a number in [0, 1)")
        _check(self.max_epochs >= 1, "train.max_epochs", self.max_epochs, "an integer >= 1")
        _check(
            self.batch_series is None or self.batch_series >= 1,
            "train.batch_series",
            self.batch_series,
            "an integer >= 1 or null",
        )
        _check(
            self.threads is None or self.threads >= 1,
            "train.threads",
            self.threads,
            "an integer >= 1 or null",
        )


@dataclass(frozen=True)
class Config:
    """One training run: data, model and training settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.path is None:
            longest = max(self.train.schedule.chunks)
            _check(
                longest <= self.data.length,
                "train.schedule.chunks",
                list(self.train.schedule.chunks),
                f"chunk counts <= data.length = {self.data.length}",
            )
        held_out = self.data.val_fraction > 0 or self.data.val_series > 0
        _check(
            self.train.early_stopping.patience is None or held_out,
            "train.early_stopping.patience",
            self.train.early_stopping.patience,
            "null unless there is a hold-out (data.val_fraction > 0 or data.val_series > 0)",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), the inverse of `from_dict`, YAML-safe."""
        return _plain(dataclasses.asdict(self))


SMOKE_OVERRIDES = (
    "data.n_series=4",
    "data.length=300",
    "data.window=16",
    "data.path=null",
    "model.dense_units=8",
    "model.lstm_units=8",
    "train.max_epochs=3",
)
"""`--smoke`/`--smoke-test` of every command: tiny data, model and budget (seconds on a CPU)."""
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
SPACE_SECTIONS = ("name", "space", "search", "resources")
STUDY_RECORD = ("command", "versions", "data_constants", "split", "baselines", "baselines_error")
"""Keys a study's study.yaml adds beside its space file's sections (what was run, and the data's
split and baselines): every loader skips them, so a study.yaml is itself a space file and a run
config."""
"""Sections a search-space file adds; a run config loaded from such a file ignores them."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: got {short(value)}; allowed: {allowed}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- building from plain data


def leaf_keys(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of a config class and its annotated type, e.g. 'train.clip.mode'."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaf_keys(tp, key + "."))
        else:
            out[key] = tp
    return out


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest valid name, or '' when none is close."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/override value to the annotated type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}: got {short(value)}; allowed: one of "
                f"{', '.join(map(str, args))}" + (suggest(str(value), [str(a) for a in args]))
            )
        return value
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(coerce(key, v, args[0]) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: got {short(value)}; allowed: true or false")
    if tp is int:
        value = yamlio.number(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or value != int(value)
        ):
            raise ConfigError(f"{key}: got {short(value)}; allowed: an integer")
        return int(value)
    if tp is float:
        value = yamlio.number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {short(value)}; allowed: a number")
        try:
            number = float(value)
        except OverflowError:  # a YAML integer too big for a float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: got {short(value)}; allowed: a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {short(value)}; allowed: a string")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')}: got {short(raw)}; allowed: a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in names:
            raise ConfigError(
                f"{prefix}{name}: unknown key{suggest(str(name), names)}; allowed: {', '.join(names)}"
            )
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, tp)
            check_range(f"{prefix}{name}", kwargs[name], fields[name].metadata.get("range"))
    return cls(**kwargs)


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Any frozen config dataclass from plain data: keys known (nearest name suggested), values
    coerced to their annotations, nested dataclasses built in turn, `__post_init__` checks run.
    `prefix` ('search.') names the keys in messages. The search service builds its own sections
    (search, scheduler, resources) with it, so there is one validator."""
    return _build(cls, raw, prefix)


check = _check
"""check(ok, key, value, allowed): raise the one-line ConfigError unless ok."""


def check_range(key: str, value: Any, bounds: tuple[float | None, float | None] | None) -> None:
    """ConfigError unless every number in `value` (a number, None or a tuple) is in `bounds`."""
    if bounds is None or value is None:
        return
    low, high = bounds
    for v in value if isinstance(value, tuple) else (value,):
        if (low is not None and v < low) or (high is not None and v > high):
            lo = "" if low is None else f">= {_num(low)}"
            hi = "" if high is None else f"<= {_num(high)}"
            raise ConfigError(
                f"{key}: got {short(value)}; allowed: a value {' and '.join(x for x in (lo, hi) if x)}"
            )


def from_dict(raw: Mapping[str, Any] | None) -> Config:
    """Nested plain dict (sections data/model/train) -> validated Config."""
    raw = dict(raw or {})
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{k}: unknown section{suggest(str(k), list(SECTIONS))}; allowed: {', '.join(SECTIONS)}"
        )
    parts = {name: _build(cls, raw.get(name), name + ".") for name, cls in SECTIONS.items()}
    return Config(**parts)


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """tree['a']['b']['c'] = value for key 'a.b.c', creating the mappings on the way."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.1' -> ('train.lr', 0.1); the value is parsed as YAML (never evaluated)."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)}: allowed: key=value, e.g. train.lr=0.01")
    key, _, value = text.partition("=")
    key = key.strip()
    valid = list(leaf_keys())
    if key not in valid:
        raise ConfigError(f"override {key}: unknown key{suggest(key, valid)}")
    try:
        parsed = yamlio.load_text(value) if value.strip() else None
    except yamlio.YamlError:
        parsed = value
    return key, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each 'key=value' override applied."""
    out = _plain(dict(raw))
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(out, key, value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping (empty = {}), read by `yamlio`; errors name the file."""
    p = Path(path)
    try:
        raw = yamlio.read_mapping(p)
    except yamlio.YamlError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: must hold a mapping with sections data, model, train; got {type(raw).__name__}"
        )
    return raw


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a run config file (sections data/model/train), apply overrides, validate.

    Errors are ConfigError with one line prefixed by the file name."""
    raw = read_yaml(path) if path is not None else {}
    # A search-space file is also a valid run config: its search sections are ignored here.
    raw = {k: v for k, v in raw.items() if k not in SPACE_SECTIONS + STUDY_RECORD}
    try:
        return from_dict(apply_overrides(raw, overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
