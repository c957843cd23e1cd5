"""A study folder's life outside Ray: plan a run (new, --resume, --extend), its state file, and
the files written at the end (study.yaml, trials.csv, epochs.csv, best_config.yaml).

`plan` validates everything that can be validated before Ray starts, so bad input costs nothing.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from tuner import preflight
from tuner import study_dir as folders
from tuner.core import config as cfg
from tuner.core.config import ConfigError
from tuner.space import SpaceFile, load_space, searched_keys
from tuner.study_dir import STATE_FILE

SMOKE_OVERRIDES = [*cfg.SMOKE_OVERRIDES, "search.num_samples=4", "search.time_budget_s=300"]
"""--smoke: tiny data and budget, so the whole command runs in about a minute on 2 CPUs."""
STUDY_FILES = ("trials.csv", "epochs.csv", "best_config.yaml", "study.yaml", "report.md", "optuna.db")


class StudyFinished(Exception):
    """--resume on a study that already ran to its end: said plainly, exit 0."""

    def __init__(self, message: str, study_dir: Path) -> None:
        super().__init__(message)
        self.study_dir = study_dir


@dataclass(frozen=True)
class Plan:
    """Everything decided before Ray starts."""

    spec: SpaceFile
    study_dir: Path
    experiment: str
    restore: bool
    num_samples: int
    seed: int
    steps_per_epoch: int


def study_state(study_dir: Path) -> dict[str, Any]:
    """The study's record of experiments, checked (a corrupt one is a ConfigError)."""
    return folders.read_state(study_dir)


def write_state(study_dir: Path, state: dict[str, Any]) -> None:
    from tuner.results import atomic_write_text

    atomic_write_text(study_dir / STATE_FILE, json.dumps(state, indent=1))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--results-dir: cannot write to {folder} ({exc.strerror or exc}); allowed: a writable folder"
        ) from None


def plan(args) -> Plan:
    """Validate everything that can be validated without Ray; raise ConfigError otherwise.

    `args` is a `tuner.api.SearchOptions` (or anything with its attributes). From the
    study folder's claim on, the caller must `folders.abandon()` on failure and
    `folders.release()` at the end (`tuner.api.run` does)."""
    preflight.check_flags(args)
    overrides = list(SMOKE_OVERRIDES) if args.smoke else []
    overrides += list(args.overrides)
    if args.num_samples is not None:
        overrides.append(f"search.num_samples={args.num_samples}")
    if args.time_budget is not None:
        overrides.append(f"search.time_budget_s={args.time_budget}")
    if args.name is not None:
        overrides.append(f"name={json.dumps(args.name)}")  # a name is a string, never YAML
    spec = preflight.absolute_data_path(load_space(args.space, overrides))
    preflight.check_spec(spec)
    folders.check_name(spec.name)
    if args.resume and args.extend is not None:
        raise ConfigError("--resume and --extend: allowed: one of them")
    if args.extend is not None and args.extend < 1:
        raise ConfigError(f"--extend: got {args.extend}; allowed: an integer >= 1")

    results_dir = Path(args.results_dir)
    if args.address and not results_dir.is_absolute() and "://" not in str(args.results_dir):
        raise ConfigError(
            f"--results-dir: {str(args.results_dir)!r} is relative but --address joins a "
            "cluster; allowed: an absolute path on a filesystem every node mounts (NFS) "
        )
    study_dir = results_dir.resolve() / spec.name
    _check_writable(study_dir.parent)

    # Validates a data file (or the generator's settings) before Ray starts, and sizes epochs.
    from tuner.space import first_config

    steps_per_epoch = preflight.check_data(first_config(spec))

    folders.claim(study_dir)  # held to the end of the command (tuner.api.run releases it)
    state = folders.read_state(study_dir)
    done = state["experiments"]
    if args.resume:
        if not done:
            raise ConfigError(
                f"--resume: no study in {study_dir}; allowed: the name of an "
                "existing study (start it without --resume)"
            )
        last = done[-1]
        if last.get("finished"):
            raise StudyFinished(
                f"study {spec.name!r} already finished ({last['why']}): "
                f"nothing to resume; run more trials with --extend N",
                study_dir,
            )
        # A driver killed before Tune wrote its experiment leaves nothing to restore: start it.
        started = (study_dir / "ray" / last["name"] / "tuner.pkl").exists()
        if started and not args.trust_study_files:
            folders.check_trust(study_dir, last["name"])
        if started:
            folders.check_moved(study_dir, last, expected_trials(spec, last["name"], last["num_samples"]))
        return Plan(
            spec, study_dir, last["name"], started, last["num_samples"], last["seed"], steps_per_epoch
        )
    if args.extend is not None:
        if not done:
            raise ConfigError(f"--extend: no study in {study_dir} to extend; allowed: an existing study")
        folders.check_extend(study_dir, spec.raw, state, not spec.uses_variant_generator)
        name = f"extend-{len(done)}"
        # A fresh sampler seed, or the resumed Optuna study would replay its first suggestions.
        return Plan(
            spec, study_dir, name, False, args.extend, spec.search.seed + 1000 * len(done), steps_per_epoch
        )
    if done:
        raise ConfigError(
            f"--name: study {spec.name!r} already exists in {study_dir}; allowed: "
            "--resume, --extend N, or another --name"
        )
    folders.check_new(study_dir)
    return Plan(spec, study_dir, "search", False, spec.search.num_samples, spec.search.seed, steps_per_epoch)


def expected_trials(spec: SpaceFile, experiment: str, num_samples: int) -> int:
    """How many trials an experiment creates (as `tuner.tuning.make_tuner` asks Tune for):
    `num_samples` (passes over the grid, for Tune's variant generator), plus the start points
    in a study's first experiment."""
    from optuna.distributions import CategoricalDistribution

    grid = 1
    if spec.uses_variant_generator:
        for p in spec.params:
            if isinstance(p.distribution, CategoricalDistribution) and (
                p.grid or spec.search.algorithm == "grid"
            ):
                grid *= len(p.distribution.choices)
    points = len(spec.search.start_from) if experiment == "search" else 0
    return num_samples * grid + points


def record_experiment(p: Plan, mlflow: str | None = None) -> dict[str, Any]:
    """Add this run's experiment to study_state.json (unfinished) unless it is there; the state.

    `mlflow`: the tracking URI it logs to, so --resume/--extend go on logging there."""
    state = study_state(p.study_dir)
    if not any(e["name"] == p.experiment for e in state["experiments"]):
        state["experiments"].append(
            {
                "name": p.experiment,
                "num_samples": p.num_samples,
                "seed": p.seed,
                "finished": False,
                "why": "",
                "folder": str(p.study_dir),
                **({"mlflow": mlflow} if mlflow else {}),
            }
        )
        write_state(p.study_dir, state)
    return state


# ---------------------------------------------------------------- files of a study


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("lstm-tuner", "torch", "ray", "optuna", "numpy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_study_files(p: Plan, argv: list[str]) -> None:
    """study.yaml: the resolved space file, the command (`argv` of tuner.search) and versions."""
    from tuner.core.baselines import describe, reference
    from tuner.results import atomic_write_yaml
    from tuner.space import first_config

    doc = dict(p.spec.raw)
    # The data, its split and both baselines, on the first trial's data: said once, kept.
    try:
        ref = reference(first_config(p.spec).data)
        print("\n".join(describe(ref)), flush=True)
    except (ConfigError, OSError) as exc:  # the trials will say it too; the search goes on
        ref = {"baselines_error": str(exc)}
        print(f"warning: no split or baselines ({exc})", file=sys.stderr, flush=True)
    doc.update(ref)
    doc["command"] = shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "tuner.search", *argv])
    doc["versions"] = _versions()
    atomic_write_yaml(p.study_dir / "study.yaml", doc)


def best_trial(trials, mode: str):
    """The best completed or early-stopped trial with a finite objective (a row), or None."""
    ok = trials[trials["status"].isin(["completed", "early_stopped"])]
    ok = ok[ok["objective"].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    if not len(ok):
        return None
    return ok.sort_values("objective", ascending=mode == "min", kind="stable").iloc[0]


def best_config_header(best) -> str:
    """YAML comments that say which trial and epoch best_config.yaml comes from (comments, so
    the file stays a plain run config for `python -m tuner.train --config`)."""

    def num(key: str) -> float:
        try:
            return float(best.get(key))
        except (TypeError, ValueError):
            return math.nan

    lines = [f"# best trial {best['trial_id']} ({best['status']}, {num('epochs'):.0f} epochs)"]
    if math.isfinite(num("best_val_loss")) and math.isfinite(num("best_epoch")):
        lines.append(
            f"# best held-out loss {num('best_val_loss'):.5g} reached at epoch "
            f"{num('best_epoch'):.0f}; with train.early_stopping a re-run keeps that "
            "epoch's weights (python -m tuner.train --config this file --save-best best.pt)"
        )
    return "\n".join(lines) + "\n"


def export(p: Plan) -> tuple[Any, Any]:
    """Final tables from disk, best_config.yaml from the best trial; returns (trials, epochs)."""
    from tuner.results import atomic_write_text, read_logs, tables, write_tables
    from tuner.space import resolve

    logs = read_logs(p.study_dir)
    trials, epochs = tables(logs, searched_keys(p.spec))
    write_tables(p.study_dir, trials, epochs)
    best = best_trial(trials, p.spec.search.mode)
    if best is not None:
        params = next(log.params for log in logs if log.trial_id == best["trial_id"])
        config, _ = resolve(p.spec, params)
        atomic_write_text(
            p.study_dir / "best_config.yaml",
            best_config_header(best) + yaml.safe_dump(config.to_dict(), sort_keys=False),
        )
    return trials, epochs


def summary(p: Plan, trials) -> str:
    import pandas as pd

    counts = trials["status"].value_counts().to_dict()
    cols = [
        "trial_id",
        "status",
        *searched_keys(p.spec),
        "objective",
        "best_train_loss",
        "best_val_loss",
        "best_epoch",
        "epochs",
        "seconds",
    ]
    top = trials.sort_values("objective", ascending=p.spec.search.mode == "min").head(5)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        table = top[[c for c in cols if c in top]].to_string(index=False)
    files = "\n".join(f"  {p.study_dir / f}" for f in STUDY_FILES if (p.study_dir / f).exists())
    status = ", ".join(f"{v} {k}" for k, v in counts.items())
    return (
        f"\nstudy {p.spec.name}: {len(trials)} trials ({status}); objective "
        f"{p.spec.search.metric} ({p.spec.search.mode})\n{table}\n\nfiles:\n{files}"
    )
