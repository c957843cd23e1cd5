"""Where users already look: MLflow runs, TensorBoard event files, optuna-dashboard.

One smoke search with `--mlflow --tensorboard` (in-process, shared Ray) feeds the read-back
tests. MLflow across a SIGKILL and --resume is checked by test_faults' driver-kill test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_faults import (
    descendants,
    kill_procs,
    mlflow_runs,
    poll,
    psutil,
)
from tuner import results as results_mod
from tuner import search as search_mod
from tuner.core.config import ConfigError
from tuner.space import load_space, searched_keys, space_from_dict

ROOT = Path(__file__).resolve().parents[1]
# Under pytest-xdist, one worker runs this module, so the `tracked` search runs once.
pytestmark = pytest.mark.xdist_group("tracking")
SMOKE = ROOT / "search_spaces" / "smoke.yaml"


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """A smoke search logged to MLflow and TensorBoard: (study folder, trials, epochs)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboardX")
    results = tmp_path_factory.mktemp("tracked") / "results"
    rc = search_mod.main(
        [
            "--space",
            str(SMOKE),
            "--smoke",
            "--results-dir",
            str(results),
            "--no-dashboard",
            "--no-report",
            "--mlflow",
            "--tensorboard",
        ]
    )
    assert rc == 0
    study = results / "smoke"
    trials, epochs = results_mod.load_tables(study)
    return study, trials, epochs


@pytest.mark.ray
def test_mlflow_runs_equal_trials_csv(tracked):
    # Rule: one MLflow experiment named after the study, one run per trial (tagged with its
    # trial id), its searched values as params, its last epoch's metrics as the run's metrics,
    # its status; the best trial (trials.csv's first finite row) tagged, with best_config.yaml
    # as an artifact; every epoch logged once as a step.
    from mlflow.tracking import MlflowClient

    study, trials, epochs = tracked
    runs = mlflow_runs(study, "smoke")
    assert len(runs) == len(trials) == 4
    by_trial = runs.set_index("tags.tuner.trial_id")
    assert sorted(by_trial.index) == sorted(trials["trial_id"])
    keys = searched_keys(load_space(SMOKE))
    for row in trials.to_dict("records"):
        run = by_trial.loc[row["trial_id"]]
        for key in keys:
            if isinstance(row[key], float) and math.isnan(row[key]):
                continue  # a conditional key that the trial did not use
            got = run[f"params.{key}"]
            if isinstance(row[key], float):
                assert float(got) == pytest.approx(row[key], rel=1e-6), key
            else:
                assert str(got) == str(row[key]), key
        assert run["params.data.length"] == "300"  # fixed config too (smoke size)
        assert run["metrics.train_loss"] == pytest.approx(row["train_loss"], rel=1e-6)
        assert run["metrics.objective"] == pytest.approx(row["objective"], rel=1e-6)
        assert run["metrics.epoch"] == row["epochs"]
        assert run["tags.tuner.status"] == row["status"]
        assert run["status"] == "FINISHED"
        history = MlflowClient(f"sqlite:///{study / 'mlflow.db'}").get_metric_history(
            run["run_id"], "train_loss"
        )
        mine = epochs[epochs["trial_id"] == row["trial_id"]]
        assert [m.step for m in history] == mine["epoch"].tolist()
        assert [m.value for m in history] == pytest.approx(mine["train_loss"].tolist(), rel=1e-6)
    best = runs[runs["tags.tuner.best"] == "true"]
    assert best["tags.tuner.trial_id"].tolist() == [trials["trial_id"].iloc[0]]
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    artifacts = client.list_artifacts(best["run_id"].iloc[0])
    assert [a.path for a in artifacts] == ["best_config.yaml"]


@pytest.mark.ray
def test_tensorboard_event_files_hold_the_epoch_metrics(tracked):
    # Rule: --tensorboard leaves TensorBoard event files in each trial's folder under ray/,
    # and TensorBoard's own reader finds every epoch's train_loss there (step = epoch).
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    study, trials, epochs = tracked
    for row in trials.to_dict("records"):
        folder = study / "ray" / "search" / f"trial_{row['trial_id']}"
        assert list(folder.glob("events.out.tfevents.*")), folder
        acc = event_accumulator.EventAccumulator(str(folder))
        acc.Reload()
        loss = acc.Scalars("ray/tune/train_loss")
        mine = epochs[epochs["trial_id"] == row["trial_id"]]
        assert [e.step for e in loss] == mine["epoch"].tolist()
        assert [e.value for e in loss] == pytest.approx(mine["train_loss"].tolist(), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_optuna_dashboard_serves_the_study_over_http(tracked, tmp_path):
    # Rule: with the [dashboard] extra, `optuna-dashboard sqlite:///.../optuna.db` serves the
    # smoke study on 127.0.0.1: its study-list API answers with the study and its 4 trials.
    pytest.importorskip("optuna_dashboard")
    exe = shutil.which("optuna-dashboard", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if exe is None:
        pytest.skip("the optuna-dashboard command is not installed")
    study, _, _ = tracked
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api/studies"
    log = tmp_path / "dashboard.log"
    with log.open("wb") as fh:  # wsgiref: one process (gunicorn would fork workers)
        proc = subprocess.Popen(
            [
                exe,
                f"sqlite:///{study / 'optuna.db'}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--server",
                "wsgiref",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def get(url: str):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    try:
        answer = poll(lambda: get(base), 60, "optuna-dashboard to answer", proc, log)
        (entry,) = answer["study_summaries"]
        detail = get(f"{base}/{entry['study_id']}?after=0")
    finally:
        kill_procs([*descendants(proc.pid), psutil.Process(proc.pid)])
        proc.wait(timeout=30)
    assert entry["study_name"] == "smoke"
    assert len(detail["trials"]) == 4
    assert {t["state"] for t in detail["trials"]} == {"Complete"}


def test_mlflow_flag_without_mlflow_installed_is_one_line(tmp_path, monkeypatch, capsys):
    # Rule: --mlflow without the mlflow package: exit 2, one line naming the [mlflow] extra,
    # before Ray starts and before the study folder is created.
    from tuner import cluster

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    monkeypatch.setattr(cluster, "start_ray", lambda *a: pytest.fail("Ray was started"))
    capsys.readouterr()
    rc = search_mod.main(["--space", str(SMOKE), "--smoke", "--results-dir", str(tmp_path / "r"), "--mlflow"])
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and line.startswith("error: --mlflow:") and '".[mlflow]"' in line
    assert not (tmp_path / "r" / "smoke").exists()


def test_tensorboard_flag_without_tensorboardx_is_one_line(tmp_path, monkeypatch, capsys):
    # Rule: the same for --tensorboard and the [tensorboard] extra.
    from tuner import cluster

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setattr(cluster, "start_ray", lambda *a: pytest.fail("Ray was started"))
    capsys.readouterr()
    rc = search_mod.main(
        ["--space", str(SMOKE), "--smoke", "--results-dir", str(tmp_path / "r"), "--tensorboard"]
    )
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and line.startswith("error: --tensorboard:") and '".[tensorboard]"' in line


@pytest.mark.parametrize(
    "value, expected",
    [(True, "local"), (False, None), (None, None), ("http://127.0.0.1:5000", "http://127.0.0.1:5000")],
)
def test_space_search_mlflow_accepts_switch_or_uri(value, expected):
    # Rule: `search.mlflow` in a space file is a switch (true = the study's local store) or a
    # tracking URI, and survives the round trip through study.yaml.
    doc = yaml.safe_load(SMOKE.read_text())
    doc["search"]["mlflow"] = value
    spec = space_from_dict(doc)
    assert spec.search.mlflow == expected
    assert space_from_dict(spec.raw).search.mlflow == expected


def test_space_search_mlflow_rejects_other_values():
    # Rule: anything else is one line naming search.mlflow and what is allowed.
    doc = yaml.safe_load(SMOKE.read_text())
    doc["search"]["mlflow"] = 3
    with pytest.raises(ConfigError, match=r"search\.mlflow: .*allowed: true, false") as info:
        space_from_dict(doc)
    assert "\n" not in str(info.value)
