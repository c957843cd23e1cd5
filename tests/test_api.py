"""The Python API (`tuner.run_search`, `tuner.load_study`) against the command line it wraps."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tuner
from tuner import api
from tuner.space import load_space, searched_keys

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
FLAGS = ["--no-dashboard", "--no-report"]


def example_code() -> str:
    """The notebook example of the README (kept once, in `tuner.api`'s docstring)."""
    block = re.search(r"\n\n((?:    .*\n)+)", api.__doc__)
    return "\n".join(line[4:] for line in block.group(1).splitlines())


def test_import_tuner_starts_no_ray():
    # Rule: `import tuner` imports neither Ray nor Optuna, and its lazy API names import no Ray
    # until a search runs (Optuna, whose distributions type the space file, is allowed then).
    code = (
        "import sys, tuner; print('ray' in sys.modules, 'optuna' in sys.modules); "
        "tuner.run_search; tuner.load_study; tuner.Study; print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False", "False"]


def test_search_options_argv_is_the_equivalent_command():
    # Rule: an API search records in study.yaml the command line that repeats it.
    opts = api.SearchOptions(
        space="s.yaml",
        name="n",
        smoke=True,
        dashboard=False,
        report=False,
        mlflow="local",
        extend=3,
        address=None,
        overrides=("train.lr=0.1",),
    )
    args = __import__("tuner.search", fromlist=["x"]).parse_args(opts.argv())
    from tuner.search import options

    assert options(args) == opts


def test_run_search_bad_input_raises_config_error_and_writes_nothing(tmp_path):
    # Rule: bad input through the API is a ConfigError of one line, before Ray or any file.
    with pytest.raises(tuner.ConfigError, match="train.lr") as info:
        tuner.run_search(
            SMOKE, results_dir=tmp_path / "r", overrides=["train.lr=-1"], smoke=True, dashboard=False
        )
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r" / "smoke").exists()


@pytest.mark.ray
def test_run_search_config_error_after_the_claim_leaves_nothing_and_unlocks(ray_session, tmp_path):
    # Rule: the API, not only the command line, guards the study folder: bad input found once
    # Ray runs (a trial no node fits) removes the folder the call created and releases its
    # lock, so the same call again gets the same one line (not "another search is running"
    # nor "already exists").
    for _ in range(2):
        with pytest.raises(tuner.ConfigError, match="resources: a trial asks for 64 CPU"):
            tuner.run_search(
                SMOKE,
                results_dir=tmp_path / "r",
                overrides=["resources.cpu=64"],
                smoke=True,
                dashboard=False,
                report=False,
            )
        assert list((tmp_path / "r").iterdir()) == []


@pytest.mark.ray
def test_run_search_equals_the_command_line(ray_session, tmp_path):
    # Rule: the API does what the CLI does: for the same smoke study (same seed), the same
    # trials.csv/epochs.csv columns, the same number of trials and epochs, the same searched
    # values and the same losses; it returns those tables, the best config and the paths of the
    # study's files. (FIFO: which trials ASHA stops depends on timing; one trial at a time:
    # a second trial process costs more CPU than these tiny trials.)
    overrides = ["search.scheduler={type: fifo}", "search.max_concurrent=1"]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.search",
            "--space",
            str(SMOKE),
            "--smoke",
            "--results-dir",
            str(tmp_path / "cli"),
            *FLAGS,
            "--address",  # the shared test Ray (starting one costs seconds), as a cluster user would
            ray_session.get_runtime_context().gcs_address,
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    from_cli = tuner.load_study(tmp_path / "cli" / "smoke")

    study = tuner.run_search(
        SMOKE, results_dir=tmp_path / "api", smoke=True, dashboard=False, report=False, overrides=overrides
    )
    assert isinstance(study, tuner.Study) and study.dir == (tmp_path / "api" / "smoke")
    assert study.finished and study.why == from_cli.why
    assert list(study.trials.columns) == list(from_cli.trials.columns)
    assert list(study.epochs.columns) == list(from_cli.epochs.columns)
    assert len(study.trials) == len(from_cli.trials) == 4
    assert len(study.epochs) == len(from_cli.epochs)
    keys = searched_keys(load_space(SMOKE))

    def values(trials):
        rows = trials[keys].astype(str).values.tolist()
        return sorted(rows)

    assert values(study.trials) == values(from_cli.trials)

    def losses(s):  # {searched values: that trial's losses by epoch}
        merged = s.epochs.merge(s.trials[["trial_id", *keys]], on="trial_id")
        return {
            str(k): g.sort_values("epoch")["train_loss"].round(6).tolist()
            for k, g in merged.groupby([merged[c].astype(str) for c in keys])
        }

    assert losses(study) == losses(from_cli)
    for path in (study.trials_csv, study.epochs_csv, study.best_config_yaml, study.study_yaml):
        assert path.exists(), path
    assert set(study.best_config) == {"data", "model", "train"}
    # study.yaml of the API run records the command line that repeats it.
    import yaml

    command = yaml.safe_load(study.study_yaml.read_text())["command"]
    assert "-m tuner.search --space" in command and "--smoke" in command
    reread = tuner.load_study(study.dir)
    assert reread.trials.equals(study.trials) and reread.epochs.equals(study.epochs)


@pytest.mark.ray
def test_readme_example_runs_as_written(ray_session, tmp_path, monkeypatch, capsys):
    # Rule: the README's notebook example (tuner.api's docstring, the one copy) runs as written
    # from the project folder (here a copy of its search_spaces/), in smoke mode.
    shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
    monkeypatch.chdir(tmp_path)
    code = example_code()
    assert "run_search(" in code and "smoke=True" in code
    scope: dict = {}
    exec(compile(code, "README example", "exec"), scope)
    study = scope["study"]
    assert len(study.trials) == 4 and (tmp_path / "results" / "smoke" / "trials.csv").exists()
    assert "trial_id" in capsys.readouterr().out
    # Rule: the README shows exactly this example (one copy of the text, checked, not two).
    assert example_code() in (ROOT / "README.md").read_text()
