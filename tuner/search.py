"""`python -m tuner.search --space FILE.yaml`: Ray Tune trials of the training core, searched by Optuna.

The flow: validate the space file (and data) before anything starts -> start or join Ray ->
Tuner(trainable, OptunaSearch | Tune's variant generator, ASHA | median | PBT | FIFO) -> tables
rewritten while it runs -> trials.csv, epochs.csv, best_config.yaml, study.yaml, report.md.

A study folder `results/NAME/` holds everything: Tune's experiments under `ray/` (`search`, then
`extend-1`, ... for each `--extend`), the Optuna study in `optuna.db`, and the exported tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tuner import preflight
from tuner import study_dir as folders
from tuner.core.config import ConfigError
from tuner.space import SpaceFile, load_space, searched_keys

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
STATE_FILE = "study_state.json"
"""Which experiments a study has run and whether the last one finished (for --resume/--extend)."""
SMOKE_OVERRIDES = ["data.n_series=4", "data.length=300", "data.window=16", "data.path=null",
                   "model.dense_units=8", "model.lstm_units=8", "train.max_epochs=3",
                   "search.num_samples=4", "search.time_budget_s=300"]
"""--smoke: tiny data and budget, so the whole command runs in about a minute on 2 CPUs."""


class _Parser(argparse.ArgumentParser):
    """argparse that answers bad flags with one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see python -m tuner.search --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m tuner.search",
        description="Search how to train the chunked LSTM fastest (Ray Tune + Optuna).")
    p.add_argument("--space", required=True, help="search space YAML, e.g. search_spaces/full.yaml")
    p.add_argument("--name", help="study name (default: the file's `name`)")
    p.add_argument("--results-dir", default="results", help="parent folder of study folders")
    p.add_argument("--num-samples", type=int, help="override search.num_samples")
    p.add_argument("--time-budget", type=float, help="override search.time_budget_s (seconds)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="join a running cluster (auto or HOST:PORT); default: start Ray here")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the Ray dashboard (local Ray only)")
    p.add_argument("--dashboard-host", default="127.0.0.1")
    p.add_argument("--dashboard-port", type=int, default=8265)
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--extend", type=int, metavar="N", help="run N more trials on a finished study")
    p.add_argument("--smoke", action="store_true", help="tiny data and budget (about a minute)")
    p.add_argument("--no-report", action="store_true", help="skip report.md at the end")
    p.add_argument("--trust-study-files", action="store_true",
                   help="--resume even when the study's pickles are not yours alone")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.length=4000")
    return p.parse_args(argv)


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


def _study_state(study_dir: Path) -> dict[str, Any]:
    return folders.read_state(study_dir)


def _write_state(study_dir: Path, state: dict[str, Any]) -> None:
    from tuner.results import atomic_write_text

    atomic_write_text(study_dir / STATE_FILE, json.dumps(state, indent=1))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--results-dir: cannot write to {folder} ({exc.strerror or exc}); "
                          "allowed: a writable folder") from None


def plan(args: argparse.Namespace) -> Plan:
    """Validate everything that can be validated without Ray; raise ConfigError otherwise."""
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
    if args.address and not results_dir.is_absolute() and "://" not in args.results_dir:
        raise ConfigError(
            f"--results-dir: {args.results_dir!r} is relative but --address joins a cluster; "
            "allowed: an absolute path on a filesystem every node mounts (NFS) ")
    study_dir = results_dir.resolve() / spec.name
    _check_writable(study_dir.parent)

    # Validates a data file (or the generator's settings) before Ray starts, and sizes epochs.
    from tuner.space import first_config

    steps_per_epoch = preflight.check_data(first_config(spec))

    folders.claim(study_dir)  # held to the end of the command (main releases it)
    state = folders.read_state(study_dir)
    done = state["experiments"]
    if args.resume:
        if not done:
            raise ConfigError(f"--resume: no study in {study_dir}; allowed: the name of an "
                              "existing study (start it without --resume)")
        last = done[-1]
        if last.get("finished"):
            raise StudyFinished(f"study {spec.name!r} already finished ({last['why']}): "
                                f"nothing to resume; run more trials with --extend N")
        # A driver killed before Tune wrote its experiment leaves nothing to restore: start it.
        started = (study_dir / "ray" / last["name"] / "tuner.pkl").exists()
        if started and not args.trust_study_files:
            folders.check_trust(study_dir, last["name"])
        if started:
            from tuner.space import grid_size

            folders.check_moved(study_dir, last, grid_size(spec) * last["num_samples"])
        return Plan(spec, study_dir, last["name"], started, last["num_samples"], last["seed"],
                    steps_per_epoch)
    if args.extend is not None:
        if not done:
            raise ConfigError(f"--extend: no study in {study_dir} to extend; allowed: an "
                              "existing study")
        folders.check_extend(study_dir, spec.raw, state, spec.search.algorithm == "optuna")
        name = f"extend-{len(done)}"
        # A fresh sampler seed, or the resumed Optuna study would replay its first suggestions.
        return Plan(spec, study_dir, name, False, args.extend, spec.search.seed + 1000 * len(done),
                    steps_per_epoch)
    if done:
        raise ConfigError(f"--name: study {spec.name!r} already exists in {study_dir}; allowed: "
                          "--resume, --extend N, or another --name")
    folders.check_new(study_dir)
    return Plan(spec, study_dir, "search", False, spec.search.num_samples, spec.search.seed,
                steps_per_epoch)


class StudyFinished(Exception):
    """--resume on a study that already ran to its end: said plainly, exit 0."""


# ---------------------------------------------------------------- Ray side


def start_ray(args: argparse.Namespace) -> tuple[str | None, bool]:
    """Join `--address` or start a local instance.

    Returns (dashboard URL or None, whether this call started Ray and so must shut it down).
    An already initialised Ray (a notebook, a test session) is used as it is."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact one-table progress display
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Snapshot the experiment (and copy trial results to the study folder) every 2 s instead of
    # Tune's >= 10 s: a killed driver then loses, and a resume re-runs, at most 2 s of epochs.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        return None, False
    if args.address:
        why = preflight.probe_ray_head(args.address)  # at most 2 x 5 s, never a hang
        if why:
            raise ConfigError(f"--address: {args.address}: {why}; allowed: the address of a "
                              "running Ray head (ray start --head)")
        ctx = ray.init(address=args.address)
        return ctx.dashboard_url or None, True
    ctx = ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=args.dashboard,
                   dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port)
    return (ctx.dashboard_url if args.dashboard else None), True


def check_resources(spec: SpaceFile) -> None:
    """A trial that fits on no node would wait forever: say so now, with what the cluster has."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    fits = any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes)
    if not fits:
        total = ray.cluster_resources()
        biggest = max((n.get("CPU", 0) for n in nodes), default=0)
        raise ConfigError(
            f"resources: a trial asks for {cpu:g} CPU and {gpu:g} GPU but no node has that "
            f"(cluster: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, "
            f"{total.get('GPU', 0):g} GPU, largest node {biggest:g} CPU); allowed: at most that")


def make_sampler(name: str, seed: int):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                  constant_liar=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[name]()


def scheduler_metric(spec: SpaceFile) -> str:
    """time_to_target is +inf until reached, useless for comparing trials mid-run: use loss."""
    return "loss" if spec.search.metric == "time_to_target" else "objective"


def make_scheduler(spec: SpaceFile, steps_per_epoch: int):
    from ray.tune import schedulers
    from tuner.space import pbt_mutations

    s = spec.search.scheduler
    metric, mode = scheduler_metric(spec), spec.search.mode
    max_epochs = int(spec.base.get("train", {}).get("max_epochs", 100))
    horizon = {"timesteps": max_epochs * steps_per_epoch, "training_iteration": max_epochs,
               "time_total_s": spec.search.time_budget_s or 10 * 24 * 3600}
    if s.type == "fifo":
        return schedulers.FIFOScheduler()
    if s.type == "asha":
        max_t = s.max_t or horizon[s.time_attr]
        return schedulers.ASHAScheduler(
            time_attr=s.time_attr, metric=metric, mode=mode, max_t=max_t,
            grace_period=min(s.grace_period, max_t), reduction_factor=s.reduction_factor)
    if s.type == "median":
        return schedulers.MedianStoppingRule(time_attr=s.time_attr, metric=metric, mode=mode,
                                             grace_period=s.grace_period)
    if s.type == "pbt":
        return schedulers.PopulationBasedTraining(
            time_attr=s.time_attr, metric=metric, mode=mode,
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations=pbt_mutations(spec), synch=False)
    raise ConfigError(f"search.scheduler.type: got {s.type!r}")  # pragma: no cover


def make_tuner(p: Plan, callbacks: list):
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    from tuner.space import optuna_space, tune_space
    from tuner.trial import run_trial

    spec, search = p.spec, p.spec.search
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    storage = str(p.study_dir / "ray")
    if p.restore:
        folders.resuming(p.study_dir)  # its pickles open this folder's optuna.db, moved or not
        return tune.Tuner.restore(str(Path(storage) / p.experiment), trainable=trainable,
                                  resume_unfinished=True, resume_errored=False)
    searcher, param_space = None, {}
    if search.algorithm == "optuna":
        db = folders.storage(p.study_dir)
        searcher = OptunaSearch(space=optuna_space(spec.params), metric="objective",
                                mode=search.mode, sampler=make_sampler(search.sampler, p.seed),
                                study_name=spec.name, storage=db)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        param_space = tune_space(spec)
        # Tune ignores max_concurrent_trials when it is handed a variant generator.
        searcher = BasicVariantGenerator(random_state=p.seed, max_concurrent=search.max_concurrent)
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # Only the JSON results (read back for the tables) and progress.csv; no TensorBoard files.
    callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), *callbacks]
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=make_scheduler(spec, p.steps_per_epoch),
            num_samples=p.num_samples,
            max_concurrent_trials=search.max_concurrent if search.algorithm == "optuna" else None,
            time_budget_s=search.time_budget_s, reuse_actors=True,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=p.experiment, storage_path=storage, callbacks=callbacks,
            progress_reporter=tune.CLIReporter(
                parameter_columns={k: k.rsplit(".", 1)[-1] for k in searched_keys(spec)},
                metric_columns={"epoch": "epoch", "chunks": "N", "loss": "loss",
                                "objective": "objective"},
                max_report_frequency=15, max_progress_rows=12),
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            # Tune's num_to_keep deletes checkpoints that a restored experiment snapshot may
            # still point at (and PBT may still exploit): keep them all while a trial runs, and
            # prune a trial's older ones when it ends (LiveTables).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),
    )


def _live_tables_callback(p: Plan):
    """A Tune callback that rewrites trials.csv/epochs.csv while the search runs."""
    from ray import tune
    from tuner.results import TrialLog, read_logs, tables, write_tables

    searched = searched_keys(p.spec)

    class LiveTables(tune.Callback):
        def __init__(self, every_s: float = 15.0) -> None:
            self.every_s = every_s
            self.last = 0.0
            self.folder = p.study_dir
            self.disk = {(log.experiment, log.trial_id): log for log in read_logs(self.folder)}
            self.live: dict[str, TrialLog] = {}

        def __setstate__(self, state: dict) -> None:
            # Restored from tuner.pkl on --resume: write to the folder being resumed, which
            # may have been moved or copied since the callback was pickled.
            self.__dict__.update(state)
            self.folder = folders.resuming_folder() or self.folder

        def _log(self, trial) -> TrialLog:
            log = self.live.get(trial.trial_id)
            if log is None:
                old = self.disk.pop((p.experiment, trial.trial_id), None)
                log = old or TrialLog(p.experiment, trial.trial_id, dict(trial.config))
                self.live[trial.trial_id] = log
            log.live = trial.status
            return log

        def write(self, force: bool = False) -> None:
            if not force and time.monotonic() - self.last < self.every_s:
                return
            self.last = time.monotonic()
            try:
                write_tables(self.folder, *tables([*self.disk.values(), *self.live.values()],
                                                  searched))
            except OSError as exc:  # disk full: the old tables stay whole; trials go on
                print(f"warning: tables not updated ({exc})", file=sys.stderr)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._log(trial).results.append(result)
            self.write()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._log(trial).live = "TERMINATED"
            self.write(force=True)
            prune_checkpoints(self.folder / "ray" / p.experiment / f"trial_{trial.trial_id}")

        def on_trial_error(self, iteration, trials, trial, **info):
            log = self._log(trial)
            log.live = "ERROR"
            log.error = str(getattr(trial, "error_msg", "") or "error").splitlines()[-1][:500]
            self.write(force=True)

    return LiveTables()


# ---------------------------------------------------------------- files of a study


def prune_checkpoints(trial_dir: Path, keep: int = 1) -> None:
    """Delete all but the newest `keep` checkpoints of an ended trial (disk stays bounded)."""
    import shutil

    found = sorted(trial_dir.glob("checkpoint_*"))
    for old in found[:-keep] if keep else found:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("lstm-tuner", "torch", "ray", "optuna", "numpy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_study_files(p: Plan, argv: list[str]) -> None:
    from tuner.results import atomic_write_yaml

    doc = dict(p.spec.raw)
    doc["command"] = shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "tuner.search", *argv])
    doc["versions"] = _versions()
    atomic_write_yaml(p.study_dir / "study.yaml", doc)


def export(p: Plan) -> tuple[Any, Any]:
    """Final tables from disk, best_config.yaml from the best trial; returns (trials, epochs)."""
    from tuner.results import atomic_write_yaml, read_logs, tables, write_tables
    from tuner.space import resolve

    logs = read_logs(p.study_dir)
    trials, epochs = tables(logs, searched_keys(p.spec))
    write_tables(p.study_dir, trials, epochs)
    ok = trials[trials["status"].isin(["completed", "early_stopped"])]
    ok = ok[ok["objective"].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    if len(ok):
        best = ok.sort_values("objective", ascending=p.spec.search.mode == "min").iloc[0]
        params = next(log.params for log in logs if log.trial_id == best["trial_id"])
        config, _ = resolve(p.spec, params)
        atomic_write_yaml(p.study_dir / "best_config.yaml", config.to_dict())
    return trials, epochs


def summary(p: Plan, trials) -> str:
    import pandas as pd

    counts = trials["status"].value_counts().to_dict()
    cols = ["trial_id", "status", *searched_keys(p.spec), "objective", "best_loss", "epochs",
            "seconds"]
    top = trials.sort_values("objective", ascending=p.spec.search.mode == "min").head(5)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        table = top[[c for c in cols if c in top]].to_string(index=False)
    files = "\n".join(f"  {p.study_dir / f}" for f in
                      ("trials.csv", "epochs.csv", "best_config.yaml", "study.yaml", "report.md",
                       "optuna.db") if (p.study_dir / f).exists())
    status = ", ".join(f"{v} {k}" for k, v in counts.items())
    return (f"\nstudy {p.spec.name}: {len(trials)} trials ({status}); objective "
            f"{p.spec.search.metric} ({p.spec.search.mode})\n{table}\n\nfiles:\n{files}")


def _why_finished(p: Plan, grid, elapsed: float) -> str:
    """Why the experiment is over ('' when it was interrupted and can be resumed)."""
    # ResultGrid exposes no trial status; its analysis holds the Trial objects that do.
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    if any(t.status not in ("TERMINATED", "ERROR") for t in trials):
        return ""
    # After Ctrl-C a trial cut mid-run may be listed TERMINATED; its last result says otherwise.
    if any(t.status == "TERMINATED" and not ((t.last_result or {}).get("done")
                                             or (t.last_result or {}).get("finished"))
           for t in trials):
        return ""
    budget = p.spec.search.time_budget_s
    if budget is not None and elapsed >= budget * 0.98:
        return "its time budget ran out"
    if p.spec.search.algorithm == "optuna" and len(trials) < p.num_samples:
        return ""
    return f"all {len(trials)} trials ran"


def run(args: argparse.Namespace, argv: list[str]) -> int:
    p = plan(args)
    import ray

    url, owned = start_ray(args)
    try:
        check_resources(p.spec)  # bad input too: nothing may be written before it passes
        p.study_dir.mkdir(parents=True, exist_ok=True)
        if p.experiment == "search" and not p.restore:  # --extend/--resume keep the record
            write_study_files(p, argv)
        state = _study_state(p.study_dir)
        if not any(e["name"] == p.experiment for e in state["experiments"]):
            state["experiments"].append({"name": p.experiment, "num_samples": p.num_samples,
                                         "seed": p.seed, "finished": False, "why": "",
                                         "folder": str(p.study_dir)})
            _write_state(p.study_dir, state)
        if url:
            print(f"Ray dashboard: http://{url}  (its API wants Ray's token, ~/.ray/auth_token; "
                  "no user accounts: keep it on 127.0.0.1)", flush=True)
        if p.spec.search.algorithm == "optuna":
            print(f"Optuna dashboard: optuna-dashboard sqlite:///{p.study_dir / 'optuna.db'}",
                  flush=True)
        started = time.monotonic()
        tuner = make_tuner(p, [_live_tables_callback(p)])
        folders.started(p.study_dir)
        grid = tuner.fit()
        elapsed = time.monotonic() - started
    finally:
        if owned:
            ray.shutdown()

    why = _why_finished(p, grid, elapsed)
    state["experiments"][-1].update(finished=bool(why), why=why)
    _write_state(p.study_dir, state)

    trials, _ = export(p)
    if not why:
        print("interrupted: continue with the same command and --resume", file=sys.stderr)
    if not args.no_report:
        try:
            from tuner.report import make_report

            make_report(p.study_dir)
        except Exception as exc:  # a failed plot must not lose a finished search
            print(f"warning: report not written ({exc.__class__.__name__}: {exc})",
                  file=sys.stderr)
    print(summary(p, trials))
    return EXIT_OK if why else EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        return run(args, argv)
    except ConfigError as exc:
        folders.abandon()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StudyFinished as exc:
        print(str(exc))
        return EXIT_OK
    except KeyboardInterrupt:
        folders.abandon()
        print("interrupted: continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        folders.abandon()
        raise
    finally:
        folders.release()


if __name__ == "__main__":
    sys.exit(main())
