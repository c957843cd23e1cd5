"""The space file format: a YAML document -> a validated `SpaceFile`, and back.

A space file is a run config (sections ``data``, ``model``, ``train``: the fixed part of every
trial) plus ``space`` (the searched keys, see `params`), ``search`` (algorithm, sampler, metric,
scheduler, budget, start points) and ``resources`` (per trial, see `sections`). Everything is
checked once, in `load_space`, so that a typo fails in a second with one line naming the file
and the key, never an hour into a study. The special key ``case`` is a ``grid`` (or a
``choice``, which Optuna can sample) of named settings ``{name: x, train.optimizer: sgd, ...}``
merged into the config; the trial's ``case`` value is the name.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

from tuner.objectives import HELD_OUT_OBJECTIVES
from tuner.core import config as cfg
from tuner.core import yamlio
from tuner.core.config import Config, ConfigError
from tuner.core.yamlio import short
from tuner.space.params import Checker, SpaceParser, name_of
from tuner.space.sections import (
    SCHEDULER_KEYS,
    SearchSpec,
    parse_resources,
    parse_search,
    search_document,
)
from tuner.space.spec import (
    CASE_KEY,
    LEAVES,
    PBT_KEYS,
    Case,
    Param,
    SpaceFile,
    active,
    assignment,
    build_config,
    coerce,
    decode_value,
    plain,
    tree_with,
    variant_generator,
)

TOP_KEYS = ("name", "data", "model", "train", "space", "search", "resources")
_MISSING = object()


class _Loader(Checker):
    """Parses and validates one space document; every failure is `fail(key, what, allowed)`."""

    def __init__(self, source: str, default_name: str) -> None:
        super().__init__(source)
        self.default_name = default_name
        self.fixed: dict[str, Any] = {}  # config keys fixed by overrides
        self.sched_type_overridden = False
        self.sched_keys_overridden: set[str] = set()
        self.keep_case: Any = None  # case=NAME override

    def load(self, doc: Any, overrides: Sequence[str]) -> SpaceFile:
        doc = self.sections(doc)
        self.apply_overrides(doc, overrides)
        name = self.parse_name(doc.get("name", _MISSING))
        base = {sec: self.check_tree(sec, doc[sec], cls) for sec, cls in cfg.SECTIONS.items()}
        search, start_from = self.section("search", parse_search, doc["search"])
        resources = self.section("resources", parse_resources, doc["resources"])
        params, cases = SpaceParser(self.source, self.fixed).parse(doc["space"], base)
        if not params:
            self.fail(
                "space",
                "searches nothing",
                "at least one searched key (a dotted config key with a distribution, or case)",
            )
        self.cross_check(params, search)
        self.probe(base, params, cases)
        self.conditions_need_optuna(params, search)
        if self.keep_case is not None and isinstance(start_from, list):
            start_from = [
                p
                for p in start_from
                if not isinstance(p, Mapping) or p.get(CASE_KEY, self.keep_case) == self.keep_case
            ]
        points = StartPoints(self.source, base, params, cases).parse(start_from)
        search = dataclasses.replace(search, start_from=points)
        self.check_with_config(
            build_config(self.source, tree_with(base, cases, assignment(params, {}))), search
        )
        spec = SpaceFile(
            name=name,
            path=None,
            base=base,
            params=params,
            search=search,
            resources=resources,
            raw={},
            cases=cases,
        )
        return dataclasses.replace(spec, raw=document(spec))

    def section(self, name: str, parse: Any, raw: Any) -> Any:
        try:
            return parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def sections(self, doc: Any) -> dict[str, Any]:
        """Top-level keys known, each section a mapping (or absent/null)."""
        if doc is None or doc == {}:
            self.fail(
                "document",
                "empty",
                "a space file with at least a space section "
                "(an empty file would start a full-size default search)",
            )
        if not isinstance(doc, Mapping):
            raise ConfigError(
                f"{self.source}: must hold a mapping of sections "
                f"{', '.join(TOP_KEYS)}; got {type(doc).__name__}"
            )
        for key in doc:
            if key not in TOP_KEYS and key not in cfg.STUDY_RECORD:
                self.fail(
                    name_of(key), f"unknown section{cfg.suggest(str(key), TOP_KEYS)}", ", ".join(TOP_KEYS)
                )
        out: dict[str, Any] = {}
        if "name" in doc:
            out["name"] = doc["name"]
        for sec in TOP_KEYS[1:]:
            value = doc.get(sec)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                self.fail(sec, f"got {short(value)}", "a mapping")
            out[sec] = copy.deepcopy(dict(value))
        sched = out["search"].get("scheduler")
        if isinstance(sched, str):  # shorthand `scheduler: fifo`
            out["search"]["scheduler"] = {"type": sched}
        return out

    def apply_overrides(self, doc: dict[str, Any], overrides: Sequence[str]) -> None:
        """key=value strings: config keys become fixed (and leave the space), others set."""
        allowed = (
            "name, case, data.*, model.*, train.* (config keys), search.*, resources.*, "
            "space.<key> (a distribution, or null to drop it)"
        )
        for text in overrides:
            if not isinstance(text, str) or "=" not in text:
                self.fail(
                    f"override {short(text)}", "not of the form key=value", "key=value, e.g. train.lr=0.01"
                )
            key, _, value_text = text.partition("=")
            key = key.strip()
            try:
                value = yamlio.load_text(value_text) if value_text.strip() else None
            except yamlio.YamlError:
                value = value_text
            if key == "name":
                doc["name"] = value
            elif key == CASE_KEY:
                self.fix_case(doc["space"], value)
            elif key in LEAVES:
                self.fix_key(doc, key, value)
            elif (
                key.startswith(("search.", "resources.", "space."))
                and len(key.split(".")) >= 2
                and all(key.split("."))
            ):
                self.set_service_key(doc, key, value)
            else:
                near = cfg.suggest(key, [*LEAVES, "name", CASE_KEY])
                self.fail(name_of(key), f"unknown override key{near}", allowed)
        sched = doc["search"].get("scheduler")
        if self.sched_type_overridden and isinstance(sched, dict):
            # Switching type on the command line drops the file's keys the new type ignores.
            kind = sched.get("type")
            used = SCHEDULER_KEYS.get(kind) if isinstance(kind, str) else None
            if used is not None:
                for k in list(sched):
                    if k != "type" and k not in used and k not in self.sched_keys_overridden:
                        del sched[k]

    def fix_key(self, doc: dict[str, Any], key: str, value: Any) -> None:
        """Override of a config key: fixed everywhere, gone from the space and the cases."""
        cfg.set_dotted(doc, key, value)
        self.fixed[key] = value
        doc["space"].pop(key, None)
        case = doc["space"].get(CASE_KEY)
        if isinstance(case, Mapping):
            for entries in case.values():
                for entry in entries if isinstance(entries, list) else ():
                    if isinstance(entry, dict):
                        entry.pop(key, None)
        points = doc["search"].get("start_from")
        for point in points if isinstance(points, list) else ():
            if isinstance(point, dict):
                point.pop(key, None)

    def set_service_key(self, doc: dict[str, Any], key: str, value: Any) -> None:
        """Override of search.*, resources.* or space.<key>."""
        if key.startswith("space."):
            sub = key[len("space.") :]
            if value is None:
                doc["space"].pop(sub, None)
            else:
                doc["space"][sub] = value
            return
        if key == "search.scheduler" and isinstance(value, str):
            value = {"type": value}
        if key.startswith("search.scheduler.") and not isinstance(doc["search"].get("scheduler"), dict):
            doc["search"]["scheduler"] = {}
        cfg.set_dotted(doc, key, value)
        if key == "search.scheduler.type":
            self.sched_type_overridden = True
        elif key.startswith("search.scheduler."):
            self.sched_keys_overridden.add(key.split(".", 2)[2])

    def fix_case(self, space: dict[str, Any], name: Any) -> None:
        """Override case=NAME: keep only that named case."""
        case = space.get(CASE_KEY)
        if not isinstance(case, Mapping) or len(case) != 1:
            self.fail(
                CASE_KEY,
                "overridden, but the space has no valid case entry",
                "case=<name> only with a case grid in the space",
            )
        kind, entries = next(iter(case.items()))
        names = (
            [e.get("name") for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []
        )
        if name not in names:
            self.fail(
                CASE_KEY,
                f"no case named {short(name)}{cfg.suggest(str(name), [str(n) for n in names])}",
                ", ".join(map(str, names)) or "a case name",
            )
        space[CASE_KEY] = {kind: [e for e in entries if isinstance(e, Mapping) and e.get("name") == name]}
        self.keep_case = name  # start points of the other cases are dropped

    def parse_name(self, value: Any) -> str:
        if value is _MISSING:
            value = self.default_name
        bad = (
            not isinstance(value, str)
            or not value.strip()
            or "/" in value
            or "\\" in value
            or ".." in value
            or value.strip() == "."
            or not value.isprintable()
        )
        if bad:
            self.fail("name", f"got {short(value)}", "a non-empty study name without '/', '\\' or '..'")
        return value

    def check_tree(self, prefix: str, raw: Any, cls: type) -> dict[str, Any]:
        """A config section: known keys (nearest name suggested), each value coerced. Range
        checks wait for `probe`, which sees the searched values too."""
        if not isinstance(raw, Mapping):
            self.fail(prefix, f"got {short(raw)}", "a mapping of keys")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in names:
                self.fail(
                    f"{prefix}.{name_of(key)}", f"unknown key{cfg.suggest(str(key), names)}", ", ".join(names)
                )
            tp = hints[key]
            if dataclasses.is_dataclass(tp):
                out[key] = self.check_tree(f"{prefix}.{key}", {} if value is None else value, tp)
            else:
                out[key] = plain(coerce(self.source, f"{prefix}.{key}", value, tp))
        return out

    def cross_check(self, params: Sequence[Param], search: SearchSpec) -> None:
        sched = search.scheduler
        if sched.type == "pbt" and search.algorithm == "optuna":
            self.fail(
                "search.scheduler.type",
                "pbt takes no searcher, and search.algorithm is optuna",
                "search.algorithm random or grid with pbt",
            )
        for p in params:
            if p.kind == "grid" and search.algorithm == "optuna":
                self.fail(
                    f"space.{p.key}",
                    "grid needs Tune's own variant generator, and search.algorithm is optuna",
                    "search.algorithm grid or random, or a choice distribution",
                )
        if (
            sched.type == "pbt"
            and sched.time_attr == "training_iteration"
            and sched.perturbation_interval % search.checkpoint_every != 0
        ):
            self.fail(
                "search.scheduler.perturbation_interval",
                f"got {sched.perturbation_interval:g}, not a multiple of "
                f"search.checkpoint_every = {search.checkpoint_every}",
                "a multiple of checkpoint_every, so exploits find a fresh checkpoint",
            )
        if search.metric == "time_to_target" and search.target_loss is None:
            self.fail(
                "search.target_loss", "required by metric time_to_target", "a number (the loss to reach)"
            )

    def conditions_need_optuna(self, params: Sequence[Param], search: SearchSpec) -> None:
        """`if:` has one implementation, Optuna's define-by-run: refused where Tune's variant
        generator runs the search (grids, pbt)."""
        if not variant_generator(search, params):
            return
        sched = search.scheduler
        why = (
            "pbt"
            if sched.type == "pbt"
            else "search.algorithm grid"
            if search.algorithm == "grid"
            else "a grid entry"
        )
        pbt = sched.type == "pbt"
        gated = sorted(
            (p for p in params if p.condition is not None),
            key=lambda p: (not (pbt and p.key in PBT_KEYS), p.kind != "choice"),
        )
        for p in gated:
            self.fail(
                f"space.{p.key}.if",
                f"{why} runs Tune's variant generator, which takes "
                "no conditions"
                + (" (pbt mutates this key in every trial)" if pbt and p.key in PBT_KEYS else ""),
                "an unconditional entry, case entries for dependent settings, or "
                "search.algorithm optuna/random without grids and pbt",
            )

    def probe(self, base: Mapping[str, Any], params: tuple[Param, ...], cases: tuple[Case, ...]) -> None:
        """Build a Config from base + first values, then once per listed value or bound
        (its condition chain made true), so fixed and searched values fail now."""
        by_key = {p.key: p for p in params}
        build_config(self.source, tree_with(base, cases, assignment(params, {})))
        for p in params:
            for value in p.candidates:
                forced = {p.key: value}
                q = p
                while q.condition is not None:
                    parent, allowed = q.condition
                    forced.setdefault(parent, allowed[0])
                    q = by_key[parent]
                build_config(self.source, tree_with(base, cases, assignment(params, forced)))

    def check_with_config(self, first: Config, search: SearchSpec) -> None:
        if search.metric in HELD_OUT_OBJECTIVES and not (
            first.data.val_fraction > 0 or first.data.val_series > 0
        ):
            self.fail(
                "search.metric",
                f"{search.metric} needs held-out data, and data.val_fraction and data.val_series are 0",
                f"data.val_fraction > 0 or data.val_series > 0 with {search.metric}",
            )


class StartPoints(Checker):
    """`search.start_from`: each point a complete, valid setting of the searched keys."""

    def __init__(
        self, source: str, base: Mapping[str, Any], params: tuple[Param, ...], cases: tuple[Case, ...]
    ) -> None:
        super().__init__(source)
        self.base, self.params, self.cases = base, params, cases

    def parse(self, raw: Any) -> tuple[dict[str, Any], ...]:
        if raw is None:
            return ()
        shape = "a list of settings {searched.key: value, ...}"
        if not isinstance(raw, list):
            self.fail("search.start_from", f"got {short(raw)}", shape)
        return tuple(self.point(i, item) for i, item in enumerate(raw))

    def point(self, i: int, item: Any) -> dict[str, Any]:
        where = f"search.start_from[{i}]"
        if not isinstance(item, Mapping) or not item:
            self.fail(where, f"got {short(item)}", "a setting {searched.key: value, ...}")
        searched = {p.key: p for p in self.params}
        for key in item:
            if key not in searched:
                known = key in LEAVES
                self.fail(
                    f"{where}.{name_of(key)}",
                    "not searched" if known else f"unknown key{cfg.suggest(str(key), list(searched))}",
                    "the searched keys: " + ", ".join(searched),
                )
        values: dict[str, Any] = {}
        for p in self.params:
            key = f"{where}.{p.key}"
            if not active(p, values):
                if p.key in item:
                    parent, allowed = p.condition
                    self.fail(
                        key,
                        f"not used when {parent} is {short(plain(values.get(parent)))}",
                        f"only with {parent} in {', '.join(map(str, plain(allowed)))}",
                    )
                continue
            if p.key not in item:
                self.fail(
                    key,
                    "missing",
                    "a value for every searched key whose condition "
                    "holds (a start point is a complete setting)",
                )
            raw = decode_value(p.key, item[p.key])
            value = raw if p.key == CASE_KEY else coerce(self.source, key, raw, LEAVES[p.key])
            if not p.contains(value):
                domain = (
                    ", ".join(str(plain(v)) for v in p.values)
                    if p.values is not None
                    else f"[{p.low}, {p.high}]"
                )
                self.fail(key, f"got {short(plain(value))}, outside its {p.kind}", domain)
            values[p.key] = value
        build_config(f"{self.source}: {where}", tree_with(self.base, self.cases, values))
        return {k: plain(v) for k, v in values.items()}


def document(spec: SpaceFile) -> dict[str, Any]:
    """The resolved document of a SpaceFile (loadable again by `load_space`)."""
    return {
        "name": spec.name,
        **{sec: copy.deepcopy(spec.base[sec]) for sec in cfg.SECTIONS},
        "space": {p.key: _param_document(p, spec.cases) for p in spec.params},
        "search": search_document(spec.search),
        "resources": dataclasses.asdict(spec.resources),
    }


def _param_document(p: Param, cases: Sequence[Case]) -> dict[str, Any]:
    """A Param back as its YAML entry."""
    if p.key == CASE_KEY:
        return {p.kind: [{"name": c.name, **{k: plain(v) for k, v in c.settings}} for c in cases]}
    out: dict[str, Any] = {p.kind: plain(p.values) if p.values is not None else [p.low, p.high]}
    if p.kind == "int" and p.log:
        out["log"] = True
    if p.condition is not None:
        out["if"] = {p.condition[0]: plain(p.condition[1])}
    return out


def space_from_dict(
    doc: Any, source: str = "<space>", overrides: Sequence[str] = (), path: Path | None = None
) -> SpaceFile:
    """Validate a space document already parsed from YAML; `source` names it in errors."""
    default_name = path.stem if path is not None else "study"
    spec = _Loader(source, default_name).load(doc, overrides)
    return dataclasses.replace(spec, path=path)


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> SpaceFile:
    """Read, override and validate a space file.

    Overrides are 'key=value' (value parsed as YAML): a config key (data./model./train.) is
    fixed to the value and leaves the space and the start points (a condition on it is
    settled: the gated key is kept unconditionally or dropped); search.*, resources.*, name
    set those; space.<key>={distribution} replaces an entry (null drops it); case=NAME keeps
    one named case. Every failure is a ConfigError of one line: '<file>: <key>: <what>;
    allowed: <what>'."""
    p = Path(path)
    try:
        doc = yamlio.read_mapping(p)
    except yamlio.YamlError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return space_from_dict(doc, source=str(path), overrides=overrides, path=p)
