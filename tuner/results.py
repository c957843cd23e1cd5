"""A study's Ray experiment folders -> pandas tables -> `trials.csv` and `epochs.csv`.

Tables are rebuilt from what Tune wrote to disk (each trial's `result.json`, `error.txt`), never
from live Ray objects, so they can be made again after a crash, and they are de-duplicated on
(trial, epoch): after a hard kill and a restore, Tune re-runs the epochs since its last snapshot.
Every file is written atomically (`tuner.core.atomic`), so a reader never sees half a CSV; the
loss columns follow `tuner.core.metrics` (a diverged trial's loss columns and auc are inf).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tuner.core import metrics
from tuner.core.atomic import STALE_TEMP_S, atomic_write_bytes, atomic_write_text
from tuner.core.metrics import EPOCH_COLUMNS

__all__ = [
    "STALE_TEMP_S",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "atomic_write_yaml",
    "load_tables",
    "read_logs",
    "tables",
    "write_tables",
]

RAY_DIR = "ray"
"""Tune's storage folder inside a study folder; one experiment per run of the search."""
TRIAL_COLUMNS = (
    "trial_id",
    "experiment",
    "status",
    "seed",
    "objective",
    "train_loss",
    "best_train_loss",
    "val_loss",
    "best_val_loss",
    "best_epoch",
    "auc",
    "epochs",
    "timesteps",
    "seconds",
    "started",
    "diverged_epoch",
    "node",
    "device",
    "error",
)
"""trials.csv columns; the searched keys are inserted after `status`. `train_loss` and
`val_loss` are the last epoch's (see tuner.core.metrics.EPOCH_COLUMNS), `best_train_loss` the
lowest train_loss, `best_val_loss` the best epoch's held-out loss, `best_epoch` the epoch of the
best model (lowest val_loss, else lowest train_loss), `auc` the mean train_loss. `node`: the IP
of the Ray node the trial ran on; `device`: `cpu` or e.g. `cuda:0 (NVIDIA H200)` (empty when a
trial failed before its first epoch). `started`: Unix time the trial began (its first result's
time minus Tune's `time_total_s`), the order trials were handed out in: a searcher's trial ids
are random, so they do not say it. `status` `early_stopped`: ended before max_epochs by the
scheduler (ASHA, ...) or by the run's own train.early_stopping."""


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    """CSV with floats to 9 significant digits (float32 losses need no more; halves the size),
    except Unix times (`wall_time`), which keep milliseconds."""
    if "wall_time" in frame:
        frame = frame.assign(wall_time=frame["wall_time"].map(lambda t: f"{t:.3f}" if pd.notna(t) else ""))
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.9g"))


def atomic_write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def _read_results(trial_dir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    path = trial_dir / "result.json"
    if not path.exists():
        return rows
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: everything before it is whole
    return rows


def _error_text(trial_dir: Path) -> str:
    path = trial_dir / "error.txt"
    if not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    # The last line of a Python traceback is "ExceptionType: message".
    return lines[-1][:500] if lines else "error"


def _status(last: dict[str, Any] | None, error: str, live: str | None) -> str:
    """A trial's status from its last result, its error file and (while a search runs) Tune's.

    Tune marks a trial's last result `done` when the trial ended, by itself or stopped by the
    scheduler; a trial whose results just stop (Ctrl-C, a killed driver) was interrupted."""
    if last is not None and last.get("diverged"):
        return "diverged"
    if last is not None and last.get("early_stopped"):
        return "early_stopped"
    if last is not None and last.get("finished"):
        return "completed"
    if live == "ERROR" or (live is None and error):
        return "error"
    if live in ("RUNNING", "PAUSED"):
        return "running"
    if last is None:
        return "pending"
    if live == "TERMINATED" or last.get("done"):
        return "early_stopped"
    return "interrupted"


@dataclass
class TrialLog:
    """What one trial left: its params, its reported results (one per epoch) and its error."""

    experiment: str
    trial_id: str
    params: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    live: str | None = None
    """Tune's status while a search runs (RUNNING, TERMINATED, ERROR, ...); None from disk."""


def read_logs(study_dir: str | Path) -> list[TrialLog]:
    """Every trial of every experiment (search, extend-1, ...) of a study, read from disk."""
    root = Path(study_dir) / RAY_DIR
    if not root.is_dir():
        return []
    logs = []
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in exp.iterdir() if (p / "params.json").exists()):
            try:
                params = json.loads((folder / "params.json").read_text() or "{}")
            except json.JSONDecodeError:
                params = {}
            results = _read_results(folder)
            trial_id = results[-1]["trial_id"] if results else folder.name.split("_", 1)[-1]
            logs.append(TrialLog(exp.name, str(trial_id), params, results, _error_text(folder)))
    return logs


def _searched_value(log: TrialLog, key: str) -> Any:
    # The trial reports the values it actually used (decoded, conditionals resolved).
    used = log.results[-1].get("params") if log.results else None
    value = used.get(key) if isinstance(used, dict) else log.params.get(key)
    if isinstance(value, dict):
        value = value.get("name")
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _held_out(last: dict[str, Any] | None, losses: np.ndarray, vals: np.ndarray) -> dict:
    """{val_loss, best_val_loss}: NaN without a hold-out, +inf for a diverged run (the rule of
    `tuner.core.metrics`), else the last one and the best epoch's as the run reported it."""
    if not (~np.isnan(vals)).any():
        return {"val_loss": math.nan, "best_val_loss": math.nan}
    if metrics.diverged(losses):
        return {"val_loss": math.inf, "best_val_loss": math.inf}
    best = last.get("best_val_loss") if last else None
    if not (isinstance(best, (int, float)) and math.isfinite(best)):
        best = metrics.best_loss(vals[np.isfinite(vals)])
    return {"val_loss": metrics.final_loss(vals), "best_val_loss": float(best)}


def _started(results: list[dict[str, Any]]) -> float:
    """When the trial began: its first result's time (`wall_time`, else Tune's whole-second
    `timestamp`) minus the trainable's running time then; NaN without a result."""
    if not results:
        return math.nan
    first = results[0]
    when = first.get("wall_time", first.get("timestamp"))
    if not isinstance(when, (int, float)):
        return math.nan
    return float(when) - float(first.get("time_total_s") or 0.0)


def tables(logs: Iterable[TrialLog], searched: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) from trial logs: one row per trial, one per trial and epoch.

    `searched` are the dotted keys (and `case`) that get their own trials.csv column."""
    trial_rows: list[dict[str, Any]] = []
    epoch_frames: list[pd.DataFrame] = []
    for log in logs:
        results = [r for r in log.results if "epoch" in r]
        epochs = pd.DataFrame(
            [{c: r.get(c, math.nan) for c in EPOCH_COLUMNS} for r in results], columns=list(EPOCH_COLUMNS)
        )
        epochs = epochs.drop_duplicates("epoch", keep="last").sort_values("epoch")
        epochs.insert(0, "trial_id", log.trial_id)
        epoch_frames.append(epochs)
        last = results[-1] if results else None
        losses = epochs["train_loss"].to_numpy(dtype=float)
        vals = epochs["val_loss"].to_numpy(dtype=float)
        ended_itself = bool(last and (last.get("finished") or last.get("diverged")))
        row: dict[str, Any] = {
            "trial_id": log.trial_id,
            "experiment": log.experiment,
            "status": _status(last, log.error, log.live),
        }
        row.update({key: _searched_value(log, key) for key in searched})
        row.update(
            seed=last.get("seed") if last else None,
            objective=last.get("objective", math.nan) if last else math.nan,
            train_loss=metrics.final_loss(losses),
            best_train_loss=metrics.best_loss(losses),
            **_held_out(last, losses, vals),
            best_epoch=int(last["best_epoch"]) if last and last.get("best_epoch") else None,
            auc=metrics.auc(losses),
            epochs=int(epochs["epoch"].max()) if len(epochs) else 0,
            timesteps=int(last["timesteps"]) if last else 0,
            seconds=float(last["train_time_s"]) if last else 0.0,
            started=_started(log.results),
            diverged_epoch=int(last["epoch"]) if last and last.get("diverged") else None,
            node=last.get("node", "") if last else "",
            device=last.get("device", "") if last else "",
            error="" if ended_itself else log.error,
        )
        trial_rows.append(row)
    columns = ["trial_id", "experiment", "status", *searched, *TRIAL_COLUMNS[3:]]
    trials = pd.DataFrame(trial_rows, columns=columns)
    epochs = (
        pd.concat(epoch_frames, ignore_index=True)
        if epoch_frames
        else pd.DataFrame(columns=["trial_id", *EPOCH_COLUMNS])
    )
    return trials, epochs


def write_tables(study_dir: str | Path, trials: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """trials.csv (sorted best first) and epochs.csv, each written atomically."""
    study_dir = Path(study_dir)
    ranked = trials.sort_values("objective", na_position="last", kind="stable")
    atomic_write_csv(study_dir / "trials.csv", ranked)
    atomic_write_csv(study_dir / "epochs.csv", epochs)


def load_tables(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's (trials, epochs) as DataFrames, for notebooks: `trials, epochs = load_tables(...)`."""
    study_dir = Path(study_dir)
    return pd.read_csv(study_dir / "trials.csv"), pd.read_csv(study_dir / "epochs.csv")
