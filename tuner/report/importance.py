"""Parameter importance for every study, computed from ``trials.csv``.

Each finished trial becomes an Optuna `FrozenTrial` (`optuna.trial.create_trial`) whose
parameters carry the searched keys' distributions from the space file, in an in-memory study;
Optuna's evaluator then says how much of the objective's variation each key explains. So grid,
random, PBT and Optuna studies all get it, whether or not an ``optuna.db`` exists.

* Evaluator: fANOVA (a random-forest variance decomposition) when scikit-learn is importable
  (``pip install -e ".[importance]"``), else PED-ANOVA (Optuna's default, no extra packages).
  The report names the one used.
* A ``case`` grid is described by its components: each key some case sets (optimizer, clip
  mode, schedule, ...) becomes a categorical parameter with the case's value, so the answer is
  "which lever matters most", not "which case".
* A diverged trial (objective +inf) counts with the worst finite objective of the study: an
  evaluator cannot use inf, and dropping it would hide the keys that make runs blow up.
* Seeds are not hyperparameters and are left out; a key searched only under an ``if`` is left
  out too (the evaluators need the keys every trial has).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import optuna.distributions as od
import pandas as pd

from tuner.report.load import StudyFiles
from tuner.report.measures import case_column, finished, is_seed_key
from tuner.report.plots import save_png

MIN_TRIALS = 10
"""Fewer finished trials make any importance estimate noise."""


@dataclass(frozen=True)
class Importance:
    """Normalised importances (largest first), the evaluator's name and the trials used."""

    values: pd.Series
    evaluator: str
    n_trials: int
    study: optuna.Study
    """The in-memory study the importances came from (for Optuna's plotting helpers)."""


def evaluator() -> tuple[Any, str]:
    """fANOVA when scikit-learn is importable, else PED-ANOVA; with the name the report shows."""
    try:
        import sklearn  # noqa: F401 - only probing that fANOVA can run
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"


def _param_value(dist: od.BaseDistribution, value: Any) -> Any:
    """A trials.csv cell as a value of `dist`; None when blank or outside it."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(dist, od.CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
        try:  # numbers read back from CSV: 1 vs 1.0
            return next(
                c
                for c in dist.choices
                if not isinstance(c, str) and c is not None and float(c) == float(value)
            )
        except (StopIteration, TypeError, ValueError):
            return None
    try:
        number = int(value) if isinstance(dist, od.IntDistribution) else float(value)
    except (TypeError, ValueError):
        return None
    return number if dist.low <= number <= dist.high else None


def searched_distributions(study: StudyFiles) -> dict[str, od.BaseDistribution]:
    """The parameters importance is computed over: case components, then the other searched
    keys (seeds and keys without a column left out)."""
    dists: dict[str, od.BaseDistribution] = {}
    if study.cases and "case" in study.trials.columns:
        for key in next(iter(study.cases.values())):
            values = list(dict.fromkeys(case[key] for case in study.cases.values()))
            if len(values) > 1:
                dists[key] = od.CategoricalDistribution(values)
    for key, dist in study.distributions.items():
        if key != "case" and not is_seed_key(key) and key in study.trials.columns:
            dists[key] = dist
    return dists


def frozen_trials(study: StudyFiles, dists: dict[str, od.BaseDistribution]) -> list[optuna.trial.FrozenTrial]:
    """One completed FrozenTrial per finished trial with a finite or diverged objective."""
    done = finished(study.trials)
    if "case" in done.columns:
        done = done.assign(case=case_column(done))
    values = pd.to_numeric(done[study.objective], errors="coerce").to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    worst = (
        (
            float(finite.min())
            if str(study.meta.get("search", {}).get("mode")) == "max"
            else float(finite.max())
        )
        if finite.size
        else math.nan
    )
    out = []
    for (_, row), value in zip(done.iterrows(), values, strict=True):
        if math.isnan(value):
            continue
        cells = dict(row)
        case = study.cases.get(str(cells.get("case"))) if study.cases else None
        if case:
            cells.update(case)
        params = {k: _param_value(d, cells.get(k)) for k, d in dists.items()}
        params = {k: v for k, v in params.items() if v is not None}
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=value if math.isfinite(value) else worst,
            )
        )
    return out


def parameter_importance(study: StudyFiles, min_trials: int = MIN_TRIALS) -> tuple[Importance | None, str]:
    """The importances, or None and the sentence that says why there are none.

    Any failure of the evaluator becomes that sentence, never a crash: importance is a
    nice-to-have next to the tables."""
    dists = searched_distributions(study)
    if not dists:
        return None, (
            "No searched hyperparameters with a distribution in study.yaml: parameter importance skipped."
        )
    trials = frozen_trials(study, dists)
    if len(trials) < min_trials:
        return None, (
            f"Only {len(trials)} finished trials ({min_trials} needed): parameter importance skipped."
        )
    ev, name = evaluator()
    mode = str(study.meta.get("search", {}).get("mode", "min"))
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
            st.add_trials(trials)
            imp = optuna.importance.get_param_importances(st, evaluator=ev)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never fatal
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return None, f"Parameter importance could not be computed ({type(exc).__name__}: {first})."
    finally:
        optuna.logging.set_verbosity(old)
    if not imp:
        return None, "No parameter is shared by every trial: parameter importance skipped."
    result = Importance(pd.Series(imp, dtype=float), name, len(trials), st)
    return result, _describe(study, result)


def _describe(study: StudyFiles, imp: Importance) -> str:
    """The sentence above the importance table: evaluator, trials, what the keys are."""
    what = (
        "the components of the `case` grid (each key a case sets, with the case's value) "
        "and the other searched keys"
        if study.cases
        else "the searched keys"
    )
    how = (
        "fANOVA (random-forest variance decomposition, scikit-learn)"
        if imp.evaluator == "fANOVA"
        else "PED-ANOVA (Optuna's default; install scikit-learn for fANOVA)"
    )
    return (
        f"Evaluator: **{imp.evaluator}**. Share of the variation of `{study.objective}` "
        f"explained by each of {what}, over {imp.n_trials} finished trials, by {how}; a "
        "diverged trial counts with the worst finite objective; seeds are left out."
    )


def save_importance_plot(imp: Importance, name: str, path: Path) -> None:
    """Optuna's importance bar chart (matplotlib backend) as a PNG, evaluator in the title.

    Optuna's helper draws with pyplot and its own style: both are confined here (rcParams
    restored, the figure closed)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_param_importances

    ev, _ = evaluator()
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib helpers are marked experimental
        ax = plot_param_importances(imp.study, evaluator=ev)
        fig = ax.figure
        try:
            ax.set_title("")
            ax.set_title(f"{name}: parameter importance ({imp.evaluator})", loc="left")
            if ax.get_legend() is not None:  # one objective: its legend says nothing
                ax.get_legend().remove()
            fig.set_size_inches(9.0, max(2.5, 0.5 * len(imp.values) + 1.5))
            fig.tight_layout()
            save_png(fig, path)
        finally:
            plt.close(fig)
