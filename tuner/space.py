"""Search spaces: a YAML space file -> a validated `SpaceFile` -> Optuna or Ray Tune sampling.

A space file is a run config (sections ``data``, ``model``, ``train``: the fixed part of every
trial) plus ``space`` (the searched keys, each with one distribution), ``search`` (algorithm,
sampler, metric, scheduler, budget) and ``resources`` (per trial). Everything is checked once,
in `load_space`, so that a typo fails in a second with one line naming the file and the key,
never an hour into a study.

Distributions: ``choice: [..]``, ``uniform: [low, high]``, ``loguniform: [low, high]`` (low > 0),
``int: [low, high]`` (inclusive; optional ``log: true``), ``grid: [..]`` (Tune's variant
generator only). Any entry may add ``if: {other.key: [values]}``: it is sampled only when the
other searched key took one of those values. The special key ``case`` is a ``grid`` (or a
``choice``, which Optuna can sample) of named settings ``{name: x, train.optimizer: sgd, ...}``
merged into the config; the trial's ``case`` value is the name.

This is the one module that knows the samplers' quirks:

* ``int: [low, high]`` is INCLUSIVE. Optuna's ``suggest_int`` includes ``high``; Tune's
  ``randint``/``lograndint`` exclude it, so Tune gets ``high + 1``.
* Optuna categoricals hold only None/bool/int/float/str, so a chunk schedule ``[100, 50, 1]``
  travels as the string ``"100,50,1"`` (in Tune too, so both give the same trial configs and
  table columns); `resolve` decodes it.
* Conditional parameters (``if:``): Optuna's define-by-run simply does not suggest them. Tune
  samples them into a hidden key ``_draw:<key>`` (seeded like every other Tune sample) and a
  ``sample_from`` gate copies that draw to ``<key>`` when the condition holds, else None.
* Tune hands out numpy integers (``np.int64``), which are not ``int``; `resolve` converts them.

Trial configs are FLAT: keys are the dotted config keys (``"train.lr"``, ``"case"``), exactly as
written under ``space:``. `resolve` turns such a dict into the full, validated `Config`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn, Sequence

import yaml

from tuner.core import config as cfg
from tuner.core.config import Config, ConfigError
from tuner.objectives import HELD_OUT_OBJECTIVES, OBJECTIVES, renamed_hint

if TYPE_CHECKING:  # pragma: no cover - typing only; both are imported lazily where used
    import optuna

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "grid")
"""Distribution names a `space:` entry may use (exactly one per entry)."""
ALGORITHMS = ("optuna", "random", "grid")
SAMPLERS = ("tpe", "qmc", "random", "cmaes", "gp")
METRICS = OBJECTIVES
MODES = ("min", "max")
TARGET_UNITS = ("seconds", "timesteps")
SCHEDULERS = ("fifo", "asha", "median", "pbt")
TIME_ATTRS = ("timesteps", "time_total_s", "training_iteration")
SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "fifo": (),
    "asha": ("time_attr", "grace_period", "reduction_factor", "max_t"),
    "median": ("time_attr", "grace_period"),
    "pbt": ("time_attr", "perturbation_interval"),
}
"""The scheduler keys each scheduler type uses (besides `type`); others are an error."""
TOP_KEYS = ("name", "data", "model", "train", "space", "search", "resources")
CASE_KEY = "case"
"""The special space key: a grid (or choice) of named settings merged into the config."""
CHUNKS_KEY = "train.schedule.chunks"
DRAW_PREFIX = "_draw:"
"""Tune-only hidden keys holding the seeded draw of a conditional parameter."""
PBT_KEYS = ("train.lr", "train.clip.threshold")
"""The keys PBT mutates (see `pbt_mutations`)."""

_LEAVES: dict[str, Any] = cfg.leaf_keys()
_MISSING = object()


# ---------------------------------------------------------------------------- the dataclasses


@dataclass(frozen=True)
class Param:
    """One searched key and its distribution, as validated from a `space:` entry."""

    key: str
    """Dotted config key (e.g. 'train.lr'), or 'case'."""
    kind: str
    """One of DISTRIBUTIONS."""
    values: tuple | None = None
    """choice/grid: the allowed values, coerced to the key's type (chunk schedules as tuples)."""
    low: float | int | None = None
    """uniform/loguniform/int: lower bound (inclusive)."""
    high: float | int | None = None
    """uniform/loguniform/int: upper bound (inclusive, also for int)."""
    log: bool = False
    """Sample on a log scale (always for loguniform; `log: true` for int)."""
    condition: tuple[str, tuple] | None = None
    """(other key, allowed values): the key is sampled only when the other key's value is one
    of these; None means always."""

    @property
    def candidates(self) -> tuple:
        """The listed values, or (low, high): what validation probes."""
        return self.values if self.values is not None else (self.low, self.high)

    @property
    def first(self) -> Any:
        """The first value (or the low bound): the value used to probe the config."""
        return self.candidates[0]


@dataclass(frozen=True)
class Case:
    """One named setting of the special `case` key: dotted config keys and their values."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    """(dotted key, coerced value) pairs, in file order."""


@dataclass(frozen=True)
class SchedulerSpec:
    """The Tune trial scheduler. Which fields a type uses: see SCHEDULER_KEYS."""

    type: str = "fifo"
    """fifo (none), asha, median (median stopping rule) or pbt (population based training)."""
    time_attr: str = "training_iteration"
    """The result field that measures progress: timesteps, time_total_s or training_iteration
    (= epochs)."""
    grace_period: float = 1.0
    """asha/median: no trial is stopped before this much `time_attr`."""
    reduction_factor: float = 3.0
    """asha: keep 1/reduction_factor of the trials at each rung."""
    max_t: float | None = None
    """asha: the most `time_attr` a trial gets; None = the trial's own budget (max_epochs)."""
    perturbation_interval: float = 5.0
    """pbt: exploit/explore every this much `time_attr`."""


@dataclass(frozen=True)
class SearchSpec:
    """How the space is searched: algorithm, objective, scheduler and budget."""

    algorithm: str = "optuna"
    """optuna (OptunaSearch, define-by-run), random (Tune's variant generator) or grid (the
    same generator with every `choice` expanded as a grid)."""
    sampler: str = "tpe"
    """Optuna sampler: tpe, qmc, random, cmaes or gp (only used with algorithm optuna)."""
    metric: str = "train_loss"
    """The objective (see tuner.objectives): train_loss, best_train_loss, val_loss,
    best_val_loss, auc or time_to_target."""
    mode: str = "min"
    """min or max."""
    target_loss: float | None = None
    """The loss to reach; required by metric time_to_target."""
    target_unit: str = "seconds"
    """time_to_target in seconds or timesteps."""
    num_samples: int = 16
    """Trials (optuna/random); for grid, passes over the whole grid (default 1 there)."""
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    max_concurrent: int = 2
    """Trials running at once (Tune starts one at a time without a limit)."""
    time_budget_s: float | None = None
    """Wall-clock budget of the whole search; None = unlimited."""
    seed: int = 0
    """Seed of the searcher / variant generator."""
    checkpoint_every: int = 5
    """Epochs between trial checkpoints."""
    max_failures: int = 2
    """Retries of a failed trial from its last checkpoint (FailureConfig)."""


@dataclass(frozen=True)
class Resources:
    """Resources of one trial."""

    cpu: float = 1.0
    gpu: float = 0.0


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


# ---------------------------------------------------------------------------- small helpers


def _name(key: Any) -> str:
    """A key as text for a one-line message (repr when it is odd, e.g. holds a newline)."""
    if isinstance(key, str) and key.isprintable() and key.strip() == key and key:
        return key
    return repr(key)


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strip_optional(tp: Any) -> Any:
    """int | None -> int; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0]
    return tp


def _key_type(key: str) -> Any:
    """The annotated type of a space key ('case' is a string name)."""
    return str if key == CASE_KEY else _LEAVES[key]


def _type_name(tp: Any) -> str:
    """'int', 'float', 'a list of int', 'one of a, b' ... for messages."""
    tp = _strip_optional(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is tuple:
        return "a list of " + _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A number that fits a float and is not inf/nan (huge YAML ints overflow float())."""
    try:
        return _is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


def _pyscalar(value: Any) -> Any:
    """numpy scalars (Tune's randint gives np.int64, not an int) -> plain Python values."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    return value


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python, recursively: YAML-safe."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _pyscalar(value)


def encode_value(key: str, value: Any) -> Any:
    """A value as Optuna/Tune carry it: chunk schedules (tuples) become '100,50,1' strings."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return value


def decode_value(key: str, value: Any) -> Any:
    """The inverse of `encode_value` (also accepts lists), numpy scalars made plain."""
    value = _pyscalar(value)
    if key in _LEAVES and typing.get_origin(_strip_optional(_LEAVES[key])) is tuple:
        if isinstance(value, str):
            try:
                return tuple(int(part) for part in value.split(","))
            except ValueError:
                return value  # left for the config check to reject with the key's name
        if isinstance(value, (list, tuple)):
            return tuple(_pyscalar(v) for v in value)
    return value


_NUMBER_TEXT = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?")


def _number_text(value: Any) -> Any:
    """'1e-4' or '2.0e6' -> float: PyYAML (YAML 1.1) reads exponents without a dot or a sign
    as strings, a trap in every space file; anything else is returned unchanged."""
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


def _coerce(source: str, key: str, value: Any, tp: Any) -> Any:
    """config.coerce with the file named, and every failure a ConfigError (never Overflow...).

    Numbers written as YAML 1.1 strings ('1e-4') are accepted for numeric keys."""
    inner = _strip_optional(tp)
    if inner in (int, float):
        value = _number_text(value)
    elif typing.get_origin(inner) is tuple and isinstance(value, list):
        value = [_number_text(v) for v in value]
    try:
        return cfg.coerce(key, value, tp)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (OverflowError, ValueError, TypeError):  # e.g. int(.inf), int(.nan)
        raise ConfigError(f"{source}: {key}: got {_short(value)}; allowed: a finite value "
                          f"({_type_name(tp)})") from None


def _build_config(source: str, tree: Mapping[str, Any]) -> Config:
    """config.from_dict, with the file named and every failure a ConfigError."""
    try:
        return cfg.from_dict(tree)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (OverflowError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
        raise ConfigError(f"{source}: config: {exc.__class__.__name__}: {_short(str(exc))}; "
                          f"allowed: valid values") from None


def _tree_with(base: Mapping[str, Any], spec_cases: Sequence[Case],
               values: Mapping[str, Any]) -> dict[str, Any]:
    """base + the case's settings + the searched values, as a nested plain dict."""
    tree = copy.deepcopy(dict(base))
    if CASE_KEY in values:
        case = next(c for c in spec_cases if c.name == values[CASE_KEY])
        for key, value in case.settings:
            cfg.set_dotted(tree, key, _plain(value))
    for key, value in values.items():
        if key != CASE_KEY:
            cfg.set_dotted(tree, key, _plain(value))
    return tree


def _assignment(params: Sequence[Param], forced: Mapping[str, Any]) -> dict[str, Any]:
    """First values of every param whose condition holds (with some values forced)."""
    values: dict[str, Any] = {}
    for p in params:
        if p.condition is not None:
            parent, allowed = p.condition
            if parent not in values or values[parent] not in allowed:
                continue
        values[p.key] = forced.get(p.key, p.first)
    return values


# ---------------------------------------------------------------------------- loading


class _Loader:
    """Parses and validates one space document; every failure is `fail(key, what, allowed)`."""

    def __init__(self, source: str, default_name: str) -> None:
        self.source = source
        self.default_name = default_name
        self.fixed: dict[str, Any] = {}  # config keys fixed by overrides
        self.sched_type_overridden = False
        self.sched_keys_overridden: set[str] = set()

    def fail(self, key: str, what: str, allowed: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {what}; allowed: {allowed}")

    # ------------------------------------------------------------------ document

    def load(self, doc: Mapping[str, Any], overrides: Sequence[str]) -> SpaceFile:
        doc = self.sections(doc)
        self.apply_overrides(doc, overrides)
        name = self.parse_name(doc.get("name", _MISSING))
        base = {sec: self.check_tree(sec, doc[sec], cls) for sec, cls in cfg.SECTIONS.items()}
        search = self.parse_search(doc["search"])
        resources = self.parse_resources(doc["resources"])
        params, cases = self.parse_space(doc["space"], base)
        self.cross_check(params, search)
        first = self.probe(base, params, cases)
        self.check_with_config(first, search)
        spec = SpaceFile(name=name, path=None, base=base, params=params, search=search,
                         resources=resources, raw={}, cases=cases)
        raw = _document(spec)
        return dataclasses.replace(spec, raw=raw)

    def sections(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Top-level keys known, each section a mapping (or absent/null)."""
        if not isinstance(doc, Mapping):
            self.fail("document", f"got {type(doc).__name__}", "a mapping of sections "
                      + ", ".join(TOP_KEYS))
        for key in doc:
            if key not in TOP_KEYS:
                self.fail(_name(key), f"unknown section{cfg.suggest(str(key), TOP_KEYS)}",
                          ", ".join(TOP_KEYS))
        out: dict[str, Any] = {}
        if "name" in doc:
            out["name"] = doc["name"]
        for sec in TOP_KEYS[1:]:
            value = doc.get(sec)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                self.fail(sec, f"got {_short(value)}", "a mapping")
            out[sec] = copy.deepcopy(dict(value))
        sched = out["search"].get("scheduler")
        if isinstance(sched, str):  # shorthand `scheduler: fifo`
            out["search"]["scheduler"] = {"type": sched}
        return out

    def apply_overrides(self, doc: dict[str, Any], overrides: Sequence[str]) -> None:
        """key=value strings: config keys become fixed (and leave the space), others set."""
        prefixes = ("search.", "resources.", "space.")
        allowed = "name, case, data.*, model.*, train.* (config keys), search.*, resources.*, " \
                  "space.<key> (a distribution, or null to drop it)"
        for text in overrides:
            if not isinstance(text, str) or "=" not in text:
                self.fail(f"override {_short(text)}", "not of the form key=value",
                          "key=value, e.g. train.lr=0.01")
            key, _, value_text = text.partition("=")
            key = key.strip()
            try:
                value = yaml.safe_load(value_text) if value_text.strip() else None
            except yaml.YAMLError:
                value = value_text
            if key == "name":
                doc["name"] = value
            elif key == CASE_KEY:
                self.fix_case(doc["space"], value)
            elif key in _LEAVES:
                cfg.set_dotted(doc, key, value)
                self.fixed[key] = value
                doc["space"].pop(key, None)
                case = doc["space"].get(CASE_KEY)
                if isinstance(case, Mapping):
                    for entries in case.values():
                        for entry in entries if isinstance(entries, list) else ():
                            if isinstance(entry, dict):
                                entry.pop(key, None)
            elif key.startswith(prefixes) and len(key.split(".")) >= 2 and all(key.split(".")):
                if key.startswith("space."):
                    sub = key[len("space."):]
                    if value is None:
                        doc["space"].pop(sub, None)
                    else:
                        doc["space"][sub] = value
                    continue
                if key == "search.scheduler" and isinstance(value, str):
                    value = {"type": value}
                if key.startswith("search.scheduler.") and not isinstance(
                        doc["search"].get("scheduler"), dict):
                    doc["search"]["scheduler"] = {}
                cfg.set_dotted(doc, key, value)
                if key == "search.scheduler.type":
                    self.sched_type_overridden = True
                elif key.startswith("search.scheduler."):
                    self.sched_keys_overridden.add(key.split(".", 2)[2])
            else:
                near = cfg.suggest(key, [*_LEAVES, "name", CASE_KEY])
                self.fail(_name(key), f"unknown override key{near}", allowed)
        sched = doc["search"].get("scheduler")
        if self.sched_type_overridden and isinstance(sched, dict):
            # Switching type on the command line drops the file's keys the new type ignores.
            kind = sched.get("type")
            used = SCHEDULER_KEYS.get(kind) if isinstance(kind, str) else None
            if used is not None:
                for k in list(sched):
                    if k != "type" and k not in used and k not in self.sched_keys_overridden:
                        del sched[k]

    def fix_case(self, space: dict[str, Any], name: Any) -> None:
        """Override case=NAME: keep only that named case."""
        case = space.get(CASE_KEY)
        if not isinstance(case, Mapping) or len(case) != 1:
            self.fail(CASE_KEY, "overridden, but the space has no valid case entry",
                      "case=<name> only with a case grid in the space")
        kind, entries = next(iter(case.items()))
        names = [e.get("name") for e in entries if isinstance(e, Mapping)] \
            if isinstance(entries, list) else []
        if name not in names:
            self.fail(CASE_KEY, f"no case named {_short(name)}"
                      f"{cfg.suggest(str(name), [str(n) for n in names])}",
                      ", ".join(map(str, names)) or "a case name")
        space[CASE_KEY] = {kind: [e for e in entries if isinstance(e, Mapping)
                                  and e.get("name") == name]}

    def parse_name(self, value: Any) -> str:
        if value is _MISSING:
            value = self.default_name
        bad = (not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value
               or ".." in value or value.strip() == "." or not value.isprintable())
        if bad:
            self.fail("name", f"got {_short(value)}",
                      "a non-empty study name without '/', '\\' or '..'")
        return value

    def check_tree(self, prefix: str, raw: Any, cls: type) -> dict[str, Any]:
        """A config section: known keys (nearest name suggested), each value coerced."""
        if not isinstance(raw, Mapping):
            self.fail(prefix, f"got {_short(raw)}", "a mapping of keys")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in names:
                self.fail(f"{prefix}.{_name(key)}", f"unknown key{cfg.suggest(str(key), names)}",
                          ", ".join(names))
            tp = hints[key]
            if dataclasses.is_dataclass(tp):
                out[key] = self.check_tree(f"{prefix}.{key}", {} if value is None else value, tp)
            else:
                out[key] = _plain(_coerce(self.source, f"{prefix}.{key}", value, tp))
        return out

    # ------------------------------------------------------------------ search and resources

    def one_of(self, key: str, value: Any, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(key, f"got {_short(value)}{cfg.suggest(str(value), choices)}",
                      ", ".join(choices))
        return value

    def metric(self, value: Any) -> str:
        if isinstance(value, str) and renamed_hint(value):
            self.fail("search.metric", renamed_hint(value), ", ".join(METRICS))
        return self.one_of("search.metric", value, METRICS)

    def number(self, key: str, value: Any, ok: Callable[[float], bool], allowed: str,
               integer: bool = False, nullable: bool = False) -> Any:
        if value is None and nullable:
            return None
        value = _number_text(value)
        good = _finite(value) and (not integer or value == int(value))
        if not good or not ok(value):
            self.fail(key, f"got {_short(value)}", allowed + (" or null" if nullable else ""))
        return int(value) if integer else float(value)

    def parse_search(self, raw: Mapping[str, Any]) -> SearchSpec:
        names = [f.name for f in dataclasses.fields(SearchSpec)]
        for key in raw:
            if key not in names:
                self.fail(f"search.{_name(key)}", f"unknown key{cfg.suggest(str(key), names)}",
                          ", ".join(names))
        d = SearchSpec()
        get = lambda k: raw.get(k, getattr(d, k))  # noqa: E731
        return SearchSpec(
            algorithm=self.one_of("search.algorithm", get("algorithm"), ALGORITHMS),
            sampler=self.one_of("search.sampler", get("sampler"), SAMPLERS),
            metric=self.metric(get("metric")),
            mode=self.one_of("search.mode", get("mode"), MODES),
            target_loss=self.number("search.target_loss", get("target_loss"), lambda v: True,
                                    "a number", nullable=True),
            target_unit=self.one_of("search.target_unit", get("target_unit"), TARGET_UNITS),
            # A grid is run num_samples times over: one pass unless asked for more.
            num_samples=self.number("search.num_samples", raw.get(
                "num_samples", 1 if raw.get("algorithm") == "grid" else d.num_samples),
                lambda v: v >= 1, "an integer >= 1", integer=True),
            scheduler=self.parse_scheduler(raw.get("scheduler")),
            max_concurrent=self.number("search.max_concurrent", get("max_concurrent"),
                                       lambda v: v >= 1, "an integer >= 1", integer=True),
            time_budget_s=self.number("search.time_budget_s", get("time_budget_s"),
                                      lambda v: v > 0, "a number of seconds > 0 (null = "
                                      "unlimited)", nullable=True),
            seed=self.number("search.seed", get("seed"), lambda v: True, "an integer",
                             integer=True),
            checkpoint_every=self.number("search.checkpoint_every", get("checkpoint_every"),
                                         lambda v: v >= 1, "an integer >= 1 (epochs)",
                                         integer=True),
            max_failures=self.number("search.max_failures", get("max_failures"),
                                     lambda v: v >= 0, "an integer >= 0", integer=True),
        )

    def parse_scheduler(self, raw: Any) -> SchedulerSpec:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.fail("search.scheduler", f"got {_short(raw)}",
                      "a mapping with type (" + ", ".join(SCHEDULERS) + ") and its keys")
        kind = self.one_of("search.scheduler.type", raw.get("type", "fifo"), SCHEDULERS)
        used = SCHEDULER_KEYS[kind]
        every = sorted({k for keys in SCHEDULER_KEYS.values() for k in keys})
        for key in raw:
            if key == "type":
                continue
            if key not in every:
                self.fail(f"search.scheduler.{_name(key)}",
                          f"unknown key{cfg.suggest(str(key), every)}", "type, " + ", ".join(used))
            if key not in used:
                self.fail(f"search.scheduler.{key}", f"not used by scheduler {kind}",
                          ", ".join(("type",) + used))
        d = SchedulerSpec()
        get = lambda k: raw.get(k, getattr(d, k))  # noqa: E731
        grace = self.number("search.scheduler.grace_period", get("grace_period"),
                            lambda v: v > 0, "a number > 0")
        max_t = self.number("search.scheduler.max_t", get("max_t"), lambda v: v > grace,
                            f"a number > grace_period = {grace:g}", nullable=True)
        return SchedulerSpec(
            type=kind,
            time_attr=self.one_of("search.scheduler.time_attr", get("time_attr"), TIME_ATTRS),
            grace_period=grace,
            reduction_factor=self.number("search.scheduler.reduction_factor",
                                         get("reduction_factor"), lambda v: v > 1,
                                         "a number > 1"),
            max_t=max_t,
            perturbation_interval=self.number("search.scheduler.perturbation_interval",
                                              get("perturbation_interval"), lambda v: v > 0,
                                              "a number > 0"),
        )

    def parse_resources(self, raw: Mapping[str, Any]) -> Resources:
        for key in raw:
            if key not in ("cpu", "gpu"):
                self.fail(f"resources.{_name(key)}",
                          f"unknown key{cfg.suggest(str(key), ['cpu', 'gpu'])}", "cpu, gpu")
        return Resources(
            cpu=self.number("resources.cpu", raw.get("cpu", 1.0), lambda v: v > 0,
                            "a number > 0 (CPUs per trial)"),
            gpu=self.number("resources.gpu", raw.get("gpu", 0.0), lambda v: v >= 0,
                            "a number >= 0 (GPUs per trial)"),
        )

    # ------------------------------------------------------------------ the space

    def parse_space(self, raw: Mapping[str, Any], base: Mapping[str, Any]
                    ) -> tuple[tuple[Param, ...], tuple[Case, ...]]:
        parsed: dict[str, Param] = {}
        cases: tuple[Case, ...] = ()
        for key, entry in raw.items():
            if key == CASE_KEY:
                param, cases = self.parse_case(entry)
                parsed[CASE_KEY] = param
                continue
            if not isinstance(key, str) or key not in _LEAVES:
                self.fail(f"space.{_name(key)}",
                          f"unknown key{cfg.suggest(str(key), [*_LEAVES, CASE_KEY])}",
                          "a dotted config key such as train.lr, or case")
            parsed[key] = self.parse_param(key, entry)
        # A case may not set a searched key: which value would win?
        for case in cases:
            for key, _ in case.settings:
                if key in parsed:
                    self.fail(f"space.case.{case.name}.{key}", "also searched under space",
                              "a key that is either searched or set by the cases, not both")
        params = self.resolve_conditions(parsed)
        self.check_chunks(params, base)
        return params, cases

    def parse_param(self, key: str, entry: Any) -> Param:
        where = f"space.{key}"
        shapes = "a mapping with one of " + ", ".join(DISTRIBUTIONS) + " (plus optional if, log)"
        if not isinstance(entry, Mapping):
            self.fail(where, f"got {_short(entry)}", shapes)
        for k in entry:
            if k not in (*DISTRIBUTIONS, "if", "log"):
                self.fail(where, f"unknown distribution {_name(k)}"
                          f"{cfg.suggest(str(k), [*DISTRIBUTIONS, 'if', 'log'])}", shapes)
        dists = [k for k in entry if k in DISTRIBUTIONS]
        if len(dists) != 1:
            self.fail(where, f"has {len(dists)} distributions", shapes)
        kind = dists[0]
        arg = entry[kind]
        tp = _key_type(key)
        inner = _strip_optional(tp)
        log = entry.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{where}.log", f"got {_short(log)}", "true or false")
        if log and kind != "int":
            self.fail(f"{where}.log", f"not used by {kind}",
                      "log with int; use loguniform for log-scale numbers")
        condition = self.parse_if(key, entry["if"]) if "if" in entry else None
        if kind in ("choice", "grid"):
            if condition is not None and kind == "grid":
                self.fail(where, "a grid cannot have if (it would repeat trials)",
                          "an unconditional grid, or case entries for dependent settings")
            values = self.parse_values(where, key, arg, tp)
            return Param(key, kind, values=values, condition=condition)
        if kind in ("uniform", "loguniform"):
            if inner is not float:
                self.fail(where, f"{kind} needs a real-valued key, {key} is "
                          f"{_type_name(inner)}",
                          "int for integer keys, choice or grid for others")
            low, high = self.bounds(where, kind, arg, integer=False)
            if kind == "loguniform" and low <= 0:
                self.fail(where, f"loguniform bounds must be > 0, got [{low}, {high}]",
                          "0 < low <= high (use uniform to include 0)")
            return Param(key, kind, low=low, high=high, log=kind == "loguniform",
                         condition=condition)
        # int
        if inner is not int:
            self.fail(where, f"int needs an integer key, {key} is "
                      f"{_type_name(inner)}",
                      "uniform/loguniform for real keys, choice or grid for others")
        low, high = self.bounds(where, kind, arg, integer=True)
        if log and low < 1:
            self.fail(where, f"int with log: true needs low >= 1, got {low}",
                      "1 <= low <= high with log: true")
        return Param(key, "int", low=low, high=high, log=log, condition=condition)

    def parse_values(self, where: str, key: str, arg: Any, tp: Any) -> tuple:
        if not isinstance(arg, list) or not arg:
            self.fail(where, f"got {_short(arg)}", "a non-empty list of values")
        values = []
        for v in arg:
            value = _coerce(self.source, key, v, tp)
            if isinstance(value, tuple) and not value:
                self.fail(where, "got an empty chunk schedule []",
                          "non-empty lists of integers >= 1")
            if value in values:
                self.fail(where, f"lists {_short(_plain(value))} twice", "distinct values")
            values.append(value)
        return tuple(values)

    def bounds(self, where: str, kind: str, arg: Any, integer: bool) -> tuple[Any, Any]:
        what = "integers" if integer else "numbers"
        shape = f"[low, high] with two finite {what}, low <= high" + (
            " (both inclusive)" if integer else "")
        if not isinstance(arg, list) or len(arg) != 2:
            self.fail(where, f"{kind} got {_short(arg)}", shape)
        arg = [_number_text(v) for v in arg]
        for v in arg:
            ok = _finite(v) and (not integer or v == int(v))
            if not ok:
                wanted = "an integer" if integer else "a finite number"
                self.fail(where, f"{kind} bound {_short(v)} is not {wanted}", shape)
        low, high = (int(v) for v in arg) if integer else (float(v) for v in arg)
        if low > high:
            self.fail(where, f"{kind} low {low} > high {high}", shape)
        return low, high

    def parse_if(self, key: str, raw: Any) -> tuple[str, tuple]:
        where = f"space.{key}.if"
        shape = "one mapping entry {other.key: [allowed values]}"
        if not isinstance(raw, Mapping) or len(raw) != 1:
            self.fail(where, f"got {_short(raw)}", shape)
        parent, allowed = next(iter(raw.items()))
        if not isinstance(parent, str):
            self.fail(where, f"names {_short(parent)}", "a key of the space")
        if not isinstance(allowed, list) or not allowed:
            self.fail(f"{where}.{_name(parent)}", f"got {_short(allowed)}",
                      "a non-empty list of values")
        return parent, tuple(allowed)  # raw values: coerced once the parent is known

    def parse_case(self, entry: Any) -> tuple[Param, tuple[Case, ...]]:
        where = f"space.{CASE_KEY}"
        shape = "{grid: [{name: ..., dotted.key: value, ...}, ...]} (or choice)"
        if not isinstance(entry, Mapping) or len(entry) != 1:
            self.fail(where, f"got {_short(entry)}", shape)
        kind, entries = next(iter(entry.items()))
        if kind not in ("grid", "choice"):
            self.fail(where, f"unknown distribution {_name(kind)}"
                      f"{cfg.suggest(str(kind), ['grid', 'choice'])}", shape)
        if not isinstance(entries, list) or not entries:
            self.fail(where, f"got {_short(entries)}", "a non-empty list of named settings")
        cases: list[Case] = []
        for i, item in enumerate(entries):
            if not isinstance(item, Mapping):
                self.fail(f"{where}[{i}]", f"got {_short(item)}", shape)
            name = item.get("name")
            if not isinstance(name, str) or not name.strip() or not name.isprintable():
                self.fail(f"{where}[{i}].name", f"got {_short(name)}", "a non-empty string")
            if any(c.name == name for c in cases):
                self.fail(f"{where}.{name}", "named twice", "distinct case names")
            settings = []
            for key, value in item.items():
                if key == "name":
                    continue
                if not isinstance(key, str) or key not in _LEAVES:
                    self.fail(f"{where}.{name}.{_name(key)}",
                              f"unknown key{cfg.suggest(str(key), list(_LEAVES))}",
                              "dotted config keys such as train.optimizer")
                settings.append((key, _coerce(self.source, key, value, _LEAVES[key])))
            cases.append(Case(name, tuple(settings)))
        names = tuple(c.name for c in cases)
        return Param(CASE_KEY, kind, values=names), tuple(cases)

    def resolve_conditions(self, parsed: dict[str, Param]) -> tuple[Param, ...]:
        """Check every `if`, settle those on override-fixed keys, order parents first."""
        params = dict(parsed)
        changed = True
        while changed:  # conditions on keys fixed by an override hold or never hold
            changed = False
            for key, p in list(params.items()):
                if p.condition is None:
                    continue
                parent, allowed = p.condition
                if parent in self.fixed and parent not in params:
                    tp = _key_type(parent)
                    fixed = _coerce(self.source, parent, self.fixed[parent], tp)
                    holds = any(_coerce(self.source, parent, a, tp) == fixed for a in allowed)
                    if holds:
                        params[key] = dataclasses.replace(p, condition=None)
                    else:
                        del params[key]
                    changed = True
                elif parent in parsed and parent not in params:  # its parent was dropped
                    del params[key]
                    changed = True
        for key, p in list(params.items()):
            if p.condition is None:
                continue
            parent, allowed = p.condition
            where = f"space.{key}.if"
            if parent == key:
                self.fail(where, "names the key itself", "another key of the space")
            if parent not in params:
                self.fail(where, f"names {_name(parent)}, which is not searched"
                          f"{cfg.suggest(parent, list(params))}",
                          ", ".join(k for k in params if k != key) or "a searched key")
            parent_p = params[parent]
            if parent_p.kind in ("uniform", "loguniform"):
                self.fail(where, f"{parent} is continuous ({parent_p.kind})",
                          "a key searched with choice, grid or int")
            tp = _key_type(parent)
            if parent_p.values is not None:
                domain = ", ".join(str(_plain(v)) for v in parent_p.values)
            else:
                domain = f"integers in [{parent_p.low}, {parent_p.high}]"
            coerced = []
            for a in allowed:
                try:
                    value = _coerce(self.source, parent, a, tp)
                except ConfigError:
                    self.fail(f"{where}.{parent}", f"value {_short(a)} is not a valid "
                              f"{parent}", domain)
                if parent_p.values is not None:
                    occurs = value in parent_p.values
                else:
                    occurs = parent_p.low <= value <= parent_p.high
                if not occurs:
                    self.fail(f"{where}.{parent}", f"value {_short(_plain(value))} never occurs",
                              domain)
                coerced.append(value)
            params[key] = dataclasses.replace(p, condition=(parent, tuple(coerced)))
        return self.topological(params)

    def topological(self, params: dict[str, Param]) -> tuple[Param, ...]:
        """File order, except that a key comes after the key its condition names."""
        placed: list[Param] = []
        done: set[str] = set()
        pending = list(params.values())
        while pending:
            for i, p in enumerate(pending):
                if p.condition is None or p.condition[0] in done:
                    placed.append(p)
                    done.add(p.key)
                    del pending[i]
                    break
            else:
                cycle = ", ".join(p.key for p in pending)
                self.fail(f"space.{pending[0].key}.if", f"conditions form a cycle ({cycle})",
                          "conditions that can be ordered (no key depends on itself)")
        return tuple(placed)

    def check_chunks(self, params: Sequence[Param], base: Mapping[str, Any]) -> None:
        """Every listed chunk schedule fits in the shortest series length that may occur."""
        p = next((q for q in params if q.key == CHUNKS_KEY), None)
        if p is None or base.get("data", {}).get("path") is not None:
            return
        length_p = next((q for q in params if q.key == "data.length"), None)
        if length_p is not None:
            length = min(length_p.candidates)
        else:
            length = base.get("data", {}).get("length", cfg.DataConfig.length)
        for schedule in p.values or ():
            if any(n < 1 for n in schedule) or max(schedule) > length:
                self.fail(f"space.{CHUNKS_KEY}", f"schedule {list(schedule)} has chunk counts "
                          f"outside [1, data.length = {length}]",
                          f"chunk counts from 1 to data.length = {length}")

    # ------------------------------------------------------------------ whole-file checks

    def cross_check(self, params: Sequence[Param], search: SearchSpec) -> None:
        sched = search.scheduler
        if sched.type == "pbt" and search.algorithm == "optuna":
            self.fail("search.scheduler.type", "pbt takes no searcher, and search.algorithm "
                      "is optuna", "search.algorithm random or grid with pbt")
        for p in params:
            if p.kind == "grid" and search.algorithm == "optuna":
                self.fail(f"space.{p.key}", "grid needs Tune's own variant generator, and "
                          "search.algorithm is optuna",
                          "search.algorithm grid or random, or a choice distribution")
            if (search.algorithm == "grid" and p.kind == "choice"
                    and p.condition is not None):
                self.fail(f"space.{p.key}", "algorithm grid expands every choice, and a "
                          "conditional choice would repeat trials",
                          "an unconditional choice, or case entries for dependent settings")
            if sched.type == "pbt" and p.key in PBT_KEYS and p.condition is not None:
                self.fail(f"space.{p.key}.if", "pbt mutates this key in every trial",
                          "no if on " + ", ".join(PBT_KEYS) + " with pbt")
        if (sched.type == "pbt" and sched.time_attr == "training_iteration"
                and sched.perturbation_interval % search.checkpoint_every != 0):
            self.fail("search.scheduler.perturbation_interval",
                      f"got {sched.perturbation_interval:g}, not a multiple of "
                      f"search.checkpoint_every = {search.checkpoint_every}",
                      "a multiple of checkpoint_every, so exploits find a fresh checkpoint")
        if search.metric == "time_to_target" and search.target_loss is None:
            self.fail("search.target_loss", "required by metric time_to_target",
                      "a number (the loss to reach)")

    def probe(self, base: Mapping[str, Any], params: tuple[Param, ...],
              cases: tuple[Case, ...]) -> Config:
        """Build a Config from base + first values, then once per listed value or bound
        (its condition chain made true), so fixed and searched values fail now."""
        first_values = _assignment(params, {})
        first = _build_config(self.source, _tree_with(base, cases, first_values))
        by_key = {p.key: p for p in params}
        for p in params:
            for value in p.candidates:
                forced = {p.key: value}
                q = p
                while q.condition is not None:
                    parent, allowed = q.condition
                    forced.setdefault(parent, allowed[0])
                    q = by_key[parent]
                values = _assignment(params, forced)
                _build_config(self.source, _tree_with(base, cases, values))
        return first

    def check_with_config(self, first: Config, search: SearchSpec) -> None:
        if search.metric in HELD_OUT_OBJECTIVES and not (first.data.val_fraction > 0
                                                         or first.data.val_series > 0):
            self.fail("search.metric", f"{search.metric} needs held-out data, and "
                      "data.val_fraction and data.val_series are 0",
                      f"data.val_fraction > 0 or data.val_series > 0 with {search.metric}")


def _param_document(p: Param, cases: Sequence[Case]) -> dict[str, Any]:
    """A Param back as its YAML entry."""
    if p.key == CASE_KEY:
        return {p.kind: [{"name": c.name, **{k: _plain(v) for k, v in c.settings}}
                         for c in cases]}
    out: dict[str, Any] = {p.kind: _plain(p.values) if p.values is not None
                           else [p.low, p.high]}
    if p.kind == "int" and p.log:
        out["log"] = True
    if p.condition is not None:
        out["if"] = {p.condition[0]: _plain(p.condition[1])}
    return out


def _document(spec: SpaceFile) -> dict[str, Any]:
    """The resolved document of a SpaceFile (loadable again by `load_space`)."""
    search = dataclasses.asdict(spec.search)
    sched = spec.search.scheduler
    search["scheduler"] = {"type": sched.type,
                           **{k: getattr(sched, k) for k in SCHEDULER_KEYS[sched.type]}}
    return {
        "name": spec.name,
        **{sec: copy.deepcopy(spec.base[sec]) for sec in cfg.SECTIONS},
        "space": {p.key: _param_document(p, spec.cases) for p in spec.params},
        "search": search,
        "resources": dataclasses.asdict(spec.resources),
    }


def space_from_dict(doc: Any, source: str = "<space>", overrides: Sequence[str] = (),
                    path: Path | None = None) -> SpaceFile:
    """Validate a space document already parsed from YAML; `source` names it in errors."""
    default_name = path.stem if path is not None else "study"
    spec = _Loader(source, default_name).load(doc, overrides)
    return dataclasses.replace(spec, path=path)


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> SpaceFile:
    """Read, override and validate a space file.

    Overrides are 'key=value' (value parsed as YAML): a config key (data./model./train.) is
    fixed to the value and leaves the space (a condition on it is settled: the gated key is
    kept unconditionally or dropped); search.*, resources.*, name set those; space.<key>=
    {distribution} replaces an entry (null drops it); case=NAME keeps one named case.
    Every failure is a ConfigError of one line: '<file>: <key>: <what>; allowed: <what>'."""
    p = Path(path)
    doc = cfg.read_yaml(p)
    return space_from_dict(doc, source=str(path), overrides=overrides, path=p)


# ---------------------------------------------------------------------------- sampling


class _DefineByRun:
    """Optuna define-by-run space (a class, not a closure, so it pickles with the searcher)."""

    def __init__(self, params: Sequence[Param]) -> None:
        for p in params:
            if p.kind == "grid":
                raise ConfigError(f"space.{p.key}: grid cannot be sampled by Optuna; "
                                  "allowed: choice, or search.algorithm grid/random")
        self.params = tuple(params)

    def __call__(self, trial: "optuna.Trial") -> None:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.condition is not None:
                parent, allowed = p.condition
                if parent not in values or values[parent] not in allowed:
                    continue  # define-by-run: absent, not None
            if p.kind == "choice":
                encoded = [encode_value(p.key, v) for v in (p.values or ())]
                values[p.key] = decode_value(p.key, trial.suggest_categorical(p.key, encoded))
            elif p.kind in ("uniform", "loguniform"):
                values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log)
            else:  # int: Optuna's bounds are inclusive, like ours
                values[p.key] = trial.suggest_int(p.key, p.low, p.high, log=p.log)
        return None


def optuna_space(params: Sequence[Param]) -> Callable[["optuna.Trial"], None]:
    """A define-by-run function for `OptunaSearch(space=...)`.

    choice -> suggest_categorical (chunk schedules as '100,50,1' strings), uniform/loguniform
    -> suggest_float(log=...), int -> suggest_int (inclusive); a conditional key is suggested
    only when its condition holds, so it is absent from the trial's params otherwise."""
    return _DefineByRun(params)


def _config_view(spec: Any) -> Any:
    """What a Tune `sample_from` function receives -> the (guarded) trial config.

    Ray 2.60 passes its access guard around the whole spec ({'config': ...}); only attribute
    access on the guard raises for values that are not sampled yet, hence getattr."""
    view = getattr(spec, "config", None)
    if view is None and isinstance(spec, Mapping) and "config" in spec:
        view = spec["config"]
    return view if view is not None else spec


def _lookup(config: Any, key: str) -> Any:
    """config[key], raising Tune's RecursiveDependencyError while it is still unsampled."""
    from ray.tune.search.sample import Domain
    from ray.tune.search.variant_generator import RecursiveDependencyError

    try:
        value = getattr(config, key)  # Tune's guard raises here for unresolved values
    except AttributeError:
        value = config[key]
    if isinstance(value, Domain) or (isinstance(value, Mapping) and "grid_search" in value):
        raise RecursiveDependencyError(f"{key} is not sampled yet")
    return value


class _Gate:
    """Tune `sample_from` function of a conditional key: its hidden draw when every condition
    up the chain holds, else None. (A class so that it pickles and has a readable repr.)"""

    def __init__(self, key: str, chain: tuple[tuple[str, tuple], ...]) -> None:
        self.key = key
        self.chain = chain

    def __call__(self, spec: Any) -> Any:
        config = _config_view(spec)
        for parent, allowed in self.chain:
            if decode_value(parent, _lookup(config, parent)) not in allowed:
                return None
        return _lookup(config, DRAW_PREFIX + self.key)

    def __repr__(self) -> str:
        return f"_Gate({self.key!r}, {self.chain!r})"


def _tune_domain(p: Param, expand_choices: bool) -> Any:
    from ray import tune

    if p.kind in ("choice", "grid"):
        encoded = [encode_value(p.key, v) for v in (p.values or ())]
        if p.kind == "grid" or expand_choices:
            return tune.grid_search(encoded)
        return tune.choice(encoded)
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    # Tune's randint/lograndint EXCLUDE the upper bound; ours is inclusive.
    if p.log:
        return tune.lograndint(p.low, p.high + 1)
    return tune.randint(p.low, p.high + 1)


def tune_space(spec: SpaceFile) -> dict[str, Any]:
    """A flat `param_space` for Tune's variant generator (algorithm random or grid).

    Keys are the dotted space keys. grid (and, for algorithm grid, choice) -> grid_search,
    choice -> tune.choice, uniform/loguniform -> tune.uniform/loguniform, int -> randint /
    lograndint(low, high + 1). A conditional key K gets a hidden seeded draw under
    '_draw:K' and K = sample_from(gate): the draw when the condition holds, else None.
    With pbt, the mutated keys that are not searched start at their base value."""
    from ray import tune

    expand = spec.search.algorithm == "grid"
    by_key = {p.key: p for p in spec.params}
    out: dict[str, Any] = {}
    for p in spec.params:
        domain = _tune_domain(p, expand)
        if p.condition is None:
            out[p.key] = domain
            continue
        chain = []
        q = p
        while q.condition is not None:
            chain.append(q.condition)
            q = by_key[q.condition[0]]
        out[DRAW_PREFIX + p.key] = domain
        out[p.key] = tune.sample_from(_Gate(p.key, tuple(chain)))
    if spec.search.scheduler.type == "pbt":
        first = first_config(spec)
        for key in _pbt_keys(spec, first):
            if key not in out:
                out[key] = _get_dotted(first.to_dict(), key)
    return out


def grid_size(spec: SpaceFile) -> int:
    """Trials in one pass over the grid (1 without grids); Tune runs num_samples passes."""
    expand = spec.search.algorithm == "grid"
    size = 1
    for p in spec.params:
        if p.kind == "grid" or (expand and p.kind == "choice"):
            size *= len(p.values or ())
    return size


def _get_dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def first_config(spec: SpaceFile) -> Config:
    """The Config of the base with every searched key at its first value (or low bound).

    The config that validation built first: use it to size or check things before any
    trial exists (data files, time steps per epoch). `resolve(spec, {})` is an error."""
    values = _assignment(spec.params, {})
    return _build_config(spec.source, _tree_with(spec.base, spec.cases, values))


def _pbt_keys(spec: SpaceFile, first: Config) -> list[str]:
    """PBT_KEYS worth mutating: the clip threshold only when clipping can be on."""
    keys = ["train.lr"]
    mode = spec.param("train.clip.mode")
    mode_can_clip = (any(v != "none" for v in mode.values or ()) if mode is not None
                     else first.train.clip.mode != "none" or any(
                         k == "train.clip.mode" and v != "none"
                         for c in spec.cases for k, v in c.settings))
    if spec.param("train.clip.threshold") is not None or mode_can_clip:
        keys.append("train.clip.threshold")
    return keys


def pbt_mutations(spec: SpaceFile) -> dict[str, Any]:
    """`hyperparam_mutations` for PopulationBasedTraining (flat dotted keys).

    A searched key mutates over its own space range (uniform/loguniform -> tune domain,
    choice/grid -> the list, which PBT walks to a neighbour); a key that is not searched
    mutates log-uniformly over [base / 10, base * 10] (a percentile threshold capped at 100).
    PBT multiplies values by 0.8/1.2 between resamples and does not clamp them."""
    from ray import tune

    first = first_config(spec)
    out: dict[str, Any] = {}
    for key in _pbt_keys(spec, first):
        p = spec.param(key)
        if p is not None:
            if p.kind in ("choice", "grid"):
                out[key] = list(p.values or ())
            elif p.kind == "uniform":
                out[key] = tune.uniform(p.low, p.high)
            elif p.kind == "loguniform":
                out[key] = tune.loguniform(p.low, p.high)
            else:  # pragma: no cover - int is rejected for these float keys at load
                out[key] = tune.randint(p.low, p.high + 1)
            continue
        base = float(_get_dotted(first.to_dict(), key))
        if base <= 0:  # adaptive clipping may sit at k = 0
            out[key] = tune.uniform(0.0, 3.0)
            continue
        high = base * 10
        if key == "train.clip.threshold" and first.train.clip.mode == "percentile":
            high = min(high, 100.0)
        out[key] = tune.loguniform(base / 10, high)
    stages = max(len(chunks) for chunks in _chunk_options(spec, first))
    if stages > 1:
        # A jump to a later stage of the chunk schedule (longer chunks), never back.
        out["train.schedule.min_stage"] = list(range(stages))
    return out


def _chunk_options(spec: SpaceFile, first: Config) -> list[tuple[int, ...]]:
    p = spec.param("train.schedule.chunks")
    if p is None or not p.values:
        return [first.train.schedule.chunks]
    return [tuple(decode_value("train.schedule.chunks", v)) for v in p.values]


# ---------------------------------------------------------------------------- trial side


def resolve(spec: SpaceFile, sampled: Mapping[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A flat trial config -> (the merged, validated Config, the searched values used).

    `sampled` is what Tune hands the trainable: dotted keys, chunk schedules as strings,
    numpy scalars, None (Tune) or nothing (Optuna) for a conditional key whose condition
    fails, '_draw:' helper keys. The returned dict holds the decoded values actually used
    (absent conditionals removed, 'case' kept as the case name, chunk schedules as lists), in
    `searched_keys` order. Other config leaf keys in `sampled` (PBT mutations of keys that are
    not searched) are applied too; any other key is ignored."""
    source = spec.source
    values: dict[str, Any] = {}
    for p in spec.params:
        if p.condition is not None:
            parent, allowed = p.condition
            if parent not in values or values[parent] not in allowed:
                continue
        raw = sampled.get(p.key, _MISSING)
        if raw is _MISSING or (raw is None and None not in (p.values or ())):
            raise ConfigError(f"{source}: {p.key}: missing from the trial config; allowed: "
                              f"a value for every searched key whose condition holds")
        value = decode_value(p.key, raw)
        if p.key == CASE_KEY:
            if spec.case(value) is None:
                raise ConfigError(f"{source}: case: no case named {_short(value)}; allowed: "
                                  + ", ".join(c.name for c in spec.cases))
        else:
            value = _coerce(source, p.key, value, _LEAVES[p.key])
        values[p.key] = value
    for key, raw in sampled.items():
        if key in _LEAVES and spec.param(key) is None:
            values[key] = _coerce(source, key, decode_value(key, raw), _LEAVES[key])
    config = _build_config(source, _tree_with(spec.base, spec.cases, values))
    order = searched_keys(spec)
    order += [k for k in values if k not in order]
    return config, {k: _plain(values[k]) for k in order if k in values}


def searched_keys(spec: SpaceFile) -> list[str]:
    """Column order for tables: 'case' first, then the space keys in file (dependency)
    order, then (with pbt) the mutated keys that are not searched."""
    keys = [p.key for p in spec.params]
    keys.sort(key=lambda k: k != CASE_KEY)  # stable: only moves 'case' to the front
    if spec.search.scheduler.type == "pbt":
        keys += [k for k in _pbt_keys(spec, first_config(spec)) if k not in keys]
    return keys


def log_keys(spec: SpaceFile) -> list[str]:
    """Searched keys best plotted on a log axis: loguniform, int with log, positive numeric
    choices spanning at least two decades, and PBT's learning rate."""
    out = []
    for p in spec.params:
        if p.log:
            out.append(p.key)
        elif p.values is not None and all(_is_number(v) and v > 0 for v in p.values) \
                and max(p.values) >= 100 * min(p.values):
            out.append(p.key)
    if spec.search.scheduler.type == "pbt" and "train.lr" not in out:
        p = spec.param("train.lr")
        if p is None or p.log:
            out.append("train.lr")
    return out
