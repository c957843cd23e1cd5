"""Tests of tuner.space: space files -> validation, Optuna define-by-run, Tune domains, resolve.

Mostly pure Python; Optuna studies run in memory and Tune's variant generator runs without
starting Ray. One test drives a real OptunaSearch (also without a Ray cluster)."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.core.config import Config, ConfigError
from optuna.distributions import CategoricalDistribution, FloatDistribution

from tuner.space import (
    Param,
    SpaceFile,
    first_config,
    load_space,
    optuna_space,
    pbt_mutations,
    resolve,
    searched_keys,
    space_from_dict,
    start_points,
    tune_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

BASE: dict[str, Any] = {
    "name": "t",
    "data": {"n_series": 2, "length": 300, "window": 8},
    "model": {"dense_units": 4, "lstm_units": 4},
    "train": {"max_epochs": 2},
    "space": {
        "train.optimizer": {"choice": ["sgd", "rmsprop", "adam"]},
        "train.lr": {"loguniform": [1.0e-3, 1.0e-1]},
        "train.momentum": {"uniform": [0.0, 0.9], "if": {"train.optimizer": ["sgd", "rmsprop"]}},
        "train.clip.mode": {"choice": ["none", "norm"]},
        "train.clip.threshold": {"loguniform": [0.5, 5.0], "if": {"train.clip.mode": ["norm"]}},
        "train.schedule.chunks": {"choice": [[1], [4, 1], [100, 10, 1]]},
        "train.schedule.patience": {"int": [5, 6]},
    },
    "search": {"num_samples": 2},
}


def write(tmp_path: Path, doc: Any, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def spec_of(tmp_path: Path, doc: dict[str, Any], overrides: list[str] = ()) -> SpaceFile:
    return load_space(write(tmp_path, doc), overrides)


def with_patch(*patches: tuple[tuple[str, ...], Any]) -> dict[str, Any]:
    """BASE with each (path, value) set; value DROP deletes the key."""
    doc = copy.deepcopy(BASE)
    for path, value in patches:
        node = doc
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if value is DROP:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return doc


DROP = object()


def ask_many(
    spec: SpaceFile, n: int, seed: int = 0, sampler: type = optuna.samplers.TPESampler
) -> list[dict[str, Any]]:
    """n trials' params from a real in-memory Optuna study driven by optuna_space."""
    study = optuna.create_study(sampler=sampler(seed=seed))
    space = optuna_space(spec.params)
    out = []
    rng = np.random.default_rng(seed)
    for _ in range(n):
        trial = study.ask()
        space(trial)
        out.append(dict(trial.params))
        study.tell(trial, float(rng.random()))
    return out


def tune_doc() -> dict[str, Any]:
    """BASE without its conditionals, plus a grid: a space for Tune's variant generator."""
    doc = copy.deepcopy(BASE)
    del doc["space"]["train.momentum"], doc["space"]["train.clip.threshold"]
    doc["space"]["train.seed"] = {"grid": [0]}
    doc["search"]["algorithm"] = "random"
    return doc


def tune_variants(spec: SpaceFile, passes: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Trial configs from Tune's own variant generator (no Ray needed), seeded."""
    from ray.tune.search.variant_generator import generate_variants

    rng = np.random.default_rng(seed)
    space = tune_space(spec)
    return [
        variant["config"]
        for _ in range(passes)
        for _, variant in generate_variants({"config": space}, random_state=rng)
    ]


# ---------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_load_space_shipped_files_load(path: Path) -> None:
    spec = load_space(path)
    # every shipped file validates, is named after itself and searches something
    assert spec.name == path.stem and spec.params
    # its first point resolves to a valid Config (grid files have no Optuna point to ask for)
    if spec.search.algorithm == "optuna":
        config, _ = resolve(spec, ask_many(spec, 1)[0])
    else:
        config = first_config(spec)
    assert isinstance(config, Config)


def test_load_space_shipped_names_expected_files() -> None:
    # the three space files the brief asks for are shipped
    assert {p.stem for p in SHIPPED} >= {"full", "smoke", "schedule"}


def test_load_space_full_asha_grace_is_a_few_epochs() -> None:
    spec = load_space(ROOT / "search_spaces" / "full.yaml")
    config, _ = resolve(spec, ask_many(spec, 1)[0])
    epoch = config.data.n_series * (config.data.length - 1)
    # ASHA's grace period on timesteps covers 2 to 5 epochs
    assert spec.search.scheduler.time_attr == "timesteps"
    assert 2 * epoch <= spec.search.scheduler.grace_period <= 5 * epoch


def test_load_space_schedule_fixes_optimizer() -> None:
    spec = load_space(ROOT / "search_spaces" / "schedule.yaml")
    config, clean = resolve(spec, ask_many(spec, 1)[0])
    # the schedule study searches only the chunk schedule and patience
    assert set(clean) == {"train.schedule.chunks", "train.schedule.patience"}
    # with adam at lr 0.01 and global-norm clipping at 1.0
    assert (config.train.optimizer, config.train.lr) == ("adam", 0.01)
    assert (config.train.clip.mode, config.train.clip.threshold) == ("norm", 1.0)


def test_load_space_smoke_is_tiny() -> None:
    spec = load_space(ROOT / "search_spaces" / "smoke.yaml")
    config, _ = resolve(spec, ask_many(spec, 1)[0])
    # smoke: 4 series of 300 steps, 4 epochs, 4 trials: seconds on a CPU
    assert (config.data.n_series, config.data.length, config.train.max_epochs) == (4, 300, 4)
    assert spec.search.num_samples == 4 and spec.search.max_concurrent == 2


# ---------------------------------------------------------------------------- distributions


def test_optuna_space_int_bounds_inclusive(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    seen = {t["train.schedule.patience"] for t in ask_many(spec, 60)}
    # int: [5, 6] is inclusive: Optuna suggests both ends
    assert seen == {5, 6}


def test_tune_space_int_bounds_inclusive(tmp_path: Path) -> None:
    from ray import tune

    spec = spec_of(tmp_path, tune_doc())
    # a grid entry makes Tune's variant generator run the search
    assert spec.uses_variant_generator
    domain = tune_space(spec)["train.schedule.patience"]
    # int: [5, 6] is inclusive in Tune too (space.py passes high + 1)
    assert set(int(v) for v in domain.sample(size=400)) == {5, 6}
    # the quirk being corrected: Tune's randint excludes its upper bound
    assert set(int(v) for v in tune.randint(5, 6).sample(size=400)) == {5}


def test_tune_space_int_log_bounds_inclusive(tmp_path: Path) -> None:
    doc = tune_doc()
    doc["space"]["train.schedule.patience"] = {"int": [1, 3], "log": True}
    spec = spec_of(tmp_path, doc)
    domain = tune_space(spec)["train.schedule.patience"]
    # int with log: true is inclusive in Tune (lograndint(low, high + 1))
    assert set(int(v) for v in domain.sample(size=600)) == {1, 2, 3}
    # and in Optuna
    spec = spec_of(tmp_path, with_patch((("space", "train.schedule.patience"), {"int": [1, 3], "log": True})))
    assert {t["train.schedule.patience"] for t in ask_many(spec, 60)} == {1, 2, 3}


def test_optuna_space_loguniform_within_positive_bounds(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    lrs = [t["train.lr"] for t in ask_many(spec, 40)]
    # loguniform samples stay in [low, high], all > 0
    assert all(1e-3 <= lr <= 1e-1 for lr in lrs)
    # the parameter is Optuna's own log-scaled float distribution, bounds as written
    assert spec.param("train.lr").distribution == FloatDistribution(1e-3, 1e-1, log=True)


def test_optuna_space_chunk_schedules_round_trip(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    trials = ask_many(spec, 60)
    encoded = {t["train.schedule.chunks"] for t in trials}
    # Optuna carries chunk schedules as comma-joined strings (lists are not categorical)
    assert encoded == {"1", "4,1", "100,10,1"}
    decoded = set()
    for t in trials:
        config, clean = resolve(spec, t)
        decoded.add(config.train.schedule.chunks)
        # resolve decodes them back to the listed schedule, a list in the clean dict
        assert list(config.train.schedule.chunks) == clean["train.schedule.chunks"]
    assert decoded == {(1,), (4, 1), (100, 10, 1)}


def test_optuna_space_conditional_absent_when_condition_fails(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    trials = ask_many(spec, 120)
    for t in trials:
        # momentum is suggested exactly when the optimizer is sgd or rmsprop
        assert ("train.momentum" in t) == (t["train.optimizer"] in ("sgd", "rmsprop"))
        # the clip threshold exactly when clipping is on
        assert ("train.clip.threshold" in t) == (t["train.clip.mode"] == "norm")
    # both branches happened
    assert {("train.momentum" in t) for t in trials} == {True, False}


def test_optuna_space_conditional_chain(tmp_path: Path) -> None:
    doc = with_patch(
        (("space", "train.nesterov"), {"choice": [False, True], "if": {"train.momentum": [0.0]}}),
        (("space", "train.momentum"), {"choice": [0.0, 0.5], "if": {"train.optimizer": ["sgd"]}}),
    )
    spec = spec_of(tmp_path, doc)
    for t in ask_many(spec, 60):
        # a key gated on a conditional key is present only when the whole chain holds
        assert ("train.nesterov" in t) == (t.get("train.momentum") == 0.0)


def test_load_space_random_is_optuna_random_sampler(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE, ["search.algorithm=random"])
    # algorithm random without grids or pbt is sampled by Optuna (define-by-run), with if:
    assert not spec.uses_variant_generator
    trials = ask_many(spec, 150, sampler=optuna.samplers.RandomSampler)
    for t in trials:
        # a conditional key is present exactly when its condition holds
        assert ("train.momentum" in t) == (t["train.optimizer"] in ("sgd", "rmsprop"))
        _, clean = resolve(spec, t)
        assert ("train.momentum" in clean) == ("train.momentum" in t)
    assert {("train.momentum" in t) for t in trials} == {True, False}


def test_optuna_space_random_sampler_is_seeded(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE, ["search.algorithm=random"])
    rs = optuna.samplers.RandomSampler
    # the same sampler seed gives the same trials, conditional keys included
    assert ask_many(spec, 5, 3, rs) == ask_many(spec, 5, 3, rs)
    assert ask_many(spec, 5, 3, rs) != ask_many(spec, 5, 4, rs)


def test_resolve_makes_numpy_scalars_plain(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, tune_doc())
    config = tune_variants(spec)[0] | {"train.schedule.patience": np.int64(5), "train.lr": np.float64(0.01)}
    # numpy scalars (Tune domains' raw samples; np.int64 is not an int) become plain Python
    _, clean = resolve(spec, config)
    assert type(clean["train.schedule.patience"]) is int and type(clean["train.lr"]) is float
    yaml.safe_dump(clean)


# ---------------------------------------------------------------------------- grids and cases


CASES = {
    "grid": [
        {"name": "sgd-baseline", "train.optimizer": "sgd", "train.lr": 0.01, "train.momentum": 0.9},
        {
            "name": "adam-clip",
            "train.optimizer": "adam",
            "train.lr": 0.001,
            "train.clip.mode": "norm",
            "train.clip.threshold": 1.0,
        },
    ]
}


def ablation_doc() -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["space"] = {
        "case": CASES,
        "train.seed": {"grid": [0, 1, 2]},
        "train.schedule.chunks": {"choice": [[1], [4, 1]]},
        "train.schedule.patience": {"int": [5, 6]},
    }
    doc["search"] = {"algorithm": "grid", "num_samples": 1}
    return doc


def test_tune_space_grid_expands_every_choice(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc())
    configs = tune_variants(spec)
    # algorithm grid: every grid and choice is expanded: 2 cases x 3 seeds x 2 schedules,
    # each combination once
    assert len(configs) == 2 * 3 * 2
    combos = {(c["case"], c["train.seed"], c["train.schedule.chunks"]) for c in configs}
    assert combos == set(itertools.product(["sgd-baseline", "adam-clip"], [0, 1, 2], ["1", "4,1"]))


def test_tune_space_random_algorithm_keeps_choices_random(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc(), ["search.algorithm=random"])
    configs = tune_variants(spec)
    # algorithm random expands only grids (case x seed); choices stay random draws
    assert len(configs) == 6
    assert len({(c["case"], c["train.seed"]) for c in configs}) == 6


def test_resolve_merges_case_settings(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc())
    by_case = {}
    for c in tune_variants(spec):
        config, clean = resolve(spec, c)
        by_case[clean["case"]] = config
        # the clean dict keeps the case name (first column) and the seed
        assert searched_keys(spec)[0] == "case" and list(clean)[0] == "case"
        assert config.train.seed == clean["train.seed"]
    # each case's dotted settings are merged into the config
    assert (by_case["sgd-baseline"].train.optimizer, by_case["sgd-baseline"].train.momentum) == ("sgd", 0.9)
    assert by_case["adam-clip"].train.clip.mode == "norm"
    assert by_case["adam-clip"].train.lr == 0.001


def test_load_space_case_override_keeps_one_case(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc(), ["case=adam-clip"])
    # case=NAME keeps only that named case
    assert spec.param("case").values == ("adam-clip",) and len(tune_variants(spec)) == 6


def test_load_space_case_override_removes_key_from_cases(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc(), ["train.lr=0.05"])
    config, _ = resolve(spec, tune_variants(spec)[0])
    # a config override fixes the key in every case too
    assert config.train.lr == 0.05


# ---------------------------------------------------------------------------- overrides


def test_load_space_override_removes_searched_key(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE, ["train.lr=0.05"])
    # overriding a searched key fixes it: it leaves the space and joins the base
    assert spec.param("train.lr") is None and spec.base["train"]["lr"] == 0.05
    assert "train.lr" not in searched_keys(spec)
    config, _ = resolve(spec, ask_many(spec, 1)[0])
    assert config.train.lr == 0.05


def test_load_space_override_settles_conditions(tmp_path: Path) -> None:
    adam = spec_of(tmp_path, BASE, ["train.optimizer=adam"])
    # fixing the parent to a value outside the condition drops the gated key
    assert adam.param("train.momentum") is None
    sgd = spec_of(tmp_path, BASE, ["train.optimizer=sgd"])
    # fixing it to a value inside makes the gated key unconditional
    assert sgd.param("train.momentum").condition is None


def test_load_space_override_sets_search_resources_and_name(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        BASE,
        [
            "search.num_samples=7",
            "resources.cpu=2",
            "name=other",
            "search.scheduler.type=median",
            "data.length=500",
        ],
    )
    # search.*, resources.* and name overrides set those sections
    assert (spec.search.num_samples, spec.resources.cpu, spec.name) == (7, 2.0, "other")
    assert spec.search.scheduler.type == "median" and spec.base["data"]["length"] == 500


def test_load_space_override_scheduler_type_drops_foreign_keys(tmp_path: Path) -> None:
    doc = with_patch((("search", "scheduler"), {"type": "asha", "reduction_factor": 4}))
    spec = spec_of(tmp_path, doc, ["search.scheduler.type=median"])
    # switching type on the command line drops the file's keys the new type does not use
    assert spec.search.scheduler.type == "median"


def test_load_space_override_space_entry(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        BASE,
        ["space.train.lr={loguniform: [1.0e-2, 1.0e-1]}", "space.train.schedule.patience=null"],
    )
    # space.<key>= replaces an entry; null drops it
    assert spec.param("train.lr").low == 0.01 and spec.param("train.schedule.patience") is None


@pytest.mark.parametrize("override", ["train.lrr=0.1", "search", "foo.bar=1", "space=1"])
def test_load_space_override_unknown_key_raises(tmp_path: Path, override: str) -> None:
    # unknown or malformed override keys are a one-line ConfigError naming the file
    with pytest.raises(ConfigError) as info:
        spec_of(tmp_path, BASE, [override])
    assert "space.yaml" in str(info.value) and "\n" not in str(info.value)


def test_load_space_override_unknown_key_suggests(tmp_path: Path) -> None:
    # the nearest valid key is suggested
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        spec_of(tmp_path, BASE, ["train.lrr=0.1"])


# ---------------------------------------------------------------------------- resolve


def test_resolve_gives_valid_config_for_many_trials() -> None:
    spec = load_space(ROOT / "search_spaces" / "full.yaml")
    for t in ask_many(spec, 40, seed=1):
        config, clean = resolve(spec, t)
        # every sampled point of full.yaml becomes a valid Config carrying the values
        assert isinstance(config, Config)
        assert config.train.optimizer == t["train.optimizer"]
        assert math.isclose(config.train.lr, t["train.lr"])
        # the clean dict holds exactly the keys Optuna suggested, in searched_keys order
        assert set(clean) == set(t)
        assert list(clean) == [k for k in searched_keys(spec) if k in clean]


def test_resolve_missing_key_raises(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    trial = ask_many(spec, 1)[0]
    del trial["train.lr"]
    # a searched key missing from the trial config is an error, not a silent default
    with pytest.raises(ConfigError, match="train.lr: missing"):
        resolve(spec, trial)


def test_first_config_uses_first_values(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    config = first_config(spec)
    # base + each searched key at its first value / low bound, conditions honoured
    assert (config.train.optimizer, config.train.lr, config.train.momentum) == ("sgd", 1e-3, 0.0)
    assert config.train.schedule.chunks == (1,) and config.train.schedule.patience == 5


def test_resolve_rejects_invalid_combination(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE)
    trial = ask_many(spec, 1)[0] | {"train.lr": -1.0}
    # values are validated by the Config, with the file named
    with pytest.raises(ConfigError, match=r"space.yaml: train.lr"):
        resolve(spec, trial)


def test_resolve_applies_unsearched_config_keys(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, BASE, ["train.lr=0.05"])
    trial = ask_many(spec, 1)[0] | {"train.lr": 0.02, "schedule_stage": 1}
    config, clean = resolve(spec, trial)
    # a config key Tune adds (a PBT mutation of an unsearched key) is applied; others ignored
    assert config.train.lr == 0.02 and clean["train.lr"] == 0.02 and "schedule_stage" not in clean


def test_optuna_search_suggests_flat_dotted_keys(tmp_path: Path) -> None:
    from ray.tune.search.optuna import OptunaSearch

    spec = spec_of(tmp_path, BASE)
    searcher = OptunaSearch(space=optuna_space(spec.params), metric="loss", mode="min", seed=0)
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        # OptunaSearch hands the trainable flat dotted keys, chunks as strings
        assert "train.lr" in config and isinstance(config["train.schedule.chunks"], str)
        assert isinstance(resolve(spec, config)[0], Config)
        searcher.on_trial_complete(f"t{i}", {"loss": float(i), "training_iteration": 1})


# ---------------------------------------------------------------------------- pbt, keys, raw


def test_pbt_mutations_use_space_ranges_or_base(tmp_path: Path) -> None:
    from ray.tune.search.sample import Float

    doc = with_patch(
        (("space", "train.clip.threshold"), {"loguniform": [0.5, 5.0]}),
        (("space", "train.momentum"), DROP),  # pbt takes no if:
        (("search", "scheduler"), {"type": "pbt", "perturbation_interval": 5}),
        (("search", "algorithm"), "random"),
    )
    spec = spec_of(tmp_path, doc, ["train.lr=0.02"])
    mutations = pbt_mutations(spec)
    # a searched key mutates over its space range
    assert (mutations["train.clip.threshold"].lower, mutations["train.clip.threshold"].upper) == (0.5, 5.0)
    # an unsearched key mutates over [base / 10, base * 10], starting at its base value
    lr = mutations["train.lr"]
    assert isinstance(lr, Float) and math.isclose(lr.lower, 0.002) and math.isclose(lr.upper, 0.2)
    assert tune_space(spec)["train.lr"] == 0.02 and "train.lr" in searched_keys(spec)


def test_searched_keys_follow_dependency_order(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    space = doc["space"]
    # a gated key written before the key it depends on
    doc["space"] = {"train.momentum": space["train.momentum"], "train.optimizer": space["train.optimizer"]}
    spec = spec_of(tmp_path, doc)
    # params (and columns) are ordered parents first
    assert searched_keys(spec) == ["train.optimizer", "train.momentum"]


def test_load_space_raw_round_trips(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, ablation_doc(), ["train.lr=0.05"])
    again = load_space(write(tmp_path, spec.raw, "study.yaml"))
    # the resolved document (study.yaml) loads back to the same space
    assert (again.params, again.search, again.resources, again.base, again.cases) == (
        spec.params,
        spec.search,
        spec.resources,
        spec.base,
        spec.cases,
    )
    assert again.name == spec.name


def test_load_space_grid_defaults_to_one_pass(tmp_path: Path) -> None:
    doc = ablation_doc()
    del doc["search"]["num_samples"]
    # algorithm grid without num_samples runs the grid once (Tune repeats it num_samples times)
    assert spec_of(tmp_path, doc).search.num_samples == 1


def test_optuna_space_case_choice(tmp_path: Path) -> None:
    doc = ablation_doc()
    doc["space"] = {
        "case": {"choice": CASES["grid"]},
        "train.weight_decay": {"uniform": [0.0, 0.1], "if": {"case": ["sgd-baseline"]}},
    }
    doc["search"] = {"algorithm": "optuna"}
    spec = spec_of(tmp_path, doc, ["train.seed=1"])
    for t in ask_many(spec, 20):
        config, clean = resolve(spec, t)
        # a case choice is sampled by name with Optuna, and may gate other keys
        assert ("train.weight_decay" in t) == (t["case"] == "sgd-baseline")
        assert config.train.optimizer == ("sgd" if t["case"] == "sgd-baseline" else "adam")


def test_load_space_defaults(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, {"space": {"train.lr": {"loguniform": [1.0e-3, 1.0e-1]}}})
    # every search/resources key has a default; the name defaults to the file's stem
    assert spec.name == "space" and spec.search.algorithm == "optuna"
    assert spec.search.scheduler.type == "fifo" and spec.resources.cpu == 1.0
    assert spec.search.time_budget_s is None


def test_load_space_yaml11_exponents_accepted(tmp_path: Path) -> None:
    doc = with_patch(
        (("space", "train.lr"), {"loguniform": ["1e-4", "1e-1"]}),
        (("search", "scheduler"), {"type": "asha", "grace_period": "2e6"}),
    )
    spec = spec_of(tmp_path, doc)
    # PyYAML reads 1e-4 and 2e6 as strings; numbers are accepted in that form
    assert spec.param("train.lr").low == 1e-4 and spec.search.scheduler.grace_period == 2e6


def test_optuna_space_rejects_grid_param() -> None:
    # a grid cannot be sampled by Optuna, even when optuna_space is called directly
    with pytest.raises(ConfigError):
        optuna_space([Param("train.seed", CategoricalDistribution([0, 1]), grid=True)])


# ---------------------------------------------------------------------------- invalid files


INVALID = [
    ("unknown-section", [(("serch",), {})], "serch"),
    ("unknown-search-key", [(("search", "num_sample"), 3)], "search.num_sample"),
    ("unknown-resources-key", [(("resources",), {"cpus": 2})], "resources.cpus"),
    (
        "unknown-scheduler-key",
        [(("search", "scheduler"), {"type": "asha", "grace": 2})],
        "search.scheduler.grace",
    ),
    (
        "scheduler-key-of-other-type",
        [(("search", "scheduler"), {"type": "median", "reduction_factor": 3})],
        "search.scheduler.reduction_factor",
    ),
    ("unknown-scheduler", [(("search", "scheduler"), {"type": "hyperband"})], "search.scheduler.type"),
    ("unknown-space-key", [(("space", "train.lrr"), {"choice": [0.1]})], "train.lrr"),
    ("unknown-distribution", [(("space", "train.lr"), {"logunifrom": [0.1, 1.0]})], "space.train.lr"),
    (
        "two-distributions",
        [(("space", "train.lr"), {"uniform": [0.1, 1.0], "choice": [0.1]})],
        "space.train.lr",
    ),
    ("choice-wrong-type", [(("space", "train.optimizer"), {"choice": ["sgd", "adamm"]})], "train.optimizer"),
    ("empty-choice", [(("space", "train.optimizer"), {"choice": []})], "train.optimizer"),
    (
        "empty-grid",
        [(("space", "train.seed"), {"grid": []}), (("search", "algorithm"), "grid")],
        "train.seed",
    ),
    ("loguniform-zero", [(("space", "train.lr"), {"loguniform": [0.0, 0.1]})], "train.lr"),
    ("low-above-high", [(("space", "train.momentum"), {"uniform": [0.9, 0.1]})], "train.momentum"),
    (
        "int-not-integer",
        [(("space", "train.schedule.patience"), {"int": [1.5, 3]})],
        "train.schedule.patience",
    ),
    (
        "int-bound-huge",
        [(("space", "train.schedule.patience"), {"int": [1, 10**400]})],
        "train.schedule.patience",
    ),
    (
        "int-log-from-zero",
        [(("space", "train.schedule.patience"), {"int": [0, 3], "log": True})],
        "train.schedule.patience",
    ),
    ("uniform-on-int-key", [(("space", "model.lstm_units"), {"uniform": [4, 8]})], "model.lstm_units"),
    (
        "log-on-uniform",
        [(("space", "train.momentum"), {"uniform": [0.0, 0.9], "log": True})],
        "train.momentum",
    ),
    (
        "chunk-below-one",
        [(("space", "train.schedule.chunks"), {"choice": [[0, 1]]})],
        "train.schedule.chunks",
    ),
    (
        "chunk-above-length",
        [(("space", "train.schedule.chunks"), {"choice": [[1], [1000]]})],
        "train.schedule.chunks",
    ),
    ("chunk-not-int", [(("space", "train.schedule.chunks"), {"choice": [["a"]]})], "train.schedule.chunks"),
    (
        "if-unknown-key",
        [(("space", "train.momentum"), {"uniform": [0.0, 0.9], "if": {"train.nesterov": [True]}})],
        "train.momentum",
    ),
    (
        "if-invalid-value",
        [(("space", "train.momentum"), {"uniform": [0.0, 0.9], "if": {"train.optimizer": ["sgdd"]}})],
        "train.optimizer",
    ),
    (
        "if-value-wrong-type",
        [(("space", "train.momentum"), {"uniform": [0.0, 0.9], "if": {"train.optimizer": [[1]]}})],
        "space.train.momentum.if.train.optimizer",
    ),
    (
        "if-value-never-occurs",
        [(("space", "train.momentum"), {"uniform": [0.0, 0.9], "if": {"train.optimizer": ["adamw"]}})],
        "train.momentum",
    ),
    (
        "if-cycle",
        [
            (("space", "train.optimizer"), {"choice": ["sgd", "adam"], "if": {"train.clip.mode": ["norm"]}}),
            (("space", "train.clip.mode"), {"choice": ["none", "norm"], "if": {"train.optimizer": ["sgd"]}}),
        ],
        "if",
    ),
    (
        "if-on-continuous",
        [(("space", "train.clip.threshold"), {"loguniform": [0.5, 5.0], "if": {"train.lr": [0.01]}})],
        "train.clip.threshold",
    ),
    ("grid-with-optuna", [(("space", "train.seed"), {"grid": [0, 1]})], "train.seed"),
    (
        "grid-with-if",
        [
            (("space", "train.seed"), {"grid": [0, 1], "if": {"train.optimizer": ["sgd"]}}),
            (("search", "algorithm"), "grid"),
        ],
        "train.seed",
    ),
    (
        "grid-conditional-choice",
        [
            (("search", "algorithm"), "grid"),
            (("space", "train.momentum"), {"choice": [0.0, 0.9], "if": {"train.optimizer": ["sgd"]}}),
        ],
        "train.momentum",
    ),
    ("pbt-with-optuna", [(("search", "scheduler"), {"type": "pbt"})], "search.scheduler.type"),
    (
        "pbt-conditional-threshold",
        [(("search", "scheduler"), {"type": "pbt"}), (("search", "algorithm"), "random")],
        "train.clip.threshold",
    ),
    (
        "pbt-interval-vs-checkpoint",
        [
            (("search", "scheduler"), {"type": "pbt", "perturbation_interval": 3}),
            (("search", "algorithm"), "random"),
            (("space", "train.clip.threshold"), DROP),
        ],
        "search.scheduler.perturbation_interval",
    ),
    ("num-samples-zero", [(("search", "num_samples"), 0)], "search.num_samples"),
    ("time-budget-zero", [(("search", "time_budget_s"), 0)], "search.time_budget_s"),
    ("timestep-budget-zero", [(("search", "timestep_budget"), 0)], "search.timestep_budget"),
    ("max-concurrent-zero", [(("search", "max_concurrent"), 0)], "search.max_concurrent"),
    (
        "max-t-below-grace",
        [(("search", "scheduler"), {"type": "asha", "grace_period": 5, "max_t": 2})],
        "search.scheduler.max_t",
    ),
    ("cpu-zero", [(("resources",), {"cpu": 0})], "resources.cpu"),
    ("gpu-negative", [(("resources",), {"gpu": -1})], "resources.gpu"),
    ("time-to-target-no-target", [(("search", "metric"), "time_to_target")], "search.target_loss"),
    ("val-loss-no-holdout", [(("search", "metric"), "val_loss")], "search.metric"),
    ("best-val-loss-no-holdout", [(("search", "metric"), "best_val_loss")], "search.metric"),
    ("metric-renamed-loss", [(("search", "metric"), "loss")], "renamed 'train_loss'"),
    ("name-with-slash", [(("name",), "a/b")], "name"),
    ("name-dotdot", [(("name",), "..")], "name"),
    ("name-empty", [(("name",), "")], "name"),
    ("name-dot", [(("name",), ".")], "name"),
    ("fixed-negative-units", [(("model", "lstm_units"), -3)], "model.lstm_units"),
    ("fixed-unknown-key", [(("train", "foo"), 1)], "train.foo"),
    ("fixed-wrong-type", [(("data", "n_series"), "many")], "data.n_series"),
    ("fixed-int-infinite", [(("data", "n_series"), math.inf)], "data.n_series"),
    ("section-not-mapping", [(("model",), [1, 2])], "model"),
    ("space-value-invalid", [(("space", "train.lr"), {"choice": [0.1, -1.0]})], "train.lr"),
    (
        "case-unknown-key",
        [(("space", "case"), {"grid": [{"name": "a", "train.lrr": 0.1}]}), (("search", "algorithm"), "grid")],
        "train.lrr",
    ),
    (
        "case-without-name",
        [(("space", "case"), {"grid": [{"train.lr": 0.1}]}), (("search", "algorithm"), "random")],
        "case",
    ),
    (
        "case-sets-searched-key",
        [
            (("space", "case"), {"grid": [{"name": "a", "train.lr": 0.1}]}),
            (("search", "algorithm"), "random"),
        ],
        "train.lr",
    ),
    (
        "case-invalid-value",
        [
            (("space", "case"), {"grid": [{"name": "a", "model.lstm_units": -1}]}),
            (("search", "algorithm"), "random"),
        ],
        "model.lstm_units",
    ),
]


@pytest.mark.parametrize("name,patches,key", INVALID, ids=[c[0] for c in INVALID])
def test_load_space_invalid_file_raises_one_line(tmp_path: Path, name: str, patches: list, key: str) -> None:
    path = write(tmp_path, with_patch(*patches), f"{name}.yaml")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    # one line that names the file and the key, and says what is allowed
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and key in message
    assert "allowed" in message


@pytest.mark.parametrize("text", ["a: [1, 2", "- 1\n- 2\n", "just text\n"])
def test_load_space_not_a_yaml_mapping_raises(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "broken.yaml")
    # invalid YAML or a document that is not a mapping: one line naming the file
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_load_space_missing_file_raises(tmp_path: Path) -> None:
    # a missing file is a ConfigError naming it
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_space_from_dict_names_source_in_errors() -> None:
    # a document built in code names its source in errors
    with pytest.raises(ConfigError, match="^<cli>: search.num_samples"):
        space_from_dict({"search": {"num_samples": 0}}, source="<cli>")


# ---------------------------------------------------------------------------- property


TOKENS = [
    "name",
    "data",
    "model",
    "train",
    "space",
    "search",
    "resources",
    "case",
    "if",
    "log",
    "choice",
    "uniform",
    "loguniform",
    "int",
    "grid",
    "train.lr",
    "train.optimizer",
    "train.schedule.chunks",
    "train.clip.mode",
    "train.momentum",
    "model.lstm_units",
    "data.length",
    "algorithm",
    "scheduler",
    "type",
    "pbt",
    "asha",
    "optuna",
    "random",
    "num_samples",
    "metric",
    "time_to_target",
    "sgd",
    "adam",
    "norm",
    "cpu",
    "gpu",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(TOKENS)
)
keys = st.sampled_from(TOKENS) | st.text(max_size=8) | st.integers(-2, 3) | st.none()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
VALID = load_space(ROOT / "search_spaces" / "full.yaml").raw


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Random documents: free-form, or the valid full.yaml with subtrees replaced."""
    if draw(st.booleans()):
        return draw(st.dictionaries(st.sampled_from(TOKENS[:7]) | keys, values, max_size=6))
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node, key=str)))
            if not isinstance(node[key], (dict, list)):
                break
            if isinstance(node[key], list):
                if not node[key]:
                    break
                node[key][draw(st.integers(0, len(node[key]) - 1))] = draw(values)
                break
            node = node[key]
        if isinstance(node, dict):
            node[draw(keys if draw(st.booleans()) else st.sampled_from(sorted(node, key=str) or ["x"]))] = (
                draw(values)
            )
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), raw_text=st.none() | st.text(max_size=60))
def test_load_space_random_documents_succeed_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, doc: Any, raw_text: str | None
) -> None:
    path = tmp_path_factory.getbasetemp() / "random.yaml"
    text = raw_text if raw_text is not None else yaml.safe_dump(doc, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    # any document either loads or fails with a one-line ConfigError naming the file
    try:
        spec = load_space(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
    else:
        assert isinstance(spec, SpaceFile)


# ---------------------------------------------------------------------------- start points


def test_load_space_full_starts_from_article_best_and_plain_adam() -> None:
    spec = load_space(ROOT / "search_spaces" / "full.yaml")
    best, plain_adam = spec.search.start_from
    # the article's best setting first: Adam, global-norm clip 1.0, chunks 100 -> 1, patience 20
    assert (
        best["train.optimizer"],
        best["train.clip.mode"],
        best["train.clip.threshold"],
        best["train.schedule.chunks"],
        best["train.schedule.patience"],
    ) == ("adam", "norm", 1.0, [100, 50, 10, 2, 1], 20)
    # then plain Adam: no clipping (so no threshold: its condition fails), full BPTT
    assert (
        plain_adam["train.optimizer"],
        plain_adam["train.clip.mode"],
        plain_adam["train.schedule.chunks"],
    ) == ("adam", "none", [1])
    assert "train.clip.threshold" not in plain_adam
    # each point resolves to a valid Config carrying its values
    config, _ = resolve(spec, {k: v for k, v in best.items()})
    assert config.train.schedule.chunks == (100, 50, 10, 2, 1) and config.train.lr == 0.01


def test_start_points_are_encoded_like_suggestions() -> None:
    spec = load_space(ROOT / "search_spaces" / "full.yaml")
    points = start_points(spec)
    # searchers get chunk schedules as '100,50,1' strings, like every Optuna suggestion
    assert points[0]["train.schedule.chunks"] == "100,50,10,2,1"
    assert resolve(spec, points[0])[1]["train.schedule.chunks"] == [100, 50, 10, 2, 1]


def test_load_space_start_from_round_trips_and_follows_overrides(tmp_path: Path) -> None:
    point = {
        "train.optimizer": "sgd",
        "train.lr": 0.01,
        "train.momentum": 0.5,
        "train.clip.mode": "none",
        "train.schedule.chunks": [4, 1],
        "train.schedule.patience": 5,
    }
    spec = spec_of(tmp_path, with_patch((("search", "start_from"), [point])))
    # the point is kept as written (plain values) and written back to study.yaml
    assert spec.search.start_from == (point,)
    again = load_space(write(tmp_path, spec.raw, "study.yaml"))
    assert again.search == spec.search
    # a key fixed by an override leaves the start points as it leaves the space
    fixed = spec_of(tmp_path, with_patch((("search", "start_from"), [point])), ["train.lr=0.05"])
    assert "train.lr" not in fixed.search.start_from[0]


def test_load_space_start_from_checks_the_whole_config(tmp_path: Path) -> None:
    doc = with_patch(
        (("space", "model.lstm_units"), {"int": [2, 8]}),
        (
            ("search", "start_from"),
            [
                {
                    "train.optimizer": "adam",
                    "train.lr": 0.01,
                    "train.clip.mode": "none",
                    "train.schedule.chunks": [1],
                    "train.schedule.patience": 5,
                    "model.lstm_units": 9,
                }
            ],
        ),
    )
    # a value outside its int range is named with the point's index and the range
    with pytest.raises(ConfigError, match=r"start_from\[0\]\.model\.lstm_units: got 9.*\[2, 8\]"):
        spec_of(tmp_path, doc)


# ---------------------------------------------------------------------------- the loader


def test_load_space_empty_file_refused(tmp_path: Path) -> None:
    # an empty file is refused: it would start a full-size default search
    with pytest.raises(ConfigError, match="empty"):
        load_space(write(tmp_path, ""))
    # so is a file that searches nothing
    with pytest.raises(ConfigError, match="space: searches nothing"):
        load_space(write(tmp_path, {"train": {"max_epochs": 2}}))


def test_load_space_duplicate_case_key_refused_with_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace(
        "  train.lr:", "  train.optimizer: {choice: [sgd]}\n  train.lr:", 1
    )
    # a searched key written twice is refused with both line numbers (PyYAML keeps the last)
    with pytest.raises(ConfigError, match=r"'train.optimizer' appears twice \(lines \d+ and \d+\)"):
        load_space(write(tmp_path, text))


def test_load_space_case_override_keeps_that_case_start_points(tmp_path: Path) -> None:
    doc = ablation_doc()
    doc["search"]["start_from"] = [
        {"case": "adam-clip", "train.seed": 0, "train.schedule.chunks": [1], "train.schedule.patience": 5},
        {
            "case": "sgd-baseline",
            "train.seed": 1,
            "train.schedule.chunks": [4, 1],
            "train.schedule.patience": 6,
        },
    ]
    # a case grid's start points name a case; case=NAME keeps only that case's points
    assert len(spec_of(tmp_path, doc).search.start_from) == 2
    kept = spec_of(tmp_path, doc, ["case=sgd-baseline"]).search.start_from
    assert [p["case"] for p in kept] == ["sgd-baseline"]
