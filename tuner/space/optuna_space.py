"""The space as Optuna define-by-run: the one implementation of `if:` conditionals.

Used by every Optuna-sampled search (algorithm optuna with any sampler, and algorithm random,
which is Optuna's RandomSampler), so a conditional key behaves the same in all of them: it is
suggested only when its condition holds and is absent from the trial's params otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Sequence

from optuna.distributions import CategoricalDistribution, IntDistribution

from tuner.core.config import ConfigError
from tuner.space.spec import Param, SpaceFile, active, decode_value, encode_value

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna


class _DefineByRun:
    """Optuna define-by-run space (a class, not a closure, so it pickles with the searcher)."""

    def __init__(self, params: Sequence[Param]) -> None:
        for p in params:
            if p.grid:
                raise ConfigError(
                    f"space.{p.key}: grid cannot be sampled by Optuna; "
                    "allowed: choice, or search.algorithm grid"
                )
        self.params = tuple(params)

    def __call__(self, trial: optuna.Trial) -> None:
        values: dict[str, Any] = {}
        for p in self.params:
            if not active(p, values):
                continue  # define-by-run: absent, not None
            d = p.distribution
            if isinstance(d, CategoricalDistribution):
                raw = trial.suggest_categorical(p.key, d.choices)
                values[p.key] = decode_value(p.key, raw)
            elif isinstance(d, IntDistribution):  # inclusive bounds, like the space file's
                values[p.key] = trial.suggest_int(p.key, d.low, d.high, log=d.log)
            else:
                values[p.key] = trial.suggest_float(p.key, d.low, d.high, log=d.log)
        return None


def optuna_space(params: Sequence[Param]) -> Callable[[optuna.Trial], None]:
    """A define-by-run function for `OptunaSearch(space=...)`: each Param's distribution is
    suggested under its dotted key when its condition holds."""
    return _DefineByRun(params)


def start_points(spec: SpaceFile) -> list[dict[str, Any]]:
    """`search.start_from` as the flat, encoded trial configs searchers take as
    `points_to_evaluate` (chunk schedules as '100,50,1' strings, like every suggestion)."""
    return [{k: encode_value(k, v) for k, v in point.items()} for point in spec.search.start_from]
