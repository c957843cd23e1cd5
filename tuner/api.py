"""The search service for Python: `run_search(...) -> Study` and `load_study(path) -> Study`.

`python -m tuner.search` is a thin layer over `run`: it parses its flags into `SearchOptions`
and calls it, so a notebook and the command line run the same code and leave the same files:

    import tuner
    study = tuner.run_search("search_spaces/smoke.yaml", smoke=True, dashboard=False)
    print(study.trials[["trial_id", "status", "objective"]])
    print(study.best_config["train"])
    study.epochs.groupby("trial_id")["val_loss"].min()

Bad input raises `tuner.ConfigError` (one line: what is wrong, what is allowed) before anything
is written; the command line turns it into that line and exit code 2.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tuner.core.config import ConfigError
from tuner.study import StudyFinished, plan

__all__ = ["ConfigError", "SearchOptions", "Study", "load_study", "run", "run_search"]


@dataclass(frozen=True)
class SearchOptions:
    """One search, as `python -m tuner.search` flags (same names, same defaults)."""

    space: str | Path
    """The space YAML, e.g. search_spaces/full.yaml."""
    name: str | None = None
    """Study name (default: the file's `name`)."""
    results_dir: str | Path = "results"
    """Parent folder of study folders."""
    overrides: tuple[str, ...] = ()
    """key=value overrides, e.g. ("data.length=4000",)."""
    smoke: bool = False
    """Tiny data and budget (about a minute)."""
    num_samples: int | None = None
    time_budget: float | None = None
    address: str | None = field(default_factory=lambda: os.environ.get("RAY_ADDRESS"))
    """Join a running cluster (auto or HOST:PORT); None: start Ray here (or use the running)."""
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    num_cpus: int | None = None
    num_gpus: int | None = None
    """GPUs of a local Ray (logical ones too); refused with `address` (the cluster says)."""
    resume: bool = False
    extend: int | None = None
    report: bool = True
    """Write report.md at the end."""
    mlflow: str | None = None
    """MLflow tracking: "local" (mlflow.db and mlartifacts/ in the study folder) or a URI;
    None: the space file's `search.mlflow` (or, on --resume/--extend, what the study used
    before)."""
    tensorboard: bool = False
    """TensorBoard event files per trial under the study's ray/ folder."""
    trust_study_files: bool = False
    """resume even when the study's pickles are not this user's alone (see README, Safety)."""

    def argv(self) -> list[str]:
        """The equivalent `python -m tuner.search` arguments (recorded in study.yaml)."""
        out = ["--space", str(self.space)]
        default = SearchOptions(space=self.space, address=None)
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name in ("space", "overrides") or value == getattr(default, f.name):
                continue
            if isinstance(value, bool):
                out.append(flag if value else f"--no-{f.name.replace('_', '-')}")
            elif f.name == "mlflow":  # `--mlflow URI` would take a following override
                out.append(f"{flag}={value}")
            else:
                out += [flag, str(value)]
        return [*out, *self.overrides]


@dataclass(frozen=True, eq=False)
class Study:
    """A study folder read back: its tables, its best config, where its files are."""

    name: str
    dir: Path
    trials: Any
    """pandas DataFrame of trials.csv: one row per trial, best first."""
    epochs: Any
    """pandas DataFrame of epochs.csv: one row per trial and epoch."""
    best_config: dict[str, Any] | None
    """best_config.yaml as a dict (runnable with python -m tuner.train), None if no trial ended."""
    finished: bool
    """False when the last experiment was interrupted (continue it with resume=True)."""
    why: str
    """Why the last experiment ended ('' when interrupted)."""

    @property
    def trials_csv(self) -> Path:
        return self.dir / "trials.csv"

    @property
    def epochs_csv(self) -> Path:
        return self.dir / "epochs.csv"

    @property
    def best_config_yaml(self) -> Path:
        return self.dir / "best_config.yaml"

    @property
    def report_md(self) -> Path:
        return self.dir / "report.md"

    @property
    def study_yaml(self) -> Path:
        return self.dir / "study.yaml"


def load_study(path: str | Path) -> Study:
    """A study folder (results/NAME) that a search has written, as a `Study`."""
    import yaml

    from tuner.results import load_tables
    from tuner.study import study_state

    folder = Path(path).resolve()
    if not (folder / "trials.csv").exists():
        raise ConfigError(f"{path}: no trials.csv; allowed: a study folder written by a search")
    trials, epochs = load_tables(folder)
    best = folder / "best_config.yaml"
    last = (study_state(folder)["experiments"] or [{}])[-1]
    return Study(
        name=folder.name,
        dir=folder,
        trials=trials,
        epochs=epochs,
        best_config=yaml.safe_load(best.read_text()) if best.exists() else None,
        finished=bool(last.get("finished")),
        why=last.get("why", ""),
    )


def run_search(
    space: str | Path,
    *,
    name: str | None = None,
    results_dir: str | Path = "results",
    overrides: tuple[str, ...] | list[str] = (),
    smoke: bool = False,
    **options: Any,
) -> Study:
    """Run (or resume=True / extend=N) a search, exactly as `python -m tuner.search`; its Study.

    `options` are the other `SearchOptions` fields (dashboard=False, num_samples=8, mlflow=
    "local", tensorboard=True, ...). Uses a Ray that is already initialised as it is."""
    return run(
        SearchOptions(
            space=space,
            name=name,
            results_dir=results_dir,
            overrides=tuple(overrides),
            smoke=smoke,
            **options,
        )
    )


def _mlflow_setting(opts: SearchOptions, p, state: dict[str, Any]) -> str | None:
    """--mlflow, else the space file's search.mlflow, else what earlier experiments used."""
    used = [e["mlflow"] for e in state["experiments"] if e.get("mlflow")]
    return opts.mlflow or p.spec.search.mlflow or (used[-1] if used else None)


def run(opts: SearchOptions, argv: list[str] | None = None) -> Study:
    """The search itself; `argv` is the command line recorded in study.yaml (default: the
    equivalent of `opts`). Raises ConfigError on bad input, before anything is written.

    The study folder is locked for the whole call (a second search on it is refused); when
    the call fails before the search started, a folder it created is removed again."""
    from tuner import study_dir as folders

    try:
        return _run(opts, argv)
    except BaseException:  # ConfigError, KeyboardInterrupt, anything: keep nothing half-made
        folders.abandon()
        raise
    finally:
        folders.release()


def _run(opts: SearchOptions, argv: list[str] | None) -> Study:
    from tuner import tracking
    from tuner.study import study_state, write_state
    from tuner.tuning import why_finished

    try:
        p = plan(opts)
    except StudyFinished as exc:
        print(str(exc))
        return load_study(exc.study_dir)
    mlflow = _mlflow_setting(opts, p, study_state(p.study_dir))
    if mlflow:
        tracking.require("mlflow", "--mlflow", "mlflow")
    if opts.tensorboard:
        tracking.require("tensorboardX", "--tensorboard", "tensorboard")
    uri = tracking.tracking_uri(mlflow, p.study_dir) if mlflow else None
    artifacts = tracking.artifact_location(mlflow, p.study_dir) if mlflow else None
    state, grid, elapsed = _fit(opts, p, argv, uri, artifacts)

    why = why_finished(p, grid, elapsed)
    state["experiments"][-1].update(finished=bool(why), why=why)
    write_state(p.study_dir, state)
    return _finish(opts, p, uri, why)


def _fit(opts: SearchOptions, p, argv: list[str] | None, uri: str | None, artifacts: str | None):
    """Start or join Ray, record the experiment, run Tune; (study state, ResultGrid, seconds)."""
    import ray

    from tuner import study_dir as folders
    from tuner import tracking
    from tuner.cluster import check_resources, start_ray
    from tuner.study import record_experiment, write_study_files
    from tuner.tuning import _live_tables_callback, make_tuner

    url, owned = start_ray(opts)
    try:
        check_resources(p.spec)  # bad input too: nothing may be written before it passes
        p.study_dir.mkdir(parents=True, exist_ok=True)
        if p.experiment == "search" and not p.restore:  # --extend/--resume keep the record
            write_study_files(p, opts.argv() if argv is None else argv)
        state = record_experiment(p, mlflow=uri)
        if uri and p.restore and not state["experiments"][-1].get("mlflow"):
            # Its callbacks were fixed when Tune first started it (restored from tuner.pkl).
            print(
                "warning: --mlflow: this experiment started without MLflow, so its trials "
                "are not logged; later --extend runs will be",
                file=sys.stderr,
            )
        if url:
            print(
                f"Ray dashboard: http://{url}  (its API wants Ray's token, ~/.ray/auth_token; "
                "no user accounts: keep it on 127.0.0.1)",
                flush=True,
            )
        if not p.spec.uses_variant_generator:  # an Optuna study exists
            print(f"Optuna dashboard: optuna-dashboard sqlite:///{p.study_dir / 'optuna.db'}", flush=True)
        if uri:
            tracking.MlflowStudy(uri, p.spec.name, artifacts)  # the experiment, before Tune
            print(f"MLflow: mlflow ui --backend-store-uri {uri}", flush=True)
        if opts.tensorboard:
            print(f"TensorBoard: tensorboard --logdir {p.study_dir / 'ray'}", flush=True)
        callbacks = [_live_tables_callback(p)]
        if uri:
            callbacks.append(tracking.mlflow_callback(uri, p.spec.name, p.experiment, p.spec))
        if opts.tensorboard:
            callbacks.append(tracking.tensorboard_callback())
        tuner = make_tuner(p, callbacks)
        folders.started(p.study_dir)  # from here a failure keeps the folder (it can resume)
        started = time.monotonic()
        grid = tuner.fit()
        elapsed = time.monotonic() - started
    finally:
        if owned:
            ray.shutdown()
    return state, grid, elapsed


def _finish(opts: SearchOptions, p, uri: str | None, why: str) -> Study:
    """Tables, best_config.yaml, MLflow's final tags, report.md, the summary; the Study."""
    from tuner.study import best_trial, export, summary

    trials, _ = export(p)
    if uri:
        from tuner.tracking import MlflowStudy

        best = best_trial(trials, p.spec.search.mode)
        try:
            MlflowStudy(uri, p.spec.name).finish(
                trials, None if best is None else str(best["trial_id"]), p.study_dir / "best_config.yaml"
            )
        except Exception as exc:  # a tracking server down must not lose a finished search
            print(f"warning: MLflow runs not finished ({exc.__class__.__name__}: {exc})", file=sys.stderr)
    if not why:
        print("interrupted: continue with the same command and --resume", file=sys.stderr)
    if opts.report:
        try:
            from tuner.report import make_report

            make_report(p.study_dir)
        except Exception as exc:  # a failed plot must not lose a finished search
            print(f"warning: report not written ({exc.__class__.__name__}: {exc})", file=sys.stderr)
    print(summary(p, trials))
    return load_study(p.study_dir)
