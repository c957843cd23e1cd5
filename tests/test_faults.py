"""Reliability: every test injects a REAL fault into a search and checks what survives it.

Faults: a trial process SIGKILLed mid-trial, the driver SIGKILLed mid-search (then --resume),
a file write killed half-way, a trial that raises, a trial whose loss goes non-finite, a results
folder that cannot be written (and a disk that fills up), a second node of a cluster dying.

Searches run as real `python -m tuner.search` subprocesses (where a process is killed) or
in-process (`tuner.search.main` on the shared `ray_session`), always at smoke size, with
--results-dir under pytest's tmp_path. Every process a test starts is ended by its id, never by
name and never with `ray stop` (that would end every Ray on the machine).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import pandas as pd
import pytest
import yaml

try:
    import psutil
except ImportError:  # Ray ships psutil in its vendored packages and puts them on sys.path
    import ray  # noqa: F401
    import psutil

from tuner import cluster as cluster_mod
from tuner.core import atomic as atomic_mod
from tuner import results as results_mod
from tuner import search as search_mod
from tuner.results import atomic_write_text, write_tables
from tuner.space import load_space, resolve
from tuner.core.train import fit

ROOT = Path(__file__).resolve().parents[1]

# Smoke-sized base of every space file here (fixed config: no search noise in what is checked).
BASE: dict[str, Any] = {
    "data": {"preset": "two-modes", "n_series": 4, "length": 300, "window": 16, "seed": 0},
    "model": {"dense_units": 8, "lstm_units": 8, "noise_std": 0.1},
    "train": {"max_epochs": 4, "threads": 1, "optimizer": "adam", "lr": 0.01},
    "search": {
        "algorithm": "random",
        "num_samples": 1,
        "scheduler": {"type": "fifo"},
        "max_concurrent": 1,
        "checkpoint_every": 1,
        "max_failures": 0,
        "seed": 0,
    },
    "resources": {"cpu": 1, "gpu": 0},
}


def write_space(folder: Path, name: str, space: dict[str, Any], **sections: dict) -> Path:
    """A space file `name.yaml` = BASE with `sections` merged in (one level deep)."""
    doc: dict[str, Any] = {"name": name}
    for sec, values in BASE.items():
        doc[sec] = {**values, **sections.get(sec, {})}
    doc["space"] = space
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def search_cmd(space: Path, results: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tuner.search",
        "--space",
        str(space),
        "--results-dir",
        str(results),
        "--no-dashboard",
        "--no-report",
        *extra,
    ]


MARKER = "TUNER_FAULT_TEST"
"""An environment variable set on every process a test starts: Ray's daemons and workers
inherit it, so whatever a killed process left running is found by it (and only that)."""


FAST_RESULTS = {"TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
"""Environment of a driver whose trial must be caught mid-run: it copies results to the study
folder every 0.5 s instead of 2 s (tuner.cluster's default), so the trial can be short."""


def new_marker() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never attach to a Ray that happens to run here
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    """A subprocess with its own marker (`proc.marker`), output appended to `log`."""
    marker = new_marker()
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(**env, **{MARKER: marker}),
            start_new_session=True,
        )
    proc.marker = marker
    return proc


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait for `proc`; on timeout kill all it started and fail with the tail of its log."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all(proc)
        pytest.fail(f"{proc.args} still running after {timeout} s:\n{tail(log)}")


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def poll(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    every: float = 0.05,
):
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{tail(log) if log else ''}")
        time.sleep(every)
    if proc is not None:
        kill_all(proc)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail(log) if log else ''}")


# ---------------------------------------------------------------- processes


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _carries(pid: int, marker: str) -> bool:
    """Whether the process started with MARKER=marker in its environment.

    Read from /proc: Ray's agents retitle themselves (setproctitle), which zeroes the start
    of their environment block, and psutil then reads it as empty."""
    needle = f"\0{MARKER}={marker}\0".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in b"\0" + fh.read() + b"\0"
    except OSError:
        return False


def marked(marker: str) -> list[psutil.Process]:
    """Every live process (not a zombie) that carries this marker in its environment."""
    out = []
    for p in psutil.process_iter():
        if p.pid == os.getpid() or not _carries(p.pid, marker):
            continue
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def kill_procs(procs: Iterable[psutil.Process]) -> None:
    procs = list(procs)
    for p in procs:
        try:
            p.kill()  # SIGKILL to this pid
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process it started (its Ray: GCS, raylet, agents, workers)."""
    kill_procs([*descendants(proc.pid), *marked(proc.marker)])
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# ---------------------------------------------------------------- what Tune and the tables hold


def trial_results(study_dir: Path, experiment: str = "search") -> dict[str, list[dict]]:
    """{trial folder name: [results in result.json order]} (a line cut by a kill is skipped)."""
    out: dict[str, list[dict]] = {}
    for path in sorted((study_dir / "ray" / experiment).glob("trial_*/result.json")):
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        out[path.parent.name] = rows
    return out


def assert_each_epoch_once(epochs: pd.DataFrame, trial_id: str, max_epochs: int) -> None:
    mine = epochs[epochs["trial_id"] == trial_id]
    assert list(mine["epoch"]) == list(range(1, max_epochs + 1)), (trial_id, list(mine["epoch"]))


def reference_losses(space: Path, params: dict[str, Any]) -> list[float]:
    """The losses of an uninterrupted run of the trial's config (1 thread, CPU), no Ray."""
    config, _ = resolve(load_space(space), params)
    train = dataclasses.replace(config.train, threads=1, device="cpu")
    return [r["train_loss_running"] for r in fit(dataclasses.replace(config, train=train)).records]


# ================================================================ 1. a trial process dies


@pytest.mark.ray
def test_trial_process_sigkilled_mid_trial_resumes_from_checkpoint(tmp_path, ray_session):
    # Fault: SIGKILL to the trial's worker process once it reported epoch 3 (of 12; FAST_RESULTS).
    # The search joins the shared test Ray (a worker dies the same way on a local Ray; starting
    # one costs seconds): the victim is the pid its trial reported, a Ray worker.
    # Rule: with max_failures, Tune restarts the trial from its latest checkpoint: the search
    # exits 0, the trial is completed, epochs.csv holds 1..12 once each, and the losses equal
    # those of an uninterrupted run (the checkpoint restores weights, optimizer, schedule, RNG).
    max_epochs = 12
    space = write_space(
        tmp_path,
        "killtrial",
        {"train.optimizer": {"choice": ["adam"]}},
        data={"length": 3000},
        train={"max_epochs": max_epochs, "schedule": {"chunks": [100]}},
        search={"max_failures": 2, "checkpoint_every": 1},
    )
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "killtrial"
    address = ray_session.get_runtime_context().gcs_address
    proc = start(search_cmd(space, results, "--address", address), log, **FAST_RESULTS)
    try:

        def epoch3_pid():
            for rows in trial_results(study).values():
                if rows and rows[-1].get("epoch", 0) >= 3 and not rows[-1].get("finished"):
                    return rows[-1]["pid"]
            return None

        pid = poll(epoch3_pid, 240, "the trial to report epoch 3", proc, log)
        victim = psutil.Process(pid)
        assert "ray::" in " ".join(victim.cmdline()), victim.cmdline()  # a trial worker
        os.kill(pid, signal.SIGKILL)
        rc = finish(proc, log, 240)
    finally:
        kill_all(proc)
    assert rc == 0, tail(log)

    (rows,) = trial_results(study).values()
    assert pid in {r["pid"] for r in rows}
    assert rows[-1]["pid"] != pid, "the kill landed after the trial had finished"
    trials, epochs = results_mod.load_tables(study)
    assert len(trials) == 1 and trials["status"].tolist() == ["completed"], trials.to_dict("records")
    trial_id = trials["trial_id"].iloc[0]
    assert_each_epoch_once(epochs, trial_id, max_epochs)

    params = json.loads(next((study / "ray" / "search").glob("trial_*/params.json")).read_text())
    expected = reference_losses(space, params)
    assert epochs["train_loss_running"].tolist() == pytest.approx(expected, rel=1e-6)


# ================================================================ 2. the driver dies


def mlflow_runs(study: Path, name: str) -> pd.DataFrame:
    """The study's runs as MLflow's client reads them: one row per run with the columns of
    `mlflow.search_runs` (run_id, status, params.*, metrics.*, tags.*). Through a client on the
    study's database, not the global tracking URI `mlflow.search_runs` needs: a search run in
    this process afterwards must find its tracking settings by itself."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return pd.DataFrame(
        {
            "run_id": run.info.run_id,
            "status": run.info.status,
            **{f"params.{k}": v for k, v in run.data.params.items()},
            **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
            **{f"tags.{k}": v for k, v in run.data.tags.items()},
        }
        for run in client.search_runs([experiment.experiment_id])
    )


@pytest.mark.ray
def test_driver_sigkilled_then_resume_keeps_finished_trials_and_one_mlflow_run_each(
    tmp_path, capsys, ray_session
):
    # Fault: SIGKILL to `python -m tuner.search --mlflow` (its own local Ray, as a user runs
    # it) while its 2nd of 3 trials runs (the 1st has finished); then the same command with
    # --resume (which must not need --mlflow again).
    # Rule: exit 0; the finished trial is not run again (no new result in its result.json) and
    # keeps its epochs; the others complete; trials.csv has each trial once and epochs.csv
    # each (trial, epoch) once; nothing of the killed driver's Ray is left running. MLflow:
    # still one run per trial, the interrupted trial's run continued (its epochs logged once
    # each, steps 1..max), every run FINISHED with metrics = trials.csv.
    # One test for both (the MLflow logging rides on the same kill): a second SIGKILL test
    # would cost another ~35 s of the suite for the same fault. The resume runs in this process
    # (`tuner.search.main`, the command's code) on the shared test Ray (which Ray resumes does
    # not matter to these rules; starting one, and a driver process, cost seconds).
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    max_epochs = 8
    space = write_space(
        tmp_path,
        "killdriver",
        {"train.seed": {"grid": [0, 1, 2]}},
        data={"length": 3000},
        train={"max_epochs": max_epochs, "schedule": {"chunks": [100]}},
        search={"algorithm": "grid", "num_samples": 1, "checkpoint_every": 1},
    )
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "killdriver"
    # FAST_RESULTS: the kill lands a few epochs into the 2nd trial, well before its 8th.
    proc = start(search_cmd(space, results, "--mlflow"), log, **FAST_RESULTS)
    try:

        def one_finished_one_running():
            runs = trial_results(study)
            done = {k for k, rows in runs.items() if rows and rows[-1].get("finished")}
            running = {
                k
                for k, rows in runs.items()
                if rows and not rows[-1].get("finished") and rows[-1]["epoch"] >= 2
            }
            return (done, runs) if done and running else None

        done, _ = poll(one_finished_one_running, 240, "trial 1 done, trial 2 at epoch 2", proc, log)
        before = trial_results(study)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # What the killed driver left running (measured: its trial workers and Ray agents
        # outlive it), found by the marker they inherited and killed by pid.
        kill_procs(marked(proc.marker))
        assert not marked(proc.marker)
    finally:
        kill_all(proc)
    assert (study / "trials.csv").exists()  # the live tables were being written
    assert len(mlflow_runs(study, "killdriver")) >= 2  # runs were open when it died

    rc = search_mod.main(search_cmd(space, results, "--resume")[3:])
    assert rc == 0, capsys.readouterr().err[-3000:]

    after = trial_results(study)
    assert len(after) == 3
    for name in done:
        assert after[name] == before[name], f"finished trial {name} was run again"
    trials, epochs = results_mod.load_tables(study)
    assert sorted(trials["trial_id"]) == sorted({rows[-1]["trial_id"] for rows in after.values()})
    assert trials["trial_id"].is_unique and len(trials) == 3
    assert set(trials["status"]) == {"completed"}, trials.to_dict("records")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id in trials["trial_id"]:
        assert_each_epoch_once(epochs, trial_id, max_epochs)
    state = json.loads((study / "study_state.json").read_text())
    assert [e["name"] for e in state["experiments"]] == ["search"]
    assert state["experiments"][0]["finished"] is True

    runs = mlflow_runs(study, "killdriver")
    assert len(runs) == 3
    assert sorted(runs["tags.tuner.trial_id"]) == sorted(trials["trial_id"])
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    by_trial = runs.set_index("tags.tuner.trial_id")
    for row in trials.to_dict("records"):
        run = by_trial.loc[row["trial_id"]]
        assert run["status"] == "FINISHED" and run["tags.tuner.status"] == "completed"
        steps = [m.step for m in client.get_metric_history(run["run_id"], "train_loss")]
        assert steps == list(range(1, max_epochs + 1)), (row["trial_id"], steps)
        assert run["metrics.train_loss"] == pytest.approx(row["train_loss"], rel=1e-6)


@pytest.mark.ray
def test_driver_sigkilled_before_tune_started_then_resume_runs_the_search(tmp_path, capsys, ray_session):
    # Fault: SIGKILL to the driver after it recorded the experiment in study_state.json but
    # before Tune created it: a crash, an OOM kill or a Ctrl-\ there.
    # Rule: `--resume` then runs the experiment (exit 0, its trial completed), as the error
    # message of a plain rerun ("already exists; allowed: --resume") tells the user to do.
    # Both join the shared test Ray (whose Ray runs it does not matter to the rule; starting
    # one costs seconds); the resume runs in this process (`tuner.search.main`, the command's code).
    space = write_space(
        tmp_path, "earlykill", {"train.optimizer": {"choice": ["adam"]}}, train={"max_epochs": 2}
    )
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "earlykill"
    address = ray_session.get_runtime_context().gcs_address
    proc = start(search_cmd(space, results, "--address", address), log)
    try:
        poll(lambda: (study / "study_state.json").exists(), 120, "study_state.json", proc, log, every=0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_all(proc)
    if (study / "ray" / "search" / "tuner.pkl").exists():
        pytest.skip("the kill came after Tune had started: not the fault under test")

    rc = search_mod.main(search_cmd(space, results, "--resume")[3:])
    assert rc == 0, capsys.readouterr().err[-3000:]
    trials, _ = results_mod.load_tables(study)
    assert trials["status"].tolist() == ["completed"]


def _versions_csv(n_versions: int = 3) -> list[str]:
    """Whole CSV texts of different sizes (a few MB each); column `version` names the text."""
    out = []
    for v in range(n_versions):
        rows = 40_000 + 15_000 * v
        frame = pd.DataFrame({"version": v, "row": range(rows), "loss": 0.5, "trial_id": "abcdef_00000"})
        out.append(frame.to_csv(index=False))
    return out


@pytest.mark.process
def test_atomic_write_sigkilled_at_random_moments_never_leaves_a_partial_csv(tmp_path):
    # Fault: SIGKILL (20 times, at random moments) to a process that rewrites a big CSV in a
    # loop with `atomic_write_text`, as the live tables are rewritten during a search.
    # Rule: after every kill the file parses, and it is one whole version: the row count and
    # the `version` column of one of the texts written (never a mix, never cut short).
    target = tmp_path / "trials.csv"
    texts = _versions_csv()
    rows_of = {v: len(t.splitlines()) - 1 for v, t in enumerate(texts)}
    atomic_write_text(target, texts[0])
    rng = random.Random(1234)
    seen = set()
    for kill in range(20):
        pid = os.fork()
        if pid == 0:  # child: rewrite the file forever, never returning into pytest
            try:
                i = kill
                while True:
                    i += 1
                    atomic_write_text(target, texts[i % len(texts)])
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        frame = pd.read_csv(target)
        versions = set(frame["version"])
        assert len(versions) == 1, f"kill {kill}: a mix of versions {versions}"
        (v,) = versions
        assert len(frame) == rows_of[v], f"kill {kill}: version {v} cut to {len(frame)} rows"
        assert frame["row"].tolist() == list(range(rows_of[v]))
        seen.add(v)
    assert len(seen) >= 2, "the writer never replaced the file: the kills tested nothing"
    # A kill can leave the writer's temporary file behind: hidden, never read back, and
    # removed by a later write once it is old (a live writer's temporary lives for seconds).
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"trials.csv"}
    left = list(tmp_path.glob(".trials.csv.*.tmp"))
    old = time.time() - results_mod.STALE_TEMP_S - 60
    for tmp in left:
        os.utime(tmp, (old, old))
    fresh = tmp_path / ".trials.csv.justnow.tmp"
    fresh.write_text("a writer in progress")
    atomic_write_text(target, texts[0])
    assert set(tmp_path.glob(".trials.csv.*.tmp")) == {fresh}


def test_atomic_write_gives_tables_the_usual_permissions(tmp_path):
    # Rule: a table is written as any new file is (0o666 less the umask), not owner-only
    # (mkstemp's 0o600), so a notebook, a dashboard or a colleague can read the results.
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "trials.csv", "a\n1\n")
        assert (tmp_path / "trials.csv").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        atomic_write_text(tmp_path / "trials.csv", "a\n2\n")
        assert (tmp_path / "trials.csv").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "trials.csv").read_text() == "a\n2\n"
    finally:
        os.umask(old_umask)


# ================================================================ 3 + 4. a trial raises, a loss explodes

MIXED_CASES = ["file", "gen", "diverge"]
MIXED_SEED = 1
"""Optuna's RandomSampler(seed=1) draws the cases gen, file, diverge for the first 3 trials."""


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory, ray_session):
    """One Optuna search (in-process, on the shared local Ray) of 3 trials, one per case, one at
    a time (BASE's max_concurrent):

    file: reads a CSV of prices that the driver validated and the test then deleted (before any
    trial started), so the trial raises ConfigError inside its worker; gen: generated data,
    completes; diverge: SGD at lr 1e12, whose end-of-epoch loss goes to inf at epoch 2 of 4."""
    tmp = tmp_path_factory.mktemp("mixed")
    csv = tmp / "prices.csv"
    pd.DataFrame(
        {"a": [100.0 + (i % 7) for i in range(300)], "b": [50.0 + (i % 5) for i in range(300)]}
    ).to_csv(csv, index=False)
    cases = {
        "choice": [
            {"name": "file", "data.path": str(csv)},
            {"name": "gen"},
            {"name": "diverge", "train.optimizer": "sgd", "train.lr": 1.0e12},
        ]
    }
    space = write_space(
        tmp,
        "mixed",
        {"case": cases},
        search={
            "algorithm": "optuna",
            "sampler": "random",
            "seed": MIXED_SEED,
            "num_samples": 3,
        },
    )
    results = tmp / "results"
    real_check = cluster_mod.check_resources

    def check_then_delete(spec):  # runs after validation and Ray start, before any trial
        real_check(spec)
        csv.unlink()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster_mod, "check_resources", check_then_delete)
        rc = search_mod.main(
            ["--space", str(space), "--results-dir", str(results), "--no-dashboard", "--no-report"]
        )
    assert not csv.exists()
    study = results / "mixed"
    trials, epochs = results_mod.load_tables(study)
    return rc, study, trials, epochs


def _by_case(trials: pd.DataFrame) -> dict[str, dict]:
    rows = {r["case"]: r for r in trials.to_dict("records")}
    assert sorted(rows) == sorted(MIXED_CASES), (
        f"Optuna drew cases {trials['case'].tolist()}: choose another MIXED_SEED"
    )
    return rows


@pytest.mark.ray
@pytest.mark.xdist_group("mixed_study")  # one worker builds the module fixture once
def test_trial_exception_is_recorded_as_error_and_search_goes_on(mixed_study):
    # Fault: a trial raises inside its worker (its data file vanished after validation).
    # Rule: the search exits 0, that trial is `error` with the exception's message in
    # trials.csv, and the other trials ran to their own end.
    rc, study, trials, _ = mixed_study
    assert rc == 0
    rows = _by_case(trials)
    err = rows["file"]
    assert err["status"] == "error"
    assert "ConfigError" in err["error"] and "prices.csv: file not found" in err["error"]
    assert err["epochs"] == 0
    assert rows["gen"]["status"] == "completed" and rows["gen"]["epochs"] == 4
    assert rows["diverge"]["status"] == "diverged"
    assert (study / "best_config.yaml").exists()  # taken from the completed trial


@pytest.mark.ray
@pytest.mark.xdist_group("mixed_study")  # one worker builds the module fixture once
def test_diverged_trial_is_inf_in_the_table_and_complete_in_optuna(mixed_study):
    # Fault: SGD at lr 1e12: epoch 2's update leaves weights whose outputs overflow, so the
    # end-of-epoch train_loss of epoch 2 is inf (the running loss would only see it in epoch 3).
    # Rule: trials.csv says `diverged` with diverged_epoch 2 and objective +inf; Optuna
    # recorded the trial as COMPLETE with value inf (the worst value, so TPE learns that region
    # is bad; NaN would make Optuna FAIL it and learn nothing). The errored trial is FAIL.
    import optuna

    _, study, trials, epochs = mixed_study
    rows = _by_case(trials)
    div = rows["diverge"]
    assert div["status"] == "diverged" and div["diverged_epoch"] == 2
    assert div["objective"] == math.inf and div["epochs"] == 2
    mine = epochs[epochs["trial_id"] == div["trial_id"]]
    assert (
        mine["train_loss"].tolist()[-1] == math.inf and mine["train_loss"].iloc[:-1].map(math.isfinite).all()
    )
    assert trials["objective"].tolist()[0] != math.inf  # ranked best first, inf never first

    loaded = optuna.load_study(study_name="mixed", storage=f"sqlite:///{study / 'optuna.db'}")
    by_case = {t.params["case"]: t for t in loaded.trials}
    assert sorted(by_case) == sorted(MIXED_CASES)
    assert by_case["diverge"].state == optuna.trial.TrialState.COMPLETE
    assert by_case["diverge"].value == math.inf
    assert by_case["gen"].state == optuna.trial.TrialState.COMPLETE
    assert math.isfinite(by_case["gen"].value)
    assert by_case["gen"].value == pytest.approx(rows["gen"]["objective"])
    assert by_case["file"].state == optuna.trial.TrialState.FAIL


# ================================================================ 5. results cannot be written


def _unwritable(tmp_path: Path, how: str) -> Path:
    if how == "under_a_file":  # fails for root too: a path cannot go through a regular file
        (tmp_path / "afile").write_text("not a folder\n")
        return tmp_path / "afile" / "sub"
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 folder anyway (the under_a_file case covers it)")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "results"


@pytest.mark.parametrize("how", ["under_a_file", "readonly_dir"])
def test_results_dir_not_writable_fails_fast_with_one_line(tmp_path, how):
    # Fault: --results-dir cannot be created or written.
    # Rule: exit 2 with one line naming --results-dir, before Ray starts (no Ray in the output,
    # a few seconds), and nothing created.
    results = _unwritable(tmp_path, how)
    space = write_space(tmp_path, "nowrite", {"train.optimizer": {"choice": ["adam"]}})
    started = time.monotonic()
    proc = subprocess.run(
        search_cmd(space, results), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    try:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --results-dir:"), proc.stderr
        assert str(results.parent) in lines[0]
        assert "Ray" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert elapsed < 60
        assert not results.exists()
    finally:
        if results.parent.exists():
            results.parent.chmod(0o700)


def _old_tables(study: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "experiment": "search",
            "status": ["completed", "running"],
            "objective": [0.5, 0.7],
        }
    )
    epochs = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1], "loss": [0.9, 0.5, 0.7]})
    write_tables(study, trials, epochs)
    return trials, epochs


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillingFile:
    """A file object that writes part of the text, then fails like a full disk."""

    def __init__(self, fh, fail_in: str) -> None:
        self.fh, self.fail_in = fh, fail_in

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, text: str) -> int:
        if self.fail_in == "write":
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            _enospc()
        return self.fh.write(text)

    def flush(self) -> None:
        self.fh.flush()
        if self.fail_in == "flush":
            _enospc()

    def fileno(self) -> int:
        return self.fh.fileno()


@pytest.mark.parametrize("fail_in", ["write", "flush", "fsync", "replace"])
def test_disk_full_during_a_table_write_keeps_the_old_tables(tmp_path, monkeypatch, fail_in):
    # Fault: ENOSPC while trials.csv/epochs.csv are rewritten (in the write, the flush, the
    # fsync or the rename).
    # Rule: the error surfaces (OSError ENOSPC, not swallowed), the tables already written are
    # byte for byte intact, and no temporary file is left in the study folder.
    study = tmp_path / "study"
    _old_tables(study)
    before = {p.name: p.read_bytes() for p in study.iterdir()}
    real_fdopen = os.fdopen
    if fail_in in ("write", "flush"):
        monkeypatch.setattr(
            atomic_mod.os, "fdopen", lambda fd, *a, **k: _FillingFile(real_fdopen(fd, *a, **k), fail_in)
        )
    elif fail_in == "fsync":
        monkeypatch.setattr(atomic_mod.os, "fsync", _enospc)
    else:
        monkeypatch.setattr(atomic_mod.os, "replace", _enospc)
    new = pd.DataFrame({"trial_id": ["c"] * 3, "epoch": [1, 2, 3], "loss": [1.0, 2.0, 3.0]})
    with pytest.raises(OSError) as info:
        write_tables(study, new.assign(status="completed", objective=1.0), new)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in study.iterdir()} == before
    trials, epochs = results_mod.load_tables(study)
    assert trials["trial_id"].tolist() == ["a", "b"] and len(epochs) == 3


@pytest.mark.ray
def test_disk_full_while_a_search_runs_warns_and_the_search_goes_on(
    ray_session, tmp_path, monkeypatch, capsys
):
    # Fault: the disk is full (ENOSPC on the rename) for the first two rewrites of the live
    # tables during a search of 2 trials.
    # Rule: the search is not lost: a warning, exit 0, and the final tables whole (both trials
    # completed, each epoch once), no temporary file left in the study folder.
    space = write_space(
        tmp_path,
        "diskfull",
        {"train.seed": {"grid": [0, 1]}},
        train={"max_epochs": 3},
        search={"algorithm": "grid"},  # one trial at a time (BASE): one trial process
    )
    results = tmp_path / "results"
    real_replace = os.replace
    failed = []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name in ("trials.csv", "epochs.csv") and len(failed) < 2:
            failed.append(Path(dst).name)
            _enospc()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic_mod.os, "replace", replace)
    capsys.readouterr()
    rc = search_mod.main(
        ["--space", str(space), "--results-dir", str(results), "--no-dashboard", "--no-report"]
    )
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert rc == 0
    assert failed == ["trials.csv", "trials.csv"]
    assert os.strerror(errno.ENOSPC) in err
    study = results / "diskfull"
    trials, epochs = results_mod.load_tables(study)
    assert trials["status"].tolist() == ["completed", "completed"]
    for trial_id in trials["trial_id"]:
        assert_each_epoch_once(epochs, trial_id, 3)
    assert not list(study.glob(".*.tmp"))


# ================================================================ 6. a node of a cluster dies


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "start", *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=180,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    assert proc.returncode == 0, tail(log)


@pytest.mark.ray
@pytest.mark.cluster
def test_cluster_join_runs_trials_on_both_nodes_and_survives_a_node_death(tmp_path):
    # Fault: a 2-node cluster on loopback (head and worker, 1 CPU each, started with
    # `ray start`); once a trial runs on the worker node, every process of that node (raylet,
    # its agents and workers, its log monitor) gets SIGKILL.
    # Rule: the search (joined with --address, results on an absolute path every node sees)
    # retries the lost trial from its checkpoint on the surviving node: exit 0, every trial
    # completed, each (trial, epoch) once.
    max_epochs = 12
    space = write_space(
        tmp_path,
        "nodedies",
        {"train.seed": {"grid": [0, 1]}},
        data={"length": 3000},
        train={"max_epochs": max_epochs, "schedule": {"chunks": [100]}},
        search={"algorithm": "grid", "max_concurrent": 2, "max_failures": 2, "checkpoint_every": 1},
    )
    results, log = (tmp_path / "results").resolve(), tmp_path / "cluster.log"
    study = results / "nodedies"
    # Short: Unix socket paths under it must stay below 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    # Each node's processes (daemons, agents, trial workers) inherit their node's marker.
    head, worker = new_marker(), new_marker()
    env = _env(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    port, *p = _free_ports(8)
    address = f"127.0.0.1:{port}"
    common = [
        "--num-cpus",
        "1",
        "--temp-dir",
        temp_dir,
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
    ]
    proc = None
    try:
        _ray_start(
            [
                "--head",
                "--port",
                str(port),
                "--include-dashboard=false",
                "--dashboard-agent-listen-port",
                str(p[0]),
                "--dashboard-agent-grpc-port",
                str(p[1]),
                "--metrics-export-port",
                str(p[2]),
                "--ray-client-server-port",
                str(p[3]),
                *common,
            ],
            {**env, MARKER: head},
            log,
        )
        _ray_start(
            [
                "--address",
                address,
                "--dashboard-agent-listen-port",
                str(p[4]),
                "--dashboard-agent-grpc-port",
                str(p[5]),
                "--metrics-export-port",
                str(p[6]),
                *common,
            ],
            {**env, MARKER: worker},
            log,
        )
        assert [q.name() for q in marked(worker)].count("raylet") == 1

        # FAST_RESULTS: the node dies a few epochs into the trial it hosts, well before its 12th.
        proc = start(
            search_cmd(space, results, "--address", address), log, RAY_AUTH_MODE="disabled", **FAST_RESULTS
        )

        def trial_on_worker():
            on_worker = {q.pid for q in marked(worker)}
            for name, rows in trial_results(study).items():
                if (
                    rows
                    and rows[-1]["pid"] in on_worker
                    and rows[-1]["epoch"] >= 2
                    and not rows[-1].get("finished")
                ):
                    return name
            return None

        lost = poll(trial_on_worker, 240, "a trial running on the worker node", proc, log, every=0.2)
        # Joined with --address, the search runs trials on both nodes at once.
        head_pids = {q.pid for q in marked(head)}
        poll(
            lambda: any(
                rows and rows[-1]["pid"] in head_pids
                for name, rows in trial_results(study).items()
                if name != lost
            ),
            120,
            "the other trial running on the head node",
            proc,
            log,
            every=0.2,
        )
        victims = marked(worker)
        lost_pids = {q.pid for q in victims}
        kill_procs(victims)
        rc = finish(proc, log, 300)
        assert rc == 0, tail(log)
    finally:
        if proc is not None:
            kill_all(proc)
        kill_procs([*marked(worker), *marked(head)])
    assert not marked(head) and not marked(worker)
    shutil.rmtree(temp_dir, ignore_errors=True)

    runs = trial_results(study)
    assert len(runs) == 2
    assert {r["pid"] for r in runs[lost]} & lost_pids, "the lost trial never ran on the worker"
    assert runs[lost][-1]["pid"] not in lost_pids  # it finished elsewhere
    trials, epochs = results_mod.load_tables(study)
    assert set(trials["status"]) == {"completed"} and len(trials) == 2, trials.to_dict("records")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id in trials["trial_id"]:
        assert_each_epoch_once(epochs, trial_id, max_epochs)


# ======================================================= issue 11: a second search, Ctrl-C, a moved study


@pytest.mark.ray
def test_second_search_refused_then_ctrl_c_exits_130_and_a_moved_study_resumes(tmp_path, capsys, ray_session):
    # Faults: the same search started twice at once; then SIGINT (Ctrl-C) to the first; then
    # the study folder moved elsewhere before --resume.
    # Rules: the second command is refused with one line (exit 2) while the first runs, and the
    # first's tables stay whole (each trial once); Ctrl-C exits 130 with the "continue with
    # --resume" line; the moved folder resumes against its own optuna.db (the old path no
    # longer exists) and finishes every trial.
    # The first search is a real process (Ctrl-C is a signal to it) that joins the shared Ray
    # (starting one costs seconds); the second command and the resume run in this process (the
    # lock is per process). Trials of 10 epochs (0.5 to 1 s each) are still running when the
    # second command, which takes well under a second, tries the same study.
    space = write_space(
        tmp_path,
        "twice",
        {"train.seed": {"choice": [0, 1]}},
        data={"length": 3000},
        train={"max_epochs": 10, "schedule": {"chunks": [100]}},
        search={"algorithm": "optuna", "num_samples": 2, "max_concurrent": 2},
    )
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "twice"
    address = ray_session.get_runtime_context().gcs_address
    first = start(search_cmd(space, results, "--address", address), log)
    try:
        # Both trials running (a trial still PENDING when the folder is moved gets Ray's old
        # storage path on resume, a Ray 2.60 limitation: see the README's Reliability notes).
        poll(
            lambda: (
                len(runs := trial_results(study)) == 2
                and all(rows and rows[-1]["epoch"] >= 1 for rows in runs.values())
            ),
            240,
            "both trials at epoch 1",
            first,
            log,
        )
        capsys.readouterr()
        code = search_mod.main(search_cmd(space, results)[3:])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2, lines
        assert len(lines) == 1 and "another search is running" in lines[0], lines
        assert first.poll() is None  # the first one goes on
        os.kill(first.pid, signal.SIGINT)
        rc = finish(first, log, 120)
    finally:
        kill_all(first)
    assert rc == 130, tail(log)
    assert "continue with the same command and --resume" in log.read_text()
    trials, _ = results_mod.load_tables(study)
    assert trials["trial_id"].is_unique and 1 <= len(trials) <= 2
    assert "interrupted" in set(trials["status"]), trials.to_dict("records")

    moved = tmp_path / "elsewhere"
    shutil.move(str(results), str(moved))
    rc = search_mod.main(search_cmd(space, moved, "--resume")[3:])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert not results.exists()  # nothing was written at the old place
    trials, _ = results_mod.load_tables(moved / "twice")
    shown = (trials[["trial_id", "status", "epochs"]].to_dict("records"), out.err[-3000:])
    assert len(trials) == 2 and trials["trial_id"].is_unique, shown
    assert set(trials["status"]) == {"completed"}, shown
