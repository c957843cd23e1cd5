"""The search service end to end, with real Ray (a shared 2-CPU instance), real Optuna, SQLite."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from tuner import search
from tuner.report.anytime import warm_start_trials
from tuner.results import TRIAL_COLUMNS, load_tables
from tuner.core.train import EPOCH_COLUMNS

pytestmark = pytest.mark.ray

TINY = {"n_series": 3, "length": 200, "window": 8, "seed": 0}
MODEL = {"dense_units": 6, "lstm_units": 6, "noise_std": 0.1}


def write_space(
    tmp_path: Path, space: dict, search_section: dict, name: str = "t", train: dict | None = None
) -> Path:
    doc = {
        "name": name,
        "data": TINY,
        "model": MODEL,
        "train": {"max_epochs": 4, **(train or {})},
        "space": space,
        # One trial at a time unless a test needs two: each concurrent trial is one more Ray
        # actor process to start (~3.5 CPU-s, mostly importing torch), the suite's main cost.
        "search": {"max_concurrent": 1, "checkpoint_every": 2, "max_failures": 0, **search_section},
        "resources": {"cpu": 1, "gpu": 0},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(path: Path, tmp_path: Path, *extra: str) -> int:
    return search.main(
        [
            "--space",
            str(path),
            "--results-dir",
            str(tmp_path / "results"),
            "--no-dashboard",
            "--no-report",
            *extra,
        ]
    )


def test_search_optuna_asha_writes_tables_and_study(ray_session, tmp_path):
    # Rule: an Optuna + ASHA search finishes on 2 CPUs; trials.csv has one row per trial with the
    # documented columns and statuses; epochs.csv one row per (trial, epoch); the SQLite study
    # holds the same trials; best_config.yaml is a runnable config.
    space = {
        "train.optimizer": {"choice": ["sgd", "adam"]},
        "train.lr": {"loguniform": [1e-3, 1e-1]},
        "train.schedule.chunks": {"choice": [[1], [4, 1]]},
    }
    path = write_space(
        tmp_path,
        space,
        {
            "num_samples": 5,
            "scheduler": {
                "type": "asha",
                "time_attr": "training_iteration",
                "grace_period": 1,
                "reduction_factor": 2,
                "max_t": 4,
            },
        },
    )
    assert run(path, tmp_path) == 0
    study = tmp_path / "results" / "t"
    trials, epochs = load_tables(study)
    assert len(trials) == 5 and trials["trial_id"].is_unique
    for column in (*TRIAL_COLUMNS, "train.optimizer", "train.lr", "train.schedule.chunks"):
        assert column in trials.columns
    assert list(epochs.columns) == ["trial_id", *EPOCH_COLUMNS]
    assert set(trials["status"]) <= {"completed", "early_stopped"}
    assert (trials["status"] == "completed").any()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    per_trial = epochs.groupby("trial_id")["epoch"].max()
    for row in trials.itertuples():
        assert per_trial[row.trial_id] == row.epochs
        assert (row.epochs == 4) == (row.status == "completed")
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{study / 'optuna.db'}")
    assert len(stored.trials) == 5
    best = yaml.safe_load((study / "best_config.yaml").read_text())
    assert set(best) == {"data", "model", "train"} and best["data"]["length"] == 200
    # Rule: best_config.yaml says (in comments) which trial it comes from: the lowest objective.
    lowest = trials.sort_values("objective", kind="stable").iloc[0]["trial_id"]
    header = (study / "best_config.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# best trial {lowest} (") and "nan" not in header
    recorded = yaml.safe_load((study / "study.yaml").read_text())
    assert "tuner.search" in recorded["command"] and "ray" in recorded["versions"]
    # Rule: a study.yaml is itself a space file and a run config (its record keys are skipped).
    from tuner.core import config as config_mod
    from tuner.space import load_space

    assert load_space(study / "study.yaml").name == "t"
    assert config_mod.load(study / "study.yaml").data.length == 200


def test_search_grid_runs_every_combination_once(ray_session, tmp_path):
    # Rule: algorithm grid runs the product of the grid values, each exactly once.
    space = {
        "train.optimizer": {"grid": ["sgd", "adam"]},
        "train.schedule.chunks": {"grid": [[1], [3], [5, 1]]},
    }
    path = write_space(
        tmp_path, space, {"algorithm": "grid", "scheduler": {"type": "fifo"}}, train={"max_epochs": 2}
    )
    assert run(path, tmp_path) == 0
    trials, _ = load_tables(tmp_path / "results" / "t")
    combos = sorted(zip(trials["train.optimizer"], trials["train.schedule.chunks"].astype(str)))
    expected = sorted(itertools.product(["sgd", "adam"], ["1", "3", "5,1"]))
    assert combos == expected
    assert (trials["status"] == "completed").all()


def test_search_conditional_parameter_absent_when_condition_fails(ray_session, tmp_path):
    # Rule: momentum is sampled only for sgd; adam trials have no momentum at all (under the
    # median stopping rule, which may stop some of them).
    space = {
        "train.optimizer": {"choice": ["sgd", "adam"]},
        "train.momentum": {"uniform": [0.1, 0.9], "if": {"train.optimizer": ["sgd"]}},
    }
    path = write_space(
        tmp_path,
        space,
        {"num_samples": 6, "sampler": "random", "scheduler": {"type": "median", "grace_period": 1}},
        train={"max_epochs": 2},
    )
    assert run(path, tmp_path) == 0
    study = tmp_path / "results" / "t"
    trials, _ = load_tables(study)
    assert set(trials["train.optimizer"]) == {"sgd", "adam"}
    sgd = trials[trials["train.optimizer"] == "sgd"]["train.momentum"]
    adam = trials[trials["train.optimizer"] == "adam"]["train.momentum"]
    assert sgd.between(0.1, 0.9).all() and adam.isna().all()
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{study / 'optuna.db'}")
    for t in stored.trials:
        assert ("train.momentum" in t.params) == (t.params["train.optimizer"] == "sgd")


def test_search_pbt_runs_with_checkpoints(ray_session, tmp_path):
    # Rule: PBT (no searcher) runs; trials exploit through checkpoints (an exploited trial goes
    # on from its donor's epoch, even when that donor had finished) and every trial ends at
    # max_epochs, each (trial, epoch) once.
    space = {"train.lr": {"loguniform": [1e-3, 1e-1]}}
    path = write_space(
        tmp_path,
        space,
        {
            "algorithm": "random",
            "num_samples": 3,
            "max_concurrent": 2,  # a population trains side by side
            "checkpoint_every": 1,
            "scheduler": {"type": "pbt", "time_attr": "training_iteration", "perturbation_interval": 2},
        },
        train={"max_epochs": 6, "optimizer": "adam"},
    )
    assert run(path, tmp_path) == 0
    trials, epochs = load_tables(tmp_path / "results" / "t")
    assert len(trials) == 3 and (trials["epochs"] == 6).all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id")["epoch"].max() == 6).all()
    assert (trials["status"] == "completed").all()


def test_search_time_to_target_ranks_unreached_last(ray_session, tmp_path):
    # Rule: the time_to_target objective is the training seconds until train_loss first reached the
    # target; trials that never get there rank last with +inf, not as errors.
    space = {"train.lr": {"choice": [1e-9, 0.05]}}
    path = write_space(
        tmp_path,
        space,
        {"algorithm": "grid", "metric": "time_to_target", "target_loss": 0.99, "scheduler": {"type": "fifo"}},
        train={"max_epochs": 6, "optimizer": "adam", "schedule": {"chunks": [4]}},
    )
    path.write_text(path.read_text().replace("choice", "grid"))
    assert run(path, tmp_path) == 0
    trials, epochs = load_tables(tmp_path / "results" / "t")
    trials = trials.sort_values("train.lr")
    frozen, moving = trials.iloc[0], trials.iloc[1]
    assert frozen["status"] == "completed" and math.isinf(frozen["objective"])
    mine = epochs[epochs["trial_id"] == moving["trial_id"]]
    reached = mine[mine["train_loss"] <= 0.99]
    assert len(reached), "the adam trial should reach the target on this tiny problem"
    assert moving["objective"] == pytest.approx(reached["train_time_s"].iloc[0])
    ranked = pd.read_csv(tmp_path / "results" / "t" / "trials.csv")
    assert ranked["trial_id"].iloc[0] == moving["trial_id"]


def test_search_held_out_columns_early_stop_and_reference(ray_session, tmp_path):
    # Rule: with a hold-out, trials.csv has val_loss, best_val_loss and best_epoch filled; a
    # trial ended by train.early_stopping is `early_stopped` at its best epoch + patience, its
    # objective best_val_loss is its best epoch's held-out loss; study.yaml states the data's
    # constants, the split and both baselines.
    path = write_space(
        tmp_path,
        {"train.seed": {"grid": [0, 1]}},
        {"algorithm": "grid", "metric": "best_val_loss", "scheduler": {"type": "fifo"}},
        train={"optimizer": "adam", "early_stopping": {"patience": 1, "min_delta": 10.0}},
    )
    doc = yaml.safe_load(path.read_text())
    doc["data"]["val_fraction"] = 0.25
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run(path, tmp_path) == 0
    study = tmp_path / "results" / "t"
    trials, epochs = load_tables(study)
    assert len(trials) == 2 and (trials["status"] == "early_stopped").all()
    assert (trials["epochs"] == 2).all() and (trials["best_epoch"] == 1).all()
    first = epochs[epochs["epoch"] == 1].set_index("trial_id")["val_loss"]
    for row in trials.itertuples():
        assert row.best_val_loss == pytest.approx(first[row.trial_id])
        assert row.objective == pytest.approx(row.best_val_loss)
        assert math.isfinite(row.val_loss) and math.isfinite(row.train_loss)
    recorded = yaml.safe_load((study / "study.yaml").read_text())
    assert recorded["data_constants"]["period_a"] == 50.0
    assert recorded["split"]["train_steps"] == 3 * 149 and recorded["split"]["val_steps"] == 3 * 50
    ridge = recorded["baselines"]["ridge"]
    assert math.isfinite(ridge["val"]) and ridge["alpha"] >= 0
    assert recorded["baselines"]["zero"]["train"] == pytest.approx(1.0, rel=1e-5)
    # Rule: best_config.yaml says at which epoch the best trial's best held-out model was reached.
    best = trials.sort_values("objective", kind="stable").iloc[0]
    text = (study / "best_config.yaml").read_text()
    assert f"reached at epoch {int(best['best_epoch'])};" in text.splitlines()[1]


START_SPACE = {
    "train.optimizer": {"choice": ["sgd", "adam"]},
    "train.lr": {"loguniform": [1e-3, 1e-1]},
    "train.schedule.chunks": {"choice": [[1], [4, 1]]},
}
START = [
    {"train.optimizer": "adam", "train.lr": 0.0123, "train.schedule.chunks": [4, 1]},
    {"train.optimizer": "sgd", "train.lr": 0.001, "train.schedule.chunks": [1]},
]


def _in_order(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials of Tune's variant generator in creation order (its trial ids end in a counter)."""
    return trials.assign(n=trials["trial_id"].str.rsplit("_", n=1).str[1].astype(int)).sort_values("n")


def _is_point(row, point: dict) -> bool:
    return (
        row["train.optimizer"] == point["train.optimizer"]
        and math.isclose(float(row["train.lr"]), point["train.lr"])
        and str(row["train.schedule.chunks"]).replace(" ", "").strip("[]")
        == ",".join(map(str, point["train.schedule.chunks"]))
    )


@pytest.mark.parametrize("algorithm", ["optuna", "random", "grid"])
def test_search_start_from_runs_first_in_order_and_once(ray_session, tmp_path, algorithm):
    # Rule (issue 9): search.start_from's settings are the first trials, exactly and in order,
    # in addition to num_samples, for optuna, random (Optuna's RandomSampler) and grid (Tune's
    # variant generator: the points, then the grid), each once (an extension does not run them
    # again: test_search_extend_adds_trials_to_finished_study).
    space = dict(START_SPACE)
    if algorithm == "grid":
        space["train.lr"] = {"choice": [0.001, 0.0123]}
    path = write_space(
        tmp_path,
        space,
        {"algorithm": algorithm, "num_samples": 1, "scheduler": {"type": "fifo"}, "start_from": START},
        train={"max_epochs": 1},
    )
    assert run(path, tmp_path) == 0
    study = tmp_path / "results" / "t"
    trials = load_tables(study)[0]
    assert len(trials) == len(START) + (2 * 2 * 2 if algorithm == "grid" else 1)
    # The report finds the points' trials by their values (anytime plot, summary).
    by_id = trials.set_index("trial_id")
    warm = warm_start_trials(trials, START)
    assert all(_is_point(by_id.loc[t], point) for t, point in zip(warm, START, strict=True)), warm
    if algorithm == "grid":
        first = _in_order(trials).iloc[: len(START)]
        assert all(_is_point(row, point) for (_, row), point in zip(first.iterrows(), START))
        return
    # Optuna numbers its trials as it hands them out: the points are trials 0 and 1
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{study / 'optuna.db'}")
    first = [
        (t.params["train.optimizer"], t.params["train.lr"], t.params["train.schedule.chunks"])
        for t in sorted(stored.trials, key=lambda t: t.number)[: len(START)]
    ]
    assert first == [
        (p["train.optimizer"], p["train.lr"], ",".join(map(str, p["train.schedule.chunks"]))) for p in START
    ]
    for point in START:
        assert sum(_is_point(row, point) for _, row in trials.iterrows()) == 1


def test_search_extend_adds_trials_to_finished_study(ray_session, tmp_path):
    # Rule: --resume of a finished study says so (exit 0, nothing re-run); --extend N adds N
    # trials to the same Optuna study with a fresh seed (no replayed suggestions), and the
    # tables hold old and new trials once each; the extension does not evaluate the study's
    # search.start_from points again (issue 9).
    path = write_space(
        tmp_path,
        START_SPACE,
        {"num_samples": 2, "scheduler": {"type": "fifo"}, "start_from": START},
        train={"max_epochs": 1},
    )
    assert run(path, tmp_path) == 0
    assert run(path, tmp_path, "--resume") == 0
    study = tmp_path / "results" / "t"
    assert len(load_tables(study)[0]) == 4
    assert run(path, tmp_path, "--extend", "3") == 0
    trials, epochs = load_tables(study)
    assert len(trials) == 7 and trials["trial_id"].is_unique
    assert sorted(trials["experiment"]) == ["extend-1"] * 3 + ["search"] * 4
    assert len(epochs) == 7
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{study / 'optuna.db'}")
    lrs = [t.params["train.lr"] for t in stored.trials]
    assert len(stored.trials) == 7 and len(set(lrs)) == 7
    for point in START:
        assert sum(_is_point(row, point) for _, row in trials.iterrows()) == 1
