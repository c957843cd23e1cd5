"""A study's Ray experiment folders -> pandas tables -> `trials.csv` and `epochs.csv`.

Tables are rebuilt from what Tune wrote to disk (each trial's `result.json`, `error.txt`), never
from live Ray objects, so they can be made again after a crash, and they are de-duplicated on
(trial, epoch): after a hard kill and a restore, Tune re-runs the epochs since its last snapshot.
Every file is written atomically (temporary file, then rename), so a reader never sees half a CSV.
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from tuner.core.train import EPOCH_COLUMNS

RAY_DIR = "ray"
"""Tune's storage folder inside a study folder; one experiment per run of the search."""
TRIAL_COLUMNS = ("trial_id", "experiment", "status", "seed", "objective", "train_loss",
                 "best_train_loss", "val_loss", "best_val_loss", "best_epoch", "auc", "epochs",
                 "timesteps", "seconds", "diverged_epoch", "error")
"""trials.csv columns; the searched keys are inserted after `status`. `train_loss` and
`val_loss` are the last epoch's (see tuner.core.train.EPOCH_COLUMNS), `best_*` the lowest of the
run (`best_val_loss`: the best epoch's, see EPOCH_COLUMNS), `best_epoch` the epoch of the best
model (lowest val_loss, else lowest train_loss), `auc` the mean train_loss."""
STATUSES = ("completed", "early_stopped", "diverged", "error", "running", "pending",
            "interrupted")
"""`early_stopped`: ended before max_epochs by the scheduler (ASHA, ...) or by the run's own
train.early_stopping; `interrupted`: the search stopped (Ctrl-C, a killed driver) mid-trial;
--resume goes on."""


STALE_TEMP_S = 600.0
"""A temporary file of `atomic_write_text` older than this was left by a killed writer."""


def _umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _remove_stale_temps(path: Path) -> None:
    """Delete temporaries of `path` that a killed writer left (SIGKILL runs no cleanup).

    Only old ones: a live writer's temporary exists for the seconds of one write."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except OSError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` always holds either the old or the new whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    """CSV with floats to 9 significant digits (float32 losses need no more; halves the size)."""
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


def _best_val_loss(last: dict[str, Any] | None, finite_val: pd.Series) -> float:
    """The best epoch's held-out loss as the run reported it, else the lowest one."""
    value = last.get("best_val_loss") if last else None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return float(finite_val.min()) if len(finite_val) else math.nan


def tables(logs: Iterable[TrialLog], searched: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) from trial logs: one row per trial, one per trial and epoch.

    `searched` are the dotted keys (and `case`) that get their own trials.csv column."""
    trial_rows: list[dict[str, Any]] = []
    epoch_frames: list[pd.DataFrame] = []
    for log in logs:
        results = [r for r in log.results if "epoch" in r]
        epochs = pd.DataFrame([{c: r.get(c, math.nan) for c in EPOCH_COLUMNS} for r in results],
                              columns=list(EPOCH_COLUMNS))
        epochs = epochs.drop_duplicates("epoch", keep="last").sort_values("epoch")
        epochs.insert(0, "trial_id", log.trial_id)
        epoch_frames.append(epochs)
        last = results[-1] if results else None
        losses = epochs["train_loss"].astype(float)
        finite = losses[losses.map(math.isfinite)]
        vals = epochs["val_loss"].astype(float)
        finite_val = vals[vals.map(math.isfinite)]
        ended_itself = bool(last and (last.get("finished") or last.get("diverged")))
        row: dict[str, Any] = {"trial_id": log.trial_id, "experiment": log.experiment,
                               "status": _status(last, log.error, log.live)}
        row.update({key: _searched_value(log, key) for key in searched})
        row.update(
            seed=last.get("seed") if last else None,
            objective=last.get("objective", math.nan) if last else math.nan,
            train_loss=float(losses.iloc[-1]) if len(losses) else math.nan,
            best_train_loss=float(finite.min()) if len(finite) else math.nan,
            val_loss=float(vals.iloc[-1]) if len(vals) else math.nan,
            best_val_loss=_best_val_loss(last, finite_val),
            best_epoch=int(last["best_epoch"]) if last and last.get("best_epoch") else None,
            auc=float(finite.mean()) if len(finite) else math.nan,
            epochs=int(epochs["epoch"].max()) if len(epochs) else 0,
            timesteps=int(last["timesteps"]) if last else 0,
            seconds=float(last["train_time_s"]) if last else 0.0,
            diverged_epoch=int(last["epoch"]) if last and last.get("diverged") else None,
            error="" if ended_itself else log.error,
        )
        trial_rows.append(row)
    columns = ["trial_id", "experiment", "status", *searched, *TRIAL_COLUMNS[3:]]
    trials = pd.DataFrame(trial_rows, columns=columns)
    epochs = (pd.concat(epoch_frames, ignore_index=True) if epoch_frames
              else pd.DataFrame(columns=["trial_id", *EPOCH_COLUMNS]))
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
