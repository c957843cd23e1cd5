"""Trial side: a flat trial config (what Tune hands the trainable) -> the full, validated Config.

Trial configs are FLAT: keys are the dotted config keys (``"train.lr"``, ``"case"``), exactly as
written under ``space:``.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from tuner.core.config import Config, ConfigError
from tuner.core.yamlio import short
from tuner.space.spec import (
    CASE_KEY,
    LEAVES,
    SpaceFile,
    active,
    assignment,
    build_config,
    coerce,
    decode_value,
    plain,
    tree_with,
)

_MISSING = object()


def first_config(spec: SpaceFile) -> Config:
    """The Config of the base with every searched key at its first value (or low bound).

    The config that validation built first: use it to size or check things before any
    trial exists (data files, time steps per epoch). `resolve(spec, {})` is an error."""
    return build_config(spec.source, tree_with(spec.base, spec.cases, assignment(spec.params, {})))


def resolve(spec: SpaceFile, sampled: Mapping[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A flat trial config -> (the merged, validated Config, the searched values used).

    `sampled` is what Tune hands the trainable: dotted keys, chunk schedules as strings,
    numpy scalars, nothing for a conditional key whose condition fails. The returned dict
    holds the decoded values actually used (absent conditionals removed, 'case' kept as the
    case name, chunk schedules as lists), in `searched_keys` order. Other config leaf keys in
    `sampled` (PBT mutations of keys that are not searched) are applied too; any other key is
    ignored."""
    source = spec.source
    values: dict[str, Any] = {}
    for p in spec.params:
        if not active(p, values):
            continue
        raw = sampled.get(p.key, _MISSING)
        if raw is _MISSING or (raw is None and None not in (p.values or ())):
            raise ConfigError(
                f"{source}: {p.key}: missing from the trial config; allowed: "
                f"a value for every searched key whose condition holds"
            )
        value = decode_value(p.key, raw)
        if p.key == CASE_KEY:
            if spec.case(value) is None:
                raise ConfigError(
                    f"{source}: case: no case named {short(value)}; allowed: "
                    + ", ".join(c.name for c in spec.cases)
                )
        else:
            value = coerce(source, p.key, value, LEAVES[p.key])
        values[p.key] = value
    for key, raw in sampled.items():
        if key in LEAVES and spec.param(key) is None:
            values[key] = coerce(source, key, decode_value(key, raw), LEAVES[key])
    config = build_config(source, tree_with(spec.base, spec.cases, values))
    order = searched_keys(spec)
    order += [k for k in values if k not in order]
    return config, {k: plain(values[k]) for k in order if k in values}


def searched_keys(spec: SpaceFile) -> list[str]:
    """Column order for tables: 'case' first, then the space keys in file (dependency)
    order, then (with pbt) the mutated keys that are not searched."""
    keys = [p.key for p in spec.params]
    keys.sort(key=lambda k: k != CASE_KEY)  # stable: only moves 'case' to the front
    if spec.search.scheduler.type == "pbt":
        from tuner.space.tune_space import pbt_keys

        keys += [k for k in pbt_keys(spec, first_config(spec)) if k not in keys]
    return keys
