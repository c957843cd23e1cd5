"""Read a study folder: ``trials.csv``, ``epochs.csv`` and ``study.yaml``, never Ray objects.

So anyone can make the report again from a copied results folder. The searched keys'
distributions come from the space file format's own loader (`tuner.space`), read back from the
study.yaml the search wrote; the one place that touches that loader is `_space_file`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna.distributions as od
import pandas as pd
import yaml

from tuner.core.config import STUDY_RECORD, Config, ConfigError
from tuner.core.metrics import EPOCH_COLUMNS
from tuner.report.heldout import Baselines, read_baselines
from tuner.report.measures import case_column
from tuner.results import TRIAL_COLUMNS


class ReportError(Exception):
    """The study folder cannot be reported on; the message is one line meant for the user."""


@dataclass
class StudyFiles:
    """What a study folder holds, read once and cleaned of file-format quirks."""

    name: str
    path: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    """Empty (with the expected columns) when ``epochs.csv`` is missing."""
    meta: dict[str, Any]
    """``study.yaml`` as a dict (empty when missing or unreadable)."""
    space: dict[str, Any]
    """The ``space:`` section of study.yaml as written (shown in the report)."""
    distributions: dict[str, od.BaseDistribution]
    """Each searched key's distribution (``case`` is categorical over the case names); empty
    when study.yaml is missing or its space cannot be read."""
    cases: dict[str, dict[str, Any]]
    """For a ``case`` key: each case's value of every key some case sets (the base config's
    value where a case leaves a key alone)."""
    objective: str
    """Column of the value minimised: ``objective``, else the space's metric, else
    best_val_loss, else best_train_loss."""
    notes: list[str] = field(default_factory=list)
    """Problems met while reading (missing optional files), stated in the report."""

    @property
    def baselines(self) -> Baselines:
        """The zero and ridge predictors' losses from study.yaml (NaN where not stated)."""
        return read_baselines(self.meta)

    @property
    def has_cases(self) -> bool:
        """An ablation study: at least one trial names a case."""
        return case_column(self.trials) is not None


_TEXT_COLUMNS = {
    "trial_id": str,
    "experiment": str,
    "status": str,
    "case": str,
    "error": str,
    "node": str,
    "device": str,
}
_NUMERIC_TRIAL_COLUMNS = tuple(c for c in TRIAL_COLUMNS if c not in _TEXT_COLUMNS and c != "seed")


_FALLBACK_OBJECTIVES = ("best_val_loss", "best_train_loss")

#: The epochs.csv losses the report reads (tuner.core.metrics.EPOCH_COLUMNS); a study written
#: before they existed (one `loss` column) gets them as empty columns and a note.
_LOSS_COLUMNS = ("train_loss_running", "train_loss", "val_loss")


#: Columns a report does without, unannounced: without `wall_time` (studies written before it)
#: the anytime curve replays the order in which epochs ended.
_OPTIONAL_COLUMNS = ("wall_time",)


def _fill_missing(epochs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Add every EPOCH_COLUMNS column epochs.csv lacks (empty), with one note naming them."""
    epochs = epochs.assign(**{c: float("nan") for c in _OPTIONAL_COLUMNS if c not in epochs.columns})
    missing = [c for c in EPOCH_COLUMNS if c not in epochs.columns]
    if not missing:
        return epochs
    lost = [c for c in _LOSS_COLUMNS if c in missing]
    old = " (a study written before the held-out split: re-run it)" if "loss" in epochs else ""
    what = f"; curves and verdicts that need {', '.join(lost)} are left out" if lost else ""
    notes.append(f"epochs.csv has no column {', '.join(missing)}{old}{what}.")
    return epochs.assign(**{c: float("nan") for c in missing})


def _read_yaml(path: Path, notes: list[str]) -> dict[str, Any]:
    """The study.yaml mapping; {} with a note when it is missing or not a mapping."""
    if not path.exists():
        notes.append("study.yaml is missing: no search space, command or versions to show.")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        notes.append(f"study.yaml could not be read ({type(exc).__name__}).")
        return {}
    if not isinstance(data, dict):
        notes.append("study.yaml is not a mapping: ignored.")
        return {}
    return data


def mapping(meta: dict[str, Any], key: str) -> dict[str, Any]:
    """``meta[key]`` when it is a mapping, else {} (optional study.yaml sections)."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def _choice(value: Any) -> Any:
    """A categorical value as trials.csv spells it (a chunk schedule [100, 50, 1] as "100,50,1")."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def _dotted(tree: dict[str, Any], key: str) -> Any:
    """``tree["train"]["clip"]["mode"]`` for ``"train.clip.mode"``; None when absent."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _space_file(
    meta: dict[str, Any], notes: list[str]
) -> tuple[dict[str, od.BaseDistribution], dict[str, dict[str, Any]]]:
    """(distributions, cases) of the searched keys, read with the space file's own loader.

    The one function that knows `tuner.space`'s objects: a parameter's kind, bounds and values,
    and the named cases' settings over the base config."""
    from tuner import space as space_mod  # the service layer, only needed here

    if not meta.get("space"):
        return {}, {}
    doc = {k: v for k, v in meta.items() if k not in STUDY_RECORD}
    try:
        spec = space_mod.space_from_dict(doc, source="study.yaml")
    except ConfigError as exc:
        notes.append(f"the space in study.yaml cannot be read ({exc}): no ranges or importance.")
        return {}, {}
    dists = {p.key: p.distribution for p in spec.params}
    keys = list(dict.fromkeys(k for c in spec.cases for k, _ in c.settings))
    defaults = Config().to_dict()

    def base_value(key: str) -> Any:
        value = _dotted(spec.base, key)
        return _dotted(defaults, key) if value is None else value

    cases = {c.name: {k: _choice(dict(c.settings).get(k, base_value(k))) for k in keys} for c in spec.cases}
    return dists, cases


def _missing_objective(path: Path, columns: pd.Index, metric: str) -> str:
    """The one-line error for a trials.csv without any column to rank trials by."""
    wanted = " or ".join(dict.fromkeys(c for c in ("objective", metric, *_FALLBACK_OBJECTIVES) if c))
    shown = ", ".join(map(str, columns[:8])) + (", ..." if len(columns) > 8 else "")
    return f"{path} is missing the column {wanted} (it has: {shown})"


def load_study(study_dir: str | os.PathLike[str]) -> StudyFiles:
    """Read a study folder; raises ReportError when the folder or its trials.csv is missing."""
    path = Path(study_dir)
    if not path.is_dir():
        raise ReportError(f"study folder not found: {path}")
    trials_path = path / "trials.csv"
    if not trials_path.is_file():
        raise ReportError(f"no trials.csv in {path}: run the study first (python -m tuner.search)")
    notes: list[str] = []
    try:
        trials = pd.read_csv(trials_path, dtype=_TEXT_COLUMNS)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(f"{trials_path} cannot be read: {type(exc).__name__}") from exc
    if "trial_id" not in trials.columns:
        raise ReportError(f"{trials_path} has no trial_id column")
    trials["trial_id"] = trials["trial_id"].astype(str)
    for col in _NUMERIC_TRIAL_COLUMNS:
        if col in trials.columns:
            trials[col] = pd.to_numeric(trials[col], errors="coerce")
    epochs_path = path / "epochs.csv"
    epochs = pd.DataFrame({c: pd.Series(dtype=float) for c in ("trial_id", *EPOCH_COLUMNS)})
    if epochs_path.is_file():
        try:
            epochs = pd.read_csv(epochs_path, dtype={"trial_id": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            notes.append(f"epochs.csv could not be read ({type(exc).__name__}): no curves.")
        else:
            epochs["trial_id"] = epochs["trial_id"].astype(str)
            for col in epochs.columns:
                if col != "trial_id":
                    epochs[col] = pd.to_numeric(epochs[col], errors="coerce")
            epochs = _fill_missing(epochs, notes)
            epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable")
    else:
        notes.append("epochs.csv is missing: no training curves.")
    meta = _read_yaml(path / "study.yaml", notes)
    space = mapping(meta, "space")
    distributions, cases = _space_file(meta, notes)
    search = mapping(meta, "search")
    objective = "objective"
    if objective not in trials.columns:
        metric = str(search.get("metric", ""))
        objective = next(
            (
                c
                for c in (metric, *_FALLBACK_OBJECTIVES)
                if c in trials.columns and pd.to_numeric(trials[c], errors="coerce").notna().any()
            ),
            metric if metric in trials.columns else "best_train_loss",
        )
        notes.append(f"trials.csv has no objective column: using `{objective}`.")
        if objective not in trials.columns:
            raise ReportError(_missing_objective(trials_path, trials.columns, metric))
        trials[objective] = pd.to_numeric(trials[objective], errors="coerce")
    return StudyFiles(
        name=str(meta.get("name") or path.name),
        path=path,
        trials=trials,
        epochs=epochs,
        meta=meta,
        space=space or {},
        distributions=distributions,
        cases=cases,
        objective=objective,
        notes=notes,
    )
