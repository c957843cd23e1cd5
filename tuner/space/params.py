"""The `space:` section: each entry -> a `Param` holding an Optuna distribution; `if:` checked,
settled and ordered; the named settings of `case`.

Entry shapes: ``choice: [..]``, ``uniform: [low, high]``, ``loguniform: [low, high]``,
``int: [low, high]`` (inclusive; optional ``log: true``), ``grid: [..]``, each with an optional
``if: {other.key: [values]}``. Optuna's distributions check their own bounds (``low <= high``,
``low > 0`` for a log scale); this module adds what they cannot know: the key's type, finite
numbers, values valid for the config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn
from collections.abc import Mapping, Sequence

from optuna.distributions import FloatDistribution, IntDistribution

from tuner.core import config as cfg
from tuner.core.config import ConfigError
from tuner.core.yamlio import number, short
from tuner.space.spec import (
    CASE_KEY,
    CHUNKS_KEY,
    DISTRIBUTIONS,
    LEAVES,
    Case,
    Param,
    categorical,
    coerce,
    key_type,
    plain,
    strip_optional,
    type_name,
)


def name_of(key: Any) -> str:
    """A key as text for a one-line message (repr when it is odd, e.g. holds a newline)."""
    if isinstance(key, str) and key.isprintable() and key.strip() == key and key:
        return key
    return short(key)


def is_finite_number(value: Any) -> bool:
    """A number that fits a float and is not inf/nan (huge YAML ints overflow float())."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return abs(float(value)) < float("inf")
    except OverflowError:
        return False


class Checker:
    """Knows the file it checks; `fail` raises its one-line ConfigError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str, allowed: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {key}: {what}; allowed: {allowed}")


class SpaceParser(Checker):
    """Parses the `space:` section; `fixed` holds the config keys fixed by overrides."""

    def __init__(self, source: str, fixed: Mapping[str, Any]) -> None:
        super().__init__(source)
        self.fixed = fixed

    def parse(
        self, raw: Mapping[str, Any], base: Mapping[str, Any]
    ) -> tuple[tuple[Param, ...], tuple[Case, ...]]:
        parsed: dict[str, Param] = {}
        cases: tuple[Case, ...] = ()
        for key, entry in raw.items():
            if key == CASE_KEY:
                parsed[CASE_KEY], cases = self.parse_case(entry)
                continue
            if not isinstance(key, str) or key not in LEAVES:
                self.fail(
                    f"space.{name_of(key)}",
                    f"unknown key{cfg.suggest(str(key), [*LEAVES, CASE_KEY])}",
                    "a dotted config key such as train.lr, or case",
                )
            parsed[key] = self.parse_param(key, entry)
        # A case may not set a searched key: which value would win?
        for case in cases:
            for key, _ in case.settings:
                if key in parsed:
                    self.fail(
                        f"space.case.{case.name}.{key}",
                        "also searched under space",
                        "a key that is either searched or set by the cases, not both",
                    )
        params = self.resolve_conditions(parsed)
        self.check_chunks(params, base)
        return params, cases

    def parse_param(self, key: str, entry: Any) -> Param:
        where = f"space.{key}"
        shapes = "a mapping with one of " + ", ".join(DISTRIBUTIONS) + " (plus optional if, log)"
        if not isinstance(entry, Mapping):
            self.fail(where, f"got {short(entry)}", shapes)
        for k in entry:
            if k not in (*DISTRIBUTIONS, "if", "log"):
                self.fail(
                    where,
                    f"unknown distribution {name_of(k)}{cfg.suggest(str(k), [*DISTRIBUTIONS, 'if', 'log'])}",
                    shapes,
                )
        dists = [k for k in entry if k in DISTRIBUTIONS]
        if len(dists) != 1:
            self.fail(where, f"has {len(dists)} distributions", shapes)
        kind = dists[0]
        log = entry.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{where}.log", f"got {short(log)}", "true or false")
        if log and kind != "int":
            self.fail(
                f"{where}.log", f"not used by {kind}", "log with int; use loguniform for log-scale numbers"
            )
        condition = self.parse_if(key, entry["if"]) if "if" in entry else None
        if kind == "grid" and condition is not None:
            self.fail(
                where,
                "a grid cannot have if (it would repeat trials)",
                "an unconditional grid, or case entries for dependent settings",
            )
        if kind in ("choice", "grid"):
            values = self.parse_values(where, key, entry[kind], key_type(key))
            return Param(key, categorical(key, values), grid=kind == "grid", condition=condition)
        return Param(key, self.numeric(where, key, kind, entry[kind], log), condition=condition)

    def numeric(self, where: str, key: str, kind: str, arg: Any, log: bool) -> Any:
        """uniform/loguniform/int -> Float/IntDistribution (which check low <= high, log > 0)."""
        inner = strip_optional(key_type(key))
        integer = kind == "int"
        if integer and inner is not int:
            self.fail(
                where,
                f"int needs an integer key, {key} is {type_name(inner)}",
                "uniform/loguniform for real keys, choice or grid for others",
            )
        if not integer and inner is not float:
            self.fail(
                where,
                f"{kind} needs a real-valued key, {key} is {type_name(inner)}",
                "int for integer keys, choice or grid for others",
            )
        low, high = self.bounds(where, kind, arg, integer)
        log = log or kind == "loguniform"
        try:
            if integer:
                return IntDistribution(low, high, log=log)
            return FloatDistribution(low, high, log=log)
        except ValueError as exc:
            self.fail(
                where,
                f"{kind} {exc}".rstrip("."),
                f"[low, high] with low <= high{' and low > 0' if log else ''}"
                + (" (use uniform to include 0)" if kind == "loguniform" else "")
                + (" (low >= 1 with log: true)" if integer and log else ""),
            )

    def parse_values(self, where: str, key: str, arg: Any, tp: Any) -> tuple:
        if not isinstance(arg, list) or not arg:
            self.fail(where, f"got {short(arg)}", "a non-empty list of values")
        values = []
        for v in arg:
            value = coerce(self.source, key, v, tp)
            if isinstance(value, tuple) and not value:
                self.fail(where, "got an empty chunk schedule []", "non-empty lists of integers >= 1")
            if value in values:
                self.fail(where, f"lists {short(plain(value))} twice", "distinct values")
            values.append(value)
        return tuple(values)

    def bounds(self, where: str, kind: str, arg: Any, integer: bool) -> tuple[Any, Any]:
        what = "integers" if integer else "numbers"
        shape = f"[low, high] with two finite {what}, low <= high" + (" (both inclusive)" if integer else "")
        if not isinstance(arg, list) or len(arg) != 2:
            self.fail(where, f"{kind} got {short(arg)}", shape)
        arg = [number(v) for v in arg]
        for v in arg:
            if not is_finite_number(v) or (integer and v != int(v)):
                wanted = "an integer" if integer else "a finite number"
                self.fail(where, f"{kind} bound {short(v)} is not {wanted}", shape)
        if integer:
            return int(arg[0]), int(arg[1])
        return float(arg[0]), float(arg[1])

    def parse_if(self, key: str, raw: Any) -> tuple[str, tuple]:
        where = f"space.{key}.if"
        shape = "one mapping entry {other.key: [allowed values]}"
        if not isinstance(raw, Mapping) or len(raw) != 1:
            self.fail(where, f"got {short(raw)}", shape)
        parent, allowed = next(iter(raw.items()))
        if not isinstance(parent, str):
            self.fail(where, f"names {short(parent)}", "a key of the space")
        if not isinstance(allowed, list) or not allowed:
            self.fail(f"{where}.{name_of(parent)}", f"got {short(allowed)}", "a non-empty list of values")
        return parent, tuple(allowed)  # raw values: coerced once the parent is known

    def parse_case(self, entry: Any) -> tuple[Param, tuple[Case, ...]]:
        where = f"space.{CASE_KEY}"
        shape = "{grid: [{name: ..., dotted.key: value, ...}, ...]} (or choice)"
        if not isinstance(entry, Mapping) or len(entry) != 1:
            self.fail(where, f"got {short(entry)}", shape)
        kind, entries = next(iter(entry.items()))
        if kind not in ("grid", "choice"):
            self.fail(
                where,
                f"unknown distribution {name_of(kind)}{cfg.suggest(str(kind), ['grid', 'choice'])}",
                shape,
            )
        if not isinstance(entries, list) or not entries:
            self.fail(where, f"got {short(entries)}", "a non-empty list of named settings")
        cases: list[Case] = []
        for i, item in enumerate(entries):
            if not isinstance(item, Mapping):
                self.fail(f"{where}[{i}]", f"got {short(item)}", shape)
            name = item.get("name")
            if not isinstance(name, str) or not name.strip() or not name.isprintable():
                self.fail(f"{where}[{i}].name", f"got {short(name)}", "a non-empty string")
            if any(c.name == name for c in cases):
                self.fail(f"{where}.{name}", "named twice", "distinct case names")
            settings = []
            for key, value in item.items():
                if key == "name":
                    continue
                if not isinstance(key, str) or key not in LEAVES:
                    self.fail(
                        f"{where}.{name}.{name_of(key)}",
                        f"unknown key{cfg.suggest(str(key), list(LEAVES))}",
                        "dotted config keys such as train.optimizer",
                    )
                settings.append((key, coerce(self.source, key, value, LEAVES[key])))
            cases.append(Case(name, tuple(settings)))
        names = [c.name for c in cases]
        return Param(CASE_KEY, categorical(CASE_KEY, names), grid=kind == "grid"), tuple(cases)

    def settle_fixed(self, parsed: dict[str, Param]) -> dict[str, Param]:
        """Conditions on keys fixed by an override hold (kept, unconditional) or never hold
        (dropped); a key whose parent was dropped is dropped too."""
        params = dict(parsed)
        changed = True
        while changed:
            changed = False
            for key, p in list(params.items()):
                if p.condition is None:
                    continue
                parent, allowed = p.condition
                if parent in self.fixed and parent not in params:
                    tp = key_type(parent)
                    fixed = coerce(self.source, parent, self.fixed[parent], tp)
                    if any(coerce(self.source, parent, a, tp) == fixed for a in allowed):
                        params[key] = dataclasses.replace(p, condition=None)
                    else:
                        del params[key]
                    changed = True
                elif parent in parsed and parent not in params:
                    del params[key]
                    changed = True
        return params

    def resolve_conditions(self, parsed: dict[str, Param]) -> tuple[Param, ...]:
        """Check every `if`, settle those on override-fixed keys, order parents first."""
        params = self.settle_fixed(parsed)
        for key, p in list(params.items()):
            if p.condition is None:
                continue
            parent, allowed = p.condition
            where = f"space.{key}.if"
            if parent == key:
                self.fail(where, "names the key itself", "another key of the space")
            if parent not in params:
                self.fail(
                    where,
                    f"names {name_of(parent)}, which is not searched{cfg.suggest(parent, list(params))}",
                    ", ".join(k for k in params if k != key) or "a searched key",
                )
            parent_p = params[parent]
            if parent_p.kind in ("uniform", "loguniform"):
                self.fail(
                    where,
                    f"{parent} is continuous ({parent_p.kind})",
                    "a key searched with choice, grid or int",
                )
            if parent_p.values is not None:
                domain = ", ".join(str(plain(v)) for v in parent_p.values)
            else:
                domain = f"integers in [{parent_p.low}, {parent_p.high}]"
            coerced = []
            for a in allowed:
                try:
                    value = coerce(self.source, parent, a, key_type(parent))
                except ConfigError:
                    self.fail(f"{where}.{parent}", f"value {short(a)} is not a valid {parent}", domain)
                if not parent_p.contains(value):
                    self.fail(f"{where}.{parent}", f"value {short(plain(value))} never occurs", domain)
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
                self.fail(
                    f"space.{pending[0].key}.if",
                    f"conditions form a cycle ({cycle})",
                    "conditions that can be ordered (no key depends on itself)",
                )
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
                self.fail(
                    f"space.{CHUNKS_KEY}",
                    f"schedule {list(schedule)} has chunk counts outside [1, data.length = {length}]",
                    f"chunk counts from 1 to data.length = {length}",
                )
