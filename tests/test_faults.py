"""Reliability: every test injects a REAL fault into a search and checks what survives it.

Faults: a trial process SIGKILLed mid-trial, the driver SIGKILLed mid-search (then --resume),
a file write killed half-way, a trial that raises, a trial whose loss goes non-finite, a results
folder that cannot be written (and a disk that fills up), a second node of a cluster dying.

Searches run as real `python -m tuner.search` subprocesses (a process is killed) or in-process
(`tuner.search.main`, which starts and stops its own local Ray), always at smoke size, with
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
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import pytest
import yaml

try:
    import psutil
except ImportError:  # Ray ships psutil in its vendored packages and puts them on sys.path
    import ray  # noqa: F401
    import psutil

from tuner import results as results_mod
from tuner import search as search_mod
from tuner.results import atomic_write_text, write_tables
from tuner.space import load_space, resolve
from tuner.train import fit

ROOT = Path(__file__).resolve().parents[1]

# Smoke-sized base of every space file here (fixed config: no search noise in what is checked).
BASE: dict[str, Any] = {
    "data": {"preset": "two-modes", "n_series": 4, "length": 300, "window": 16, "seed": 0},
    "model": {"dense_units": 8, "lstm_units": 8, "noise_std": 0.1},
    "train": {"max_epochs": 4, "threads": 1, "optimizer": "adam", "lr": 0.01},
    "search": {"algorithm": "random", "num_samples": 1, "scheduler": {"type": "fifo"},
               "max_concurrent": 1, "checkpoint_every": 1, "max_failures": 0, "seed": 0},
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
    return [sys.executable, "-m", "tuner.search", "--space", str(space), "--results-dir",
            str(results), "--no-dashboard", "--no-report", *extra]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never attach to a Ray that happens to run here
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    """A subprocess in its own session (so its leftovers can be found), output to `log`."""
    fh = log.open("ab")
    try:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_env(**env),
                                start_new_session=True)
    finally:
        fh.close()


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait for `proc`; on timeout kill its whole tree and fail with the tail of its log."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        pytest.fail(f"{proc.args} still running after {timeout} s:\n{tail(log)}")


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def poll(predicate: Callable[[], Any], timeout: float, what: str,
         proc: subprocess.Popen | None = None, log: Path | None = None, every: float = 0.05):
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n"
                        f"{tail(log) if log else ''}")
        time.sleep(every)
    if proc is not None:
        kill_tree(proc.pid)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail(log) if log else ''}")


# ---------------------------------------------------------------- processes


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _session_dirs(procs: Iterable[psutil.Process]) -> set[str]:
    """Ray session folders named in these processes' command lines (`--session-dir=...`)."""
    found = set()
    for p in procs:
        try:
            for arg in p.cmdline():
                for key in ("--session-dir=", "--session_dir="):
                    if arg.startswith(key):
                        found.add(arg[len(key):])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def processes_of_sessions(sessions: set[str]) -> list[psutil.Process]:
    """Every live process whose command line names one of these Ray session folders."""
    if not sessions:
        return []
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info.get("cmdline") or ())
        if any(s in cmdline for s in sessions) and p.pid != os.getpid():
            out.append(p)
    return out


def kill_procs(procs: Iterable[psutil.Process]) -> None:
    procs = list(procs)
    for p in procs:
        try:
            p.kill()  # SIGKILL to this pid
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, its descendants and any process of the Ray session(s) they ran."""
    tree = descendants(pid)
    sessions = _session_dirs(tree)
    try:
        tree.append(psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
    kill_procs(tree)
    kill_procs(processes_of_sessions(sessions))


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
    return [r["loss"] for r in fit(dataclasses.replace(config, train=train)).records]


# ================================================================ 1. a trial process dies


@pytest.mark.ray
def test_trial_process_sigkilled_mid_trial_resumes_from_checkpoint(tmp_path):
    # Fault: SIGKILL to the trial's worker process once it reported epoch 3 (of 10).
    # Rule: with max_failures, Tune restarts the trial from its latest checkpoint: the search
    # exits 0, the trial is completed, epochs.csv holds 1..10 once each, and the losses equal
    # those of an uninterrupted run (the checkpoint restores weights, optimizer, schedule, RNG).
    max_epochs = 10
    space = write_space(
        tmp_path, "killtrial", {"train.optimizer": {"choice": ["adam"]}},
        data={"length": 3000},
        train={"max_epochs": max_epochs, "schedule": {"chunks": [100]}},
        search={"max_failures": 2, "checkpoint_every": 1})
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "killtrial"
    proc = start(search_cmd(space, results), log)
    try:
        def epoch3_pid():
            for rows in trial_results(study).values():
                if rows and rows[-1].get("epoch", 0) >= 3 and not rows[-1].get("finished"):
                    return rows[-1]["pid"]
            return None

        pid = poll(epoch3_pid, 240, "the trial to report epoch 3", proc, log)
        victim = psutil.Process(pid)
        assert "ray::" in " ".join(victim.cmdline()), victim.cmdline()  # a trial worker, not us
        os.kill(pid, signal.SIGKILL)
        rc = finish(proc, log, 240)
    finally:
        kill_tree(proc.pid)
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
    assert epochs["loss"].tolist() == pytest.approx(expected, rel=1e-6)


# ================================================================ 2. the driver dies


@pytest.mark.ray
def test_driver_sigkilled_then_resume_keeps_finished_trials(tmp_path):
    # Fault: SIGKILL to the `python -m tuner.search` process while its 2nd of 3 trials runs
    # (the 1st has finished); then the same command with --resume.
    # Rule: exit 0; the finished trial is not run again (no new result in its result.json) and
    # keeps its epochs; the others complete; trials.csv has each trial once and epochs.csv
    # each (trial, epoch) once; nothing of the killed driver's Ray is left running.
    max_epochs = 6
    space = write_space(
        tmp_path, "killdriver", {"train.seed": {"grid": [0, 1, 2]}},
        data={"length": 3000},
        train={"max_epochs": max_epochs, "schedule": {"chunks": [100]}},
        search={"algorithm": "grid", "num_samples": 1, "checkpoint_every": 1})
    results, log = tmp_path / "results", tmp_path / "search.log"
    study = results / "killdriver"
    proc = start(search_cmd(space, results), log)
    try:
        def one_finished_one_running():
            runs = trial_results(study)
            done = {k for k, rows in runs.items() if rows and rows[-1].get("finished")}
            running = {k for k, rows in runs.items()
                       if rows and not rows[-1].get("finished") and rows[-1]["epoch"] >= 2}
            return (done, runs) if done and running else None

        done, _ = poll(one_finished_one_running, 240, "trial 1 done, trial 2 at epoch 2",
                       proc, log)
        tree = descendants(proc.pid)
        sessions = _session_dirs(tree)
        assert sessions, "no Ray session found under the driver"
        before = trial_results(study)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_tree(proc.pid)
    # What the killed driver left: its Ray processes (GCS, raylet, agents, workers) by pid.
    time.sleep(1)
    kill_procs(p for p in tree if p.is_running())
    kill_procs(processes_of_sessions(sessions))
    assert not processes_of_sessions(sessions)
    assert (study / "trials.csv").exists()  # the live tables were being written

    resumed = start(search_cmd(space, results, "--resume"), log)
    try:
        rc = finish(resumed, log, 300)
    finally:
        kill_tree(resumed.pid)
    assert rc == 0, tail(log)

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


def _versions_csv(n_versions: int = 3) -> list[str]:
    """Whole CSV texts of different sizes (a few MB each); column `version` names the text."""
    out = []
    for v in range(n_versions):
        rows = 40_000 + 15_000 * v
        frame = pd.DataFrame({"version": v, "row": range(rows), "loss": 0.5,
                              "trial_id": "abcdef_00000"})
        out.append(frame.to_csv(index=False))
    return out


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
    # A kill can leave the writer's temporary file behind; it is hidden and never read back.
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {"trials.csv"}


# ================================================================ 3 + 4. a trial raises, a loss explodes

MIXED_CASES = ["file", "gen", "diverge"]
MIXED_SEED = 1
"""Optuna's RandomSampler(seed=1) draws the cases gen, file, diverge for the first 3 trials."""


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    """One Optuna search (in-process, local Ray) of 3 trials, one per case:

    file: reads a CSV of prices that the driver validated and the test then deleted (before any
    trial started), so the trial raises ConfigError inside its worker; gen: generated data,
    completes; diverge: SGD at lr 1e12, whose loss goes to inf at epoch 3 of 4."""
    tmp = tmp_path_factory.mktemp("mixed")
    csv = tmp / "prices.csv"
    pd.DataFrame({"a": [100.0 + (i % 7) for i in range(300)],
                  "b": [50.0 + (i % 5) for i in range(300)]}).to_csv(csv, index=False)
    cases = {"choice": [
        {"name": "file", "data.path": str(csv)},
        {"name": "gen"},
        {"name": "diverge", "train.optimizer": "sgd", "train.lr": 1.0e12},
    ]}
    space = write_space(tmp, "mixed", {"case": cases},
                        search={"algorithm": "optuna", "sampler": "random", "seed": MIXED_SEED,
                                "num_samples": 3, "max_concurrent": 2})
    results = tmp / "results"
    real_check = search_mod.check_resources

    def check_then_delete(spec):  # runs after validation and Ray start, before any trial
        real_check(spec)
        csv.unlink()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_mod, "check_resources", check_then_delete)
        rc = search_mod.main(["--space", str(space), "--results-dir", str(results),
                              "--no-dashboard", "--no-report", "--num-cpus", "2"])
    assert not csv.exists()
    study = results / "mixed"
    trials, epochs = results_mod.load_tables(study)
    return rc, study, trials, epochs


def _by_case(trials: pd.DataFrame) -> dict[str, dict]:
    rows = {r["case"]: r for r in trials.to_dict("records")}
    assert sorted(rows) == sorted(MIXED_CASES), (
        f"Optuna drew cases {trials['case'].tolist()}: choose another MIXED_SEED")
    return rows


@pytest.mark.ray
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
def test_diverged_trial_is_inf_in_the_table_and_complete_in_optuna(mixed_study):
    # Fault: SGD at lr 1e12: the loss overflows to inf at epoch 3.
    # Rule: trials.csv says `diverged` with diverged_epoch 3 and objective +inf; Optuna
    # recorded the trial as COMPLETE with value inf (the worst value, so TPE learns that region
    # is bad; NaN would make Optuna FAIL it and learn nothing). The errored trial is FAIL.
    import optuna

    _, study, trials, epochs = mixed_study
    rows = _by_case(trials)
    div = rows["diverge"]
    assert div["status"] == "diverged" and div["diverged_epoch"] == 3
    assert div["objective"] == math.inf and div["epochs"] == 3
    mine = epochs[epochs["trial_id"] == div["trial_id"]]
    assert mine["loss"].tolist()[-1] == math.inf and mine["loss"].iloc[:-1].map(math.isfinite).all()
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
