"""Search spaces: a YAML space file -> a validated `SpaceFile` -> Optuna or Ray Tune sampling.

One job per module:

* `format`: the file format (sections, overrides, start points) -> `SpaceFile`, and back;
* `params`: the `space:` entries -> `Param`s holding Optuna distributions, `if:`, `case`;
* `sections`: the `search:` and `resources:` dataclasses, built by the config's validator;
* `spec`: the dataclasses and value helpers the others share;
* `optuna_space`: define-by-run (optuna and random searches; the one home of `if:`);
* `tune_space`: Tune's variant generator, for grids and PBT only;
* `trial_config`: a flat trial config -> the validated `Config`.
"""

from tuner.space.format import load_space, space_from_dict
from tuner.space.optuna_space import optuna_space, start_points
from tuner.space.sections import Resources, SchedulerSpec, SearchSpec
from tuner.space.spec import CASE_KEY, DISTRIBUTIONS, Case, Param, SpaceFile
from tuner.space.trial_config import first_config, resolve, searched_keys
from tuner.space.tune_space import pbt_mutations, tune_space

__all__ = [
    "CASE_KEY",
    "DISTRIBUTIONS",
    "Case",
    "Param",
    "Resources",
    "SchedulerSpec",
    "SearchSpec",
    "SpaceFile",
    "first_config",
    "load_space",
    "optuna_space",
    "pbt_mutations",
    "resolve",
    "searched_keys",
    "space_from_dict",
    "start_points",
    "tune_space",
]
