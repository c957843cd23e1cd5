"""Bad input never starts a search: every row is one line on stderr and exit code 2.

A table of broken space files, data files and command lines, each run through
`tuner.search.main` (before Ray starts): exit 2, exactly one non-empty line on stderr naming the
offending key or file, nothing on stdout, nothing created or changed under --results-dir. A few
rows again through a real `python -m tuner.search` process (no traceback, exit 2), and the one
check that needs Ray: resources more than the cluster has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import yaml

from tuner import cluster as cluster_mod
from tuner import search as search_mod
from tuner import study as study_mod

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def smoke_doc() -> dict[str, Any]:
    return yaml.safe_load(SMOKE.read_text())


def call_main(argv: list[str]) -> int:
    """`tuner.search.main`, with argparse's SystemExit (bad flags) turned into its code."""
    try:
        return search_mod.main(argv)
    except SystemExit as exc:
        return exc.code


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` -> its bytes (None for folders)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------- the rows
# Each row builds its input in tmp_path and returns (argv after --results-dir, fragments the
# error line must contain). `space(...)` writes a space file and returns its path.


def _space_text(tmp: Path, text: str) -> Path:
    path = tmp / "space.yaml"
    path.write_text(text)
    return path


def _space(tmp: Path, edit: Callable[[dict], Any]) -> Path:
    doc = smoke_doc()
    edit(doc)
    return _space_text(tmp, yaml.safe_dump(doc, sort_keys=False))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        node = doc
        *parents, last = path.split("/")
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _rename_section(old: str, new: str) -> Callable[[dict], None]:
    return lambda doc: doc.__setitem__(new, doc.pop(old))


def _prices(tmp: Path, columns: dict[str, list], name: str = "prices.csv") -> Path:
    path = tmp / name
    width = max(len(v) for v in columns.values())
    pd.DataFrame({k: list(v) + [None] * (width - len(v)) for k, v in columns.items()}).to_csv(
        path, index=False
    )
    return path


def _good(n: int = 60, start: float = 100.0) -> list[float]:
    return [start + float(np.sin(i / 5.0)) for i in range(n)]


def space_row(edit_or_text, *fragments: str):
    def build(tmp: Path):
        path = _space_text(tmp, edit_or_text) if isinstance(edit_or_text, str) else _space(tmp, edit_or_text)
        return ["--space", str(path)], ["space.yaml", *fragments]

    return build


def data_row(make: Callable[[Path], Path], *fragments: str):
    def build(tmp: Path):
        path = make(tmp)
        return ["--space", str(SMOKE), f"data.path={path}"], [path.name, *fragments]

    return build


def cli_row(args: list[str], *fragments: str, setup: Callable[[Path], None] | None = None):
    def build(tmp: Path):
        if setup is not None:
            setup(tmp)
        return ["--space", str(SMOKE), *args], list(fragments)

    return build


def _existing_study(tmp: Path) -> None:
    study = tmp / "results" / "smoke"
    study.mkdir(parents=True)
    (study / "study_state.json").write_text(
        json.dumps(
            {
                "experiments": [
                    {
                        "name": "search",
                        "num_samples": 4,
                        "seed": 0,
                        "finished": True,
                        "why": "all 4 trials ran",
                    }
                ]
            }
        )
    )


def _directory_csv(tmp: Path) -> Path:
    (tmp / "adir.csv").mkdir()
    return tmp / "adir.csv"


def _momentum_if(key: str, values: list) -> Callable[[dict], None]:
    return _set("space/train.momentum", {"uniform": [0.0, 0.9], "if": {key: values}})


GOOD_START = {
    "train.optimizer": "adam",
    "train.lr": 0.01,
    "train.clip.mode": "norm",
    "train.clip.threshold": 1.0,
    "train.schedule.chunks": [4, 1],
    "train.schedule.patience": 2,
}


def _start_from(**changes: Any) -> Callable[[dict], None]:
    """search.start_from: [GOOD_START with changes]; a value of None drops the key."""
    point = {k: v for k, v in {**GOOD_START, **changes}.items() if v is not None}
    return _set("search/start_from", [point])


def _alias_bomb() -> str:
    """A ~1.5 KB space file whose model: is an alias 10 levels deep, 9 copies per level
    (9**10 leaves once expanded)."""
    levels = ["  bomb_level_0: &bomb_level_0 [laughing_out_loud, laughing_out_loud, laughing_out_loud]"]
    for i in range(1, 10):
        levels.append(f"  bomb_level_{i}: &bomb_level_{i} [" + ", ".join([f"*bomb_level_{i - 1}"] * 9) + "]")
    text = SMOKE.read_text().replace("model:", "bombs:\n" + "\n".join(levels) + "\nmodel_:", 1)
    return text.replace("model_: {dense_units: 8, lstm_units: 8, noise_std: 0.1}", "model: *bomb_level_9")


_SMOKE_LINES = SMOKE.read_text().splitlines()
_TRAIN_LINES = (
    f"lines {_SMOKE_LINES.index('train: {max_epochs: 4, threads: 1}') + 1} and {len(_SMOKE_LINES) + 1}"
)

ROWS = [
    # ---- YAML: the loader's limits (issue 11, class 3)
    pytest.param(space_row(_alias_bomb(), "aliases"), id="yaml-alias-bomb"),
    pytest.param(
        space_row(SMOKE.read_text() + "train: {max_epochs: 2}\n", "'train' appears twice", _TRAIN_LINES),
        id="yaml-duplicate-section",
    ),
    pytest.param(
        space_row(
            SMOKE.read_text().replace(
                "{max_epochs: 4, threads: 1}", "{max_epochs: 4, threads: 1, max_epochs: 9}"
            ),
            "'max_epochs' appears twice",
        ),
        id="yaml-duplicate-nested-key",
    ),
    pytest.param(space_row("", "empty"), id="yaml-empty-space-file"),
    pytest.param(space_row("# only a comment\n", "empty"), id="yaml-comment-only-space-file"),
    # ---- search.start_from (issue 9): every point a complete, valid setting of searched keys
    pytest.param(
        space_row(
            _start_from(**{"train.lrr": 0.01}), "search.start_from[0].train.lrr", "unknown key", "train.lr"
        ),
        id="start-unknown-key",
    ),
    pytest.param(
        space_row(_start_from(**{"train.lr": 0.5}), "search.start_from[0].train.lr", "0.5", "outside"),
        id="start-outside-distribution",
    ),
    pytest.param(
        space_row(
            _start_from(**{"train.schedule.chunks": [100]}),
            "search.start_from[0].train.schedule.chunks",
            "4, 1",
        ),
        id="start-chunks-not-listed",
    ),
    pytest.param(
        space_row(
            _start_from(**{"train.weight_decay": 0.1}),
            "search.start_from[0].train.weight_decay",
            "not searched",
        ),
        id="start-key-not-searched",
    ),
    pytest.param(
        space_row(
            _start_from(**{"train.schedule.patience": None}),
            "search.start_from[0].train.schedule.patience",
            "missing",
        ),
        id="start-key-missing",
    ),
    pytest.param(
        space_row(
            _start_from(**{"train.momentum": 0.5}), "search.start_from[0].train.momentum", "not used when"
        ),
        id="start-key-whose-condition-fails",
    ),
    pytest.param(
        space_row(_set("search/start_from", {"train.lr": 0.01}), "search.start_from", "a list"),
        id="start-not-a-list",
    ),
    # ---- search: and resources: are built by the config's validator (ranges, finiteness)
    pytest.param(space_row(_set("search/seed", -1), "search.seed", ">= 0"), id="space-seed-negative"),
    pytest.param(
        space_row(_set("search/time_budget_s", float("inf")), "search.time_budget_s", "a finite number"),
        id="space-time-budget-inf",
    ),
    pytest.param(
        space_row(
            _set("search/scheduler/grace_period", float("nan")),
            "search.scheduler.grace_period",
            "a finite number",
        ),
        id="space-grace-nan",
    ),
    pytest.param(
        space_row(_set("search/algorithm", "randon"), "search.algorithm", "did you mean 'random'"),
        id="space-algorithm-typo",
    ),
    # ---- space files
    pytest.param(
        space_row("name: smoke\ndata: {n_series: 4\nmodel: {}\n", "not valid YAML"), id="space-not-yaml"
    ),
    pytest.param(space_row("- data\n- model\n", "must hold a mapping"), id="space-not-a-mapping"),
    pytest.param(
        space_row(_rename_section("search", "serach"), "serach", "unknown section", "search"),
        id="space-unknown-section",
    ),
    pytest.param(space_row(_set("model", 5), "model", "a mapping"), id="space-section-not-mapping"),
    pytest.param(
        space_row(_set("data/lenght", 300), "data.lenght", "did you mean", "length"),
        id="space-unknown-data-key",
    ),
    pytest.param(
        space_row(_set("search/num_sample", 3), "search.num_sample", "num_samples"),
        id="space-unknown-search-key",
    ),
    pytest.param(
        space_row(_set("space/train.lrr", {"loguniform": [0.001, 0.1]}), "space.train.lrr", "train.lr"),
        id="space-unknown-space-key",
    ),
    pytest.param(
        space_row(_set("search/scheduler/grace", 1), "search.scheduler.grace", "grace_period"),
        id="space-unknown-scheduler-key",
    ),
    pytest.param(
        space_row(_set("space/train.lr", {"normal": [0.0, 1.0]}), "space.train.lr", "normal"),
        id="space-unknown-distribution",
    ),
    pytest.param(
        space_row(_set("data/n_series", "four"), "data.n_series", "integer"), id="space-wrong-type-int"
    ),
    pytest.param(
        space_row(_set("search/max_concurrent", 1.5), "search.max_concurrent"), id="space-wrong-type-search"
    ),
    pytest.param(space_row(_set("search/metric", "los"), "search.metric", "loss"), id="space-unknown-metric"),
    pytest.param(
        space_row(_set("search/metric", "loss"), "search.metric", "renamed 'train_loss'"),
        id="space-renamed-metric",
    ),
    pytest.param(
        space_row(_set("space/train.optimizer", {"choice": []}), "space.train.optimizer", "non-empty"),
        id="space-empty-choice",
    ),
    pytest.param(
        space_row(_set("space/train.lr", {"loguniform": [0.1, 0.001]}), "space.train.lr", "low"),
        id="space-reversed-bounds",
    ),
    pytest.param(
        space_row(
            _set("space/train.schedule.patience", {"int": [3, 1]}), "space.train.schedule.patience", "low"
        ),
        id="space-reversed-int",
    ),
    pytest.param(
        space_row(_set("space/train.lr", {"loguniform": [0.0, 0.1]}), "space.train.lr", "> 0"),
        id="space-loguniform-zero",
    ),
    pytest.param(
        space_row(_set("space/train.lr", {"loguniform": [-1.0, 0.1]}), "space.train.lr", "> 0"),
        id="space-loguniform-negative",
    ),
    pytest.param(
        space_row(_set("space/train.schedule.chunks", {"choice": [[1], [0]]}), "train.schedule.chunks"),
        id="space-chunks-below-1",
    ),
    pytest.param(
        space_row(
            _set("space/train.schedule.chunks", {"choice": [[1], [500, 1]]}),
            "space.train.schedule.chunks",
            "data.length = 300",
        ),
        id="space-chunks-above-length",
    ),
    pytest.param(
        space_row(
            _momentum_if("train.optimiser", ["sgd"]),
            "space.train.momentum.if",
            "train.optimiser",
            "not searched",
        ),
        id="space-if-unknown-key",
    ),
    pytest.param(
        space_row(_momentum_if("train.optimizer", ["rmsprop"]), "space.train.momentum.if", "never occurs"),
        id="space-if-value-never-occurs",
    ),
    pytest.param(
        space_row(_set("search/num_samples", 0), "search.num_samples", ">= 1"), id="space-num-samples-0"
    ),
    pytest.param(
        space_row(_set("search/time_budget_s", 0), "search.time_budget_s", "> 0"), id="space-time-budget-0"
    ),
    pytest.param(
        space_row(_set("search/time_budget_s", -60), "search.time_budget_s", "> 0"),
        id="space-time-budget-negative",
    ),
    pytest.param(
        space_row(_set("search/timestep_budget", 0), "search.timestep_budget", ">= 1"),
        id="space-timestep-budget-0",
    ),
    pytest.param(
        space_row(_set("search/timestep_budget", 1.5), "search.timestep_budget", "an integer"),
        id="space-timestep-budget-not-int",
    ),
    pytest.param(space_row(_set("resources/cpu", 0), "resources.cpu", "> 0"), id="space-resources-cpu-0"),
    # ---- data files (data.path=... on the smoke space)
    pytest.param(data_row(lambda t: t / "missing.csv", "file not found"), id="data-missing"),
    pytest.param(data_row(_directory_csv), id="data-a-directory"),
    pytest.param(
        data_row(lambda t: _prices(t, {"a": _good()}, "prices.txt"), "unknown file extension"),
        id="data-unknown-extension",
    ),
    pytest.param(
        data_row(lambda t: _prices(t, {"name": ["x"] * 40, "note": ["y"] * 40}), "no numeric column"),
        id="data-no-numeric-column",
    ),
    pytest.param(
        data_row(
            lambda t: _prices(t, {"a": _good(), "b": _good()[:20] + [None] + _good()[21:]}),
            "series 'b'",
            "NaN",
            "row 20",
        ),
        id="data-nan-inside",
    ),
    pytest.param(
        data_row(
            lambda t: _prices(t, {"a": _good()[:30] + [float("inf")] + _good()[31:]}),
            "series 'a'",
            "infinite",
            "row 30",
        ),
        id="data-inf",
    ),
    pytest.param(
        data_row(
            lambda t: _prices(t, {"a": _good(), "b": _good()[:5] + [0.0] + _good()[6:]}),
            "series 'b'",
            "non-positive",
        ),
        id="data-zero-price",
    ),
    pytest.param(
        data_row(lambda t: _prices(t, {"a": [-1.0] + _good()[1:]}), "non-positive"), id="data-negative-price"
    ),
    pytest.param(
        data_row(
            lambda t: _prices(t, {"a": _good(), "short": _good(10)}),
            "series 'short'",
            "10 prices",
            "at least 18",
        ),
        id="data-too-short",
    ),
    pytest.param(
        data_row(
            lambda t: _prices(
                t, {"a": [str(v) for v in _good()[:7]] + ["1O1.5"] + [str(v) for v in _good()[8:]]}
            ),
            "column 'a'",
            "non-numeric",
            "1O1.5",
        ),
        id="data-typo-in-prices",
    ),
    # ---- command line
    pytest.param(cli_row(["--bogus"], "--bogus"), id="cli-unknown-flag"),
    pytest.param(cli_row(["--num-samples", "many"], "--num-samples", "many"), id="cli-flag-wrong-type"),
    pytest.param(lambda t: (["--no-report"], ["--space"]), id="cli-missing-space"),
    pytest.param(
        lambda t: (["--space", str(t / "nowhere.yaml")], ["nowhere.yaml", "file not found"]),
        id="cli-space-file-missing",
    ),
    pytest.param(cli_row(["train.lrr=0.1"], "train.lrr", "train.lr"), id="cli-override-unknown-key"),
    pytest.param(cli_row(["data.n_series=abc"], "data.n_series", "integer"), id="cli-override-wrong-type"),
    pytest.param(cli_row(["train.lr"], "train.lr", "key=value"), id="cli-override-missing-eq"),
    pytest.param(cli_row(["--name", "a/b"], "name", "'a/b'"), id="cli-name-slash"),
    pytest.param(cli_row(["--name", "../up"], "name", "'../up'"), id="cli-name-dotdot"),
    pytest.param(cli_row(["--resume"], "--resume", "no study"), id="cli-resume-missing"),
    pytest.param(
        cli_row([], "--name", "'smoke' already exists", "--resume", setup=_existing_study),
        id="cli-name-exists",
    ),
    pytest.param(cli_row(["--extend", "0"], "--extend", ">= 1"), id="cli-extend-0"),
    pytest.param(cli_row(["--resume", "--extend", "2"], "--resume", "--extend"), id="cli-resume-and-extend"),
    pytest.param(cli_row(["--num-samples", "0"], "search.num_samples"), id="cli-num-samples-0"),
    pytest.param(cli_row(["--time-budget", "-5"], "search.time_budget_s"), id="cli-time-budget-negative"),
]


def _argv(tmp_path: Path, build) -> tuple[list[str], list[str], Path]:
    args, fragments = build(tmp_path)
    results = tmp_path / "results"
    return [*args, "--results-dir", str(results), "--no-dashboard", "--no-report"], fragments, results


@pytest.mark.parametrize("build", ROWS)
def test_bad_input_is_one_line_and_exit_2(build, tmp_path, capsys, monkeypatch):
    # Rule: exit 2, one non-empty line on stderr (starting "error:") naming the key or file,
    # nothing on stdout, no Ray started, nothing under --results-dir created or changed.
    monkeypatch.chdir(tmp_path)  # a relative path a row might create lands here
    monkeypatch.setattr(cluster_mod, "start_ray", lambda *a: pytest.fail("Ray was started for bad input"))
    argv, fragments, results = _argv(tmp_path, build)
    before = tree(results)
    capsys.readouterr()
    code = call_main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert out.strip() == ""
    assert tree(results) == before


def test_the_table_is_big_enough():
    assert len(ROWS) >= 25


def _one_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert call_main(argv) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return line


def test_non_positive_price_message_shows_a_plain_number(tmp_path, capsys):
    # Rule: the one line is for people: the bad price reads 0.0, not np.float64(0.0).
    path = _prices(tmp_path, {"a": _good()[:5] + [0.0] + _good()[6:]})
    line = _one_line(
        ["--space", str(SMOKE), "--results-dir", str(tmp_path / "r"), f"data.path={path}"], capsys
    )
    assert "np.float64" not in line and "non-positive price 0.0 at row 5" in line


def test_a_directory_as_data_path_is_called_a_directory(tmp_path, capsys):
    # Rule: the message says what is wrong: the path exists but is a folder, not a file.
    path = _directory_csv(tmp_path)
    line = _one_line(
        ["--space", str(SMOKE), "--results-dir", str(tmp_path / "r"), f"data.path={path}"], capsys
    )
    assert "directory" in line and "not found" not in line


def test_mixed_series_lengths_are_accepted(tmp_path):
    # Rule: series of different lengths (a shorter one ends in empty cells) are real data, not
    # an error: validation passes and sizes an epoch from the real steps of each series.
    path = _prices(tmp_path, {"long": _good(80), "short": _good(40, 50.0), "mid": _good(60, 70.0)})
    args = search_mod.parse_args(
        ["--space", str(SMOKE), "--results-dir", str(tmp_path / "results"), f"data.path={path}"]
    )
    p = study_mod.plan(search_mod.options(args))
    assert p.steps_per_epoch == 79 + 39 + 59
    assert p.spec.base["data"]["path"] == str(path)


SUBPROCESS_ROWS = ["space-not-yaml", "data-nan-inside", "cli-unknown-flag", "cli-override-unknown-key"]


@pytest.mark.process
@pytest.mark.parametrize("build", [pytest.param(*r.values, id=r.id) for r in ROWS if r.id in SUBPROCESS_ROWS])
def test_bad_input_through_a_real_process(build, tmp_path):
    # Rule: the real command answers the same: exit 2, one line, no traceback, Ray untouched.
    argv, fragments, results = _argv(tmp_path, build)
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.search", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Ray" not in proc.stdout + proc.stderr
    assert tree(results) == {}


# ---------------------------------------------------------------- needs Ray


def _too_big(tmp_path: Path, capsys) -> tuple[int, str, Path]:
    results = tmp_path / "results"
    capsys.readouterr()
    code = call_main(
        [
            "--space",
            str(SMOKE),
            "--results-dir",
            str(results),
            "--no-dashboard",
            "--no-report",
            "resources.cpu=64",
        ]
    )
    err = capsys.readouterr().err
    return code, err, results


@pytest.mark.ray
def test_resources_more_than_the_cluster_has(ray_session, tmp_path, capsys):
    # Rule: a trial that fits on no node would wait forever: exit 2 at once, one line saying
    # what a trial asks for and what the cluster has.
    code, err, _ = _too_big(tmp_path, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1, err
    total = ray_session.cluster_resources().get("CPU", 0)
    assert lines[0].startswith("error: resources:")
    assert "64 CPU" in lines[0] and f"{total:g} CPU" in lines[0], lines[0]


@pytest.mark.ray
def test_resources_error_leaves_no_study_behind(ray_session, tmp_path, capsys):
    # Rule: bad input changes nothing, also the one found once Ray runs: no study folder is
    # left behind, so the same command with the resources fixed simply runs.
    code, _, results = _too_big(tmp_path, capsys)
    assert code == 2
    assert {k: v for k, v in tree(results).items() if v is not None} == {}


def test_bad_input_relative_results_dir_with_a_cluster(tmp_path, capsys, monkeypatch):
    # Rule: with --address every node writes to the results folder, so a relative path (which
    # each node would resolve on its own disk) is refused before Ray is contacted.
    monkeypatch.chdir(tmp_path)
    rc = search_mod.main(
        [
            "--space",
            str(ROOT / "search_spaces" / "smoke.yaml"),
            "--address",
            "127.0.0.1:1",
            "--results-dir",
            "results",
            "--no-dashboard",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "--results-dir" in err and "relative" in err
    assert not (tmp_path / "results").exists()
