"""What a validated space file is: the `Param`, `Case` and `SpaceFile` dataclasses, and the
value helpers every other module of the package shares.

Each searched key holds an Optuna distribution (`FloatDistribution`, `IntDistribution`,
`CategoricalDistribution`): Optuna checks their bounds when they are built, define-by-run
suggests from them, and the Tune side (grids, PBT) reads its bounds from them too, so there is
one description of a parameter, not one per sampler.

Optuna categoricals hold only None/bool/int/float/str, so a chunk schedule ``[100, 50, 1]``
travels as the string ``"100,50,1"`` (also through Tune, so both give the same trial configs
and table columns); `decode_value` turns it back.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)

from tuner.core import config as cfg
from tuner.core.config import Config, ConfigError
from tuner.core.yamlio import short
from tuner.space.sections import Resources, SearchSpec

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "grid")
"""Distribution names a `space:` entry may use (exactly one per entry)."""
CASE_KEY = "case"
"""The special space key: a grid (or choice) of named settings merged into the config."""
CHUNKS_KEY = "train.schedule.chunks"
PBT_KEYS = ("train.lr", "train.clip.threshold")
"""The keys PBT mutates (see `pbt_mutations`)."""

LEAVES: dict[str, Any] = cfg.leaf_keys()
"""Every dotted config key and its annotated type."""


@dataclass(frozen=True)
class Param:
    """One searched key: its Optuna distribution, whether Tune expands it as a grid, its `if:`."""

    key: str
    """Dotted config key (e.g. 'train.lr'), or 'case'."""
    distribution: BaseDistribution
    """Float (uniform, loguniform), Int (int, inclusive bounds) or Categorical (choice, grid;
    chunk schedules encoded as '100,50,1' strings, cases by name)."""
    grid: bool = False
    """`grid:`: every value in turn, by Tune's variant generator (never sampled)."""
    condition: tuple[str, tuple] | None = None
    """(other key, allowed values): the key is sampled only when the other key's value is one
    of these; None means always."""

    @property
    def kind(self) -> str:
        """The distribution's name in the space file (one of DISTRIBUTIONS)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return "grid" if self.grid else "choice"
        if isinstance(d, IntDistribution):
            return "int"
        return "loguniform" if d.log else "uniform"

    @property
    def values(self) -> tuple | None:
        """choice/grid: the listed values, decoded (chunk schedules as tuples); else None."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return tuple(decode_value(self.key, v) for v in d.choices)
        return None

    @property
    def low(self) -> Any:
        return getattr(self.distribution, "low", None)

    @property
    def high(self) -> Any:
        return getattr(self.distribution, "high", None)

    @property
    def log(self) -> bool:
        return bool(getattr(self.distribution, "log", False))

    @property
    def candidates(self) -> tuple:
        """The listed values, or (low, high): what validation probes."""
        return self.values if self.values is not None else (self.low, self.high)

    @property
    def first(self) -> Any:
        """The first value (or the low bound): the value used to probe the config."""
        return self.candidates[0]

    def contains(self, value: Any) -> bool:
        """Whether a (decoded, coerced) value lies in the distribution."""
        if self.values is not None:
            return value in self.values
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Case:
    """One named setting of the special `case` key: dotted config keys and their values."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    """(dotted key, coerced value) pairs, in file order."""


@dataclass(frozen=True)
class SpaceFile:
    """A validated space file: fixed base config, searched params, search and resources."""

    name: str
    """Study name (folder name under results/): no path separators, no '..'."""
    path: Path | None
    """The file it came from (None when built from a dict)."""
    base: dict[str, Any]
    """The data/model/train sections as plain nested dicts (coerced values, overrides applied)."""
    params: tuple[Param, ...]
    """Searched keys in dependency order (a condition's key before the keys it gates)."""
    search: SearchSpec
    resources: Resources
    raw: dict[str, Any]
    """The resolved document (defaults filled in, overrides applied): write it as study.yaml;
    `load_space` reads it back to the same SpaceFile."""
    cases: tuple[Case, ...] = ()
    """The named settings of the `case` key, if any."""

    @property
    def source(self) -> str:
        """What error messages call this file."""
        return str(self.path) if self.path is not None else self.name

    def param(self, key: str) -> Param | None:
        """The searched Param for `key`, or None."""
        return next((p for p in self.params if p.key == key), None)

    def case(self, name: str) -> Case | None:
        """The Case named `name`, or None."""
        return next((c for c in self.cases if c.name == name), None)

    @property
    def uses_variant_generator(self) -> bool:
        """Whether Tune's variant generator runs this search (grids and PBT), not Optuna."""
        return variant_generator(self.search, self.params)


def variant_generator(search: SearchSpec, params: Sequence[Param]) -> bool:
    """algorithm grid, a `grid:` entry (a case grid) or PBT need Tune's variant generator;
    everything else (optuna, random) is sampled by Optuna, define-by-run."""
    return search.algorithm == "grid" or search.scheduler.type == "pbt" or any(p.grid for p in params)


# ---------------------------------------------------------------------------- values


def strip_optional(tp: Any) -> Any:
    """int | None -> int; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)][0]
    return tp


def key_type(key: str) -> Any:
    """The annotated type of a space key ('case' is a string name)."""
    return str if key == CASE_KEY else LEAVES[key]


def type_name(tp: Any) -> str:
    """'int', 'float', 'a list of int', 'one of a, b' ... for messages."""
    tp = strip_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is tuple:
        return "a list of " + type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


def pyscalar(value: Any) -> Any:
    """numpy scalars (Tune's randint gives np.int64, not an int) -> plain Python values."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    return value


def plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, recursively: YAML-safe."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return pyscalar(value)


def encode_value(key: str, value: Any) -> Any:
    """A value as Optuna/Tune carry it: chunk schedules (tuples) become '100,50,1' strings."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return value


def decode_value(key: str, value: Any) -> Any:
    """The inverse of `encode_value` (also accepts lists), numpy scalars made plain."""
    value = pyscalar(value)
    if key in LEAVES and typing.get_origin(strip_optional(LEAVES[key])) is tuple:
        if isinstance(value, str):
            try:
                return tuple(int(part) for part in value.split(","))
            except ValueError:
                return value  # left for the config check to reject with the key's name
        if isinstance(value, (list, tuple)):
            return tuple(pyscalar(v) for v in value)
    return value


def coerce(source: str, key: str, value: Any, tp: Any) -> Any:
    """config.coerce with the file named, and every failure a ConfigError (never Overflow...).

    Numbers written as YAML 1.1 strings ('1e-4') are accepted for numeric keys (by coerce)."""
    try:
        return cfg.coerce(key, value, tp)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (OverflowError, ValueError, TypeError):  # e.g. int(.inf), int(.nan)
        raise ConfigError(
            f"{source}: {key}: got {short(value)}; allowed: a finite value ({type_name(tp)})"
        ) from None


def build_config(source: str, tree: Mapping[str, Any]) -> Config:
    """config.from_dict, with the file named and every failure a ConfigError."""
    try:
        return cfg.from_dict(tree)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (OverflowError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
        raise ConfigError(
            f"{source}: config: {exc.__class__.__name__}: {short(str(exc))}; allowed: valid values"
        ) from None


def tree_with(base: Mapping[str, Any], cases: Sequence[Case], values: Mapping[str, Any]) -> dict[str, Any]:
    """base + the case's settings + the searched values, as a nested plain dict."""
    tree = copy.deepcopy(dict(base))
    if CASE_KEY in values:
        case = next(c for c in cases if c.name == values[CASE_KEY])
        for key, value in case.settings:
            cfg.set_dotted(tree, key, plain(value))
    for key, value in values.items():
        if key != CASE_KEY:
            cfg.set_dotted(tree, key, plain(value))
    return tree


def active(p: Param, values: Mapping[str, Any]) -> bool:
    """Whether p's condition holds for the values chosen so far (always without one)."""
    if p.condition is None:
        return True
    parent, allowed = p.condition
    return parent in values and values[parent] in allowed


def assignment(params: Sequence[Param], forced: Mapping[str, Any]) -> dict[str, Any]:
    """First values of every param whose condition holds (with some values forced)."""
    values: dict[str, Any] = {}
    for p in params:
        if active(p, values):
            values[p.key] = forced.get(p.key, p.first)
    return values


def get_dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def categorical(key: str, values: Sequence[Any]) -> CategoricalDistribution:
    """The Optuna categorical of listed (decoded) values."""
    return CategoricalDistribution([encode_value(key, v) for v in values])
