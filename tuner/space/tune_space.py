"""The space for Tune's variant generator: only where Optuna cannot serve.

Tune runs a search itself in two cases: grids (``algorithm: grid``, a ``grid:`` entry, the named
``case`` grid) and population based training, which refuses any searcher. Conditionals (``if:``)
are refused at load for these searches, so nothing here needs them. Bounds come from the
Params' Optuna distributions; this is the one place that knows Tune's quirks:

* Tune's ``randint``/``lograndint`` EXCLUDE the upper bound; the space file's ``int`` includes
  it, so Tune gets ``high + 1``.
* Tune hands out numpy integers (``np.int64``), which are not ``int``; `resolve` converts them.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, IntDistribution

from tuner.core.config import Config
from tuner.space.spec import CHUNKS_KEY, Param, SpaceFile, decode_value, get_dotted


def _domain(p: Param, expand_choices: bool) -> Any:
    from ray import tune

    d = p.distribution
    if isinstance(d, CategoricalDistribution):
        if p.grid or expand_choices:
            return tune.grid_search(list(d.choices))
        return tune.choice(list(d.choices))
    if isinstance(d, IntDistribution):
        return (tune.lograndint if d.log else tune.randint)(d.low, d.high + 1)
    return (tune.loguniform if d.log else tune.uniform)(d.low, d.high)


def tune_space(spec: SpaceFile) -> dict[str, Any]:
    """A flat `param_space` for Tune's variant generator (grids, PBT).

    Keys are the dotted space keys. grid (and, for algorithm grid, choice) -> grid_search,
    choice -> tune.choice, uniform/loguniform -> tune.uniform/loguniform, int -> randint /
    lograndint(low, high + 1). With pbt, the mutated keys that are not searched start at their
    base value."""
    expand = spec.search.algorithm == "grid"
    out: dict[str, Any] = {p.key: _domain(p, expand) for p in spec.params}
    if spec.search.scheduler.type == "pbt":
        from tuner.space.trial_config import first_config

        first = first_config(spec)
        for key in pbt_keys(spec, first):
            if key not in out:
                out[key] = get_dotted(first.to_dict(), key)
    return out


def pbt_keys(spec: SpaceFile, first: Config) -> list[str]:
    """The keys worth mutating: the learning rate, the clip threshold when clipping can be on."""
    keys = ["train.lr"]
    mode = spec.param("train.clip.mode")
    mode_can_clip = (
        any(v != "none" for v in mode.values or ())
        if mode is not None
        else first.train.clip.mode != "none"
        or any(k == "train.clip.mode" and v != "none" for c in spec.cases for k, v in c.settings)
    )
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

    from tuner.space.trial_config import first_config

    first = first_config(spec)
    out: dict[str, Any] = {}
    for key in pbt_keys(spec, first):
        p = spec.param(key)
        if p is not None:
            out[key] = (
                list(p.distribution.choices)
                if isinstance(p.distribution, CategoricalDistribution)
                else _domain(p, expand_choices=False)
            )
            continue
        base = float(get_dotted(first.to_dict(), key))
        if base <= 0:  # adaptive clipping may sit at k = 0
            out[key] = tune.uniform(0.0, 3.0)
            continue
        high = base * 10
        if key == "train.clip.threshold" and first.train.clip.mode == "percentile":
            high = min(high, 100.0)
        out[key] = tune.loguniform(base / 10, high)
    p = spec.param(CHUNKS_KEY)
    options = (
        [tuple(decode_value(CHUNKS_KEY, v)) for v in p.values]
        if p is not None
        else [first.train.schedule.chunks]
    )
    stages = max(len(chunks) for chunks in options)
    if stages > 1:
        # A jump to a later stage of the chunk schedule (longer chunks), never back.
        out["train.schedule.min_stage"] = list(range(stages))
    return out
