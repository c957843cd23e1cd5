"""Bad input, round two (issue 11): what a hostile user throws at the commands.

Every answer is one line on stderr and exit code 2, and nothing under --results-dir is created
or changed (a study folder that a refused command created is removed again). Most rows run
`tuner.search.main` in-process and fail before Ray starts; a few run real processes.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.test_bad_input import SMOKE, call_main, smoke_doc, tree
from tuner import preflight
from tuner import search as search_mod
from tuner import study as study_mod
from tuner import study_dir as folders
from tuner.core import config as config_mod

ROOT = Path(__file__).resolve().parents[1]


def refused(capsys, argv: list[str], results: Path, *fragments: str) -> str:
    """Run the search command; assert exit 2, one error line holding `fragments`, and no change
    under `results`; return the line."""
    before = tree(results)
    code = call_main(["--results-dir", str(results), *argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert tree(results) == before
    return lines[0]


def smoke(*overrides: str) -> list[str]:
    return ["--space", str(SMOKE), "--smoke", "--name", "t", *overrides]


def write_csv(path: Path, columns: dict[str, list[float]]) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


# ================================================================ class 2: every key, every kind


BAD_VALUES = {"nan": ".nan", "inf": ".inf", "negative": "-1", "huge": "1000000000000000", "string": "abc"}


@pytest.mark.parametrize("kind", list(BAD_VALUES))
def test_config_every_key_answers_bad_numbers_with_one_line_or_documented_acceptance(kind):
    # Rule: every leaf key of the run config (walked programmatically, so a key added later is
    # covered) given NaN, inf, -1, 1e15 or a string either loads (the documented acceptance)
    # or fails with one ConfigError line naming the key. No float key accepts NaN or inf, no
    # ranged key accepts a value outside its range, and nothing else escapes.
    hints = config_mod.leaf_keys()
    for key in hints:
        try:
            cfg = config_mod.load(None, [f"{key}={BAD_VALUES[kind]}"])
        except config_mod.ConfigError as exc:
            text = str(exc)
            assert "\n" not in text and len(text) < 300 and key.rsplit(".", 1)[-1] in text, text
            continue
        assert kind not in ("nan", "inf"), f"{key} accepted {kind}"
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        for value in node if isinstance(node, tuple) else (node,):
            assert not isinstance(value, float) or math.isfinite(value), (key, value)
        # An accepted size must still pass (or be refused by) the memory estimate in one line.
        try:
            preflight.check_memory(cfg)
        except config_mod.ConfigError as exc:
            assert "\n" not in str(exc)


def test_config_ranged_fields_refuse_values_outside_their_metadata_range():
    # Rule: a field declared with `bounded(default, low, high)` refuses low - 1 and high + 1.
    import dataclasses

    checked = 0
    for section, cls in config_mod.SECTIONS.items():
        todo = [(section, cls)]
        while todo:
            prefix, c = todo.pop()
            for f in dataclasses.fields(c):
                if dataclasses.is_dataclass(
                    f.default_factory if f.default_factory is not dataclasses.MISSING else None
                ):
                    todo.append((f"{prefix}.{f.name}", f.default_factory))
                    continue
                low, high = f.metadata.get("range", (None, None))
                for bad in ([low - 1] if low is not None else []) + (
                    [high * 10 + 1] if high is not None else []
                ):
                    with pytest.raises(config_mod.ConfigError, match=f.name):
                        config_mod.load(None, [f"{prefix}.{f.name}={bad}"])
                    checked += 1
    assert checked >= 20


@pytest.mark.process
@pytest.mark.parametrize(
    "override,fragment",
    [
        ("train.lr=.inf", "train.lr"),
        ("data.length=10000000000", "memory"),
        ("model.lstm_units=1000000", "available"),
    ],
)
def test_train_cli_refuses_non_finite_and_absurd_sizes_with_one_line(tmp_path, override, fragment):
    # Rule: `python -m tuner.train` answers a non-finite rate or a size no memory holds with one
    # line and exit 2, before allocating (no MemoryError, no traceback), writing nothing.
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.train", "--out", str(tmp_path / "o"), override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and fragment in lines[0].replace("machine has", "memory available"), proc.stderr
    assert not (tmp_path / "o").exists()


# ================================================================ class 1 + 2: the search command


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("data.bias=-1000", ["non-positive price"]),
        ("data.freq_a=.inf", ["data.freq_a", "finite"]),
        ("data.noise_std=.nan", ["data.noise_std", "finite"]),
        ("train.lr=.inf", ["train.lr", "finite"]),
        ("train.weight_decay=.inf", ["train.weight_decay", "finite"]),
        ("data.cost=.inf", ["data.cost", "finite"]),
        ("train.schedule.min_delta=.inf", ["train.schedule.min_delta", "finite"]),
        ("data.bias=1e300", ["data.bias", "<= 1e+15"]),
        ("data.seed=-1", ["data.seed", ">= 0"]),
        ("train.threads=1000000", ["train.threads", "<= 4096"]),
        ("data.length=10000000000", ["available"]),
        ("model.lstm_units=1000000", ["available"]),
    ],
)
def test_search_refuses_doomed_data_and_numbers_before_ray(tmp_path, capsys, override, fragments):
    # Rule: what would make every trial fail (or report a bogus status) is refused before Ray
    # starts: one line, exit 2, no study folder.
    refused(capsys, smoke(override), tmp_path / "results", *fragments)


def _space_with(tmp_path: Path, edit) -> Path:
    doc = smoke_doc()
    edit(doc)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "edit,fragments",
    [
        (lambda d: d["search"].update(seed=-1), ["search.seed", str(config_mod.SEED_LIMIT)]),
        (lambda d: d["search"].update(seed=2**40), ["search.seed"]),
        (
            lambda d: d["search"].update(metric="time_to_target", target_loss=-1),
            ["search.target_loss", "> 0"],
        ),
        (lambda d: d["resources"].update(cpu=1e-9), ["resources.cpu", "0.0001"]),
        (lambda d: d["resources"].update(cpu=1.5), ["resources.cpu", "whole"]),
        (lambda d: d["resources"].update(gpu=1e-7), ["resources.gpu"]),
    ],
)
def test_search_refuses_search_and_resource_numbers_ray_would_reject(tmp_path, capsys, edit, fragments):
    # Rule: seeds outside 0..2**32-1, an unreachable target loss and resource amounts Ray
    # cannot schedule are refused before Ray starts (they used to fail after it, leaving a
    # study folder that blocked the corrected command).
    space = _space_with(tmp_path, edit)
    refused(capsys, ["--space", str(space), "--smoke", "--name", "t"], tmp_path / "results", *fragments)


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--num-cpus", "0"], "--num-cpus"),
        (["--num-cpus", "10000000"], "--num-cpus"),
        (["--dashboard-port", "70000"], "--dashboard-port"),
        (["--dashboard-port", "0"], "port"),
        (["--extend", "10000000"], "--extend"),
        (["--num-samples", "1000000000"], "num_samples"),
        (["--address", "nohost"], "--address"),
        (["--address", "h:99999"], "--address"),
    ],
)
def test_search_flags_out_of_range_are_one_line(tmp_path, capsys, flags, fragment):
    # Rule: every numeric flag is range-checked (argparse checks only the type).
    results = tmp_path / "results"
    results.mkdir()
    refused(capsys, [*smoke(), *flags], results, fragment)


def test_search_refuses_file_data_that_every_trial_would_reject(tmp_path, capsys):
    # Rule: the checks of a trial's data preparation run on the real file before Ray: held-out
    # series >= the series in the file, a val_fraction leaving no training step, prices near
    # the float limit.
    data = write_csv(
        tmp_path / "p.csv", {"a": list(np.linspace(10, 20, 40)), "b": list(np.linspace(20, 30, 40))}
    )
    results = tmp_path / "results"
    refused(
        capsys,
        smoke(f"data.path={data}", "data.val_series=2"),
        results,
        "data.val_series",
        "fewer than the 2 series",
    )
    refused(
        capsys,
        smoke(f"data.path={data}", "data.val_fraction=0.99"),
        results,
        "data.val_fraction",
        "no training step",
    )
    huge = write_csv(tmp_path / "h.csv", {"a": [1e308] * 40})
    refused(capsys, smoke(f"data.path={huge}"), results, "h.csv", "<= 1e+15")


def test_search_relative_data_path_is_made_absolute_once(tmp_path, monkeypatch):
    # Rule: a relative data.path is resolved from the current folder when the command starts
    # and recorded absolute in the plan (and so in study.yaml): trials run in other folders.
    data = write_csv(tmp_path / "rel.csv", {"a": list(np.linspace(10, 20, 400))})
    monkeypatch.chdir(tmp_path)
    args = search_mod.parse_args(
        [
            "--space",
            str(SMOKE),
            "--smoke",
            "--name",
            "rp",
            "--results-dir",
            str(tmp_path / "results"),
            "data.path=rel.csv",
        ]
    )
    try:
        plan = study_mod.plan(search_mod.options(args))
    finally:
        folders.abandon()
        folders.release()
    assert plan.spec.base["data"]["path"] == str(data)
    assert plan.spec.raw["data"]["path"] == str(data)
    assert not (tmp_path / "results" / "rp").exists()


# ================================================================ class 8: small ones


@pytest.mark.parametrize("name", ["x" * 300, "a b", "-dash", ".hidden", "tab\tname"])
def test_search_refuses_study_names_filesystems_do_not_take(tmp_path, capsys, name):
    # Rule: names are at most 100 characters of a safe set (no OSError from the filesystem).
    refused(capsys, ["--space", str(SMOKE), "--smoke", "--name", name], tmp_path / "results", "name")


@pytest.mark.parametrize("name", ["2024", "yes", "null", "1e3"])
def test_search_name_that_looks_like_yaml_is_a_string(tmp_path, name):
    # Rule: --name is taken as text, never parsed as YAML (2024 is not an int, null not None).
    args = search_mod.parse_args(
        ["--space", str(SMOKE), "--smoke", "--name", name, "--results-dir", str(tmp_path)]
    )
    try:
        plan = study_mod.plan(search_mod.options(args))
    finally:
        folders.abandon()
        folders.release()
    assert plan.spec.name == name and plan.study_dir.name == name


def test_data_wide_csv_with_many_columns_loads_every_series(tmp_path):
    # Rule: a wide file is read column block by column block (one pass): 20,000 series come
    # back whole and in order. (200,000 columns: 7.8 s measured, no longer quadratic.)
    from tuner.core.prices import load_prices

    n = 20_000
    frame = pd.DataFrame(
        np.arange(1, 5, dtype=float)[:, None] + np.arange(n)[None, :], columns=[f"s{i}" for i in range(n)]
    )
    frame.iloc[3, 7] = np.nan  # a shorter series
    frame.to_csv(tmp_path / "wide.csv", index=False)
    series = load_prices(tmp_path / "wide.csv", min_length=3)
    assert len(series) == n
    assert list(series[7]) == [8.0, 9.0, 10.0] and list(series[-1]) == [n, n + 1, n + 2, n + 3]


def test_data_parquet_numeric_text_column_is_one_line(tmp_path):
    # Rule: a Parquet string column that holds numbers is refused with one line (it was an
    # IndexError).
    from tuner.core.prices import load_prices

    pd.DataFrame({"p": pd.Series(["1.5", "2.5", "3.5", "4.5"], dtype="string")}).to_parquet(
        tmp_path / "s.parquet"
    )
    with pytest.raises(config_mod.ConfigError, match="numbers stored as text"):
        load_prices(tmp_path / "s.parquet")


# ================================================================ classes 4-6: the study folder


def _fake_study(results: Path, name: str, finished: bool, raw: dict | None = None) -> Path:
    """A study folder as a search leaves it (state, study.yaml, a table), without running one."""
    study = results / name
    study.mkdir(parents=True)
    state = {
        "experiments": [
            {
                "name": "search",
                "num_samples": 4,
                "seed": 0,
                "finished": finished,
                "why": "all 4 trials ran" if finished else "",
            }
        ]
    }
    (study / "study_state.json").write_text(json.dumps(state))
    (study / "trials.csv").write_text("trial_id,status\na,completed\n")
    if raw is not None:
        (study / "study.yaml").write_text(yaml.safe_dump(raw))
    return study


def _smoke_raw(tmp_path: Path, name: str) -> dict:
    args = search_mod.parse_args(
        ["--space", str(SMOKE), "--smoke", "--name", name, "--results-dir", str(tmp_path / "probe")]
    )
    try:
        return study_mod.plan(search_mod.options(args)).spec.raw
    finally:
        folders.abandon()
        folders.release()


def test_study_name_taken_by_a_file_is_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "t").write_text("not a folder")
    refused(capsys, smoke(), results, "is a file")


def test_study_folder_with_tables_but_no_state_is_never_overwritten(tmp_path, capsys):
    # Rule: a folder holding files but no study_state.json is refused, its files untouched.
    results = tmp_path / "results"
    (results / "t").mkdir(parents=True)
    (results / "t" / "trials.csv").write_text("precious\n")
    refused(capsys, smoke(), results, "no study_state.json", "trials.csv")


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"experiments": [{"name": "x"}]}', '{"experiments": 3}', ""]
)
@pytest.mark.parametrize("flag", [[], ["--resume"], ["--extend", "2"]])
def test_study_corrupt_state_file_is_one_line(tmp_path, capsys, text, flag):
    # Rule: a corrupt study_state.json (bad JSON, a list, missing keys) is one line, exit 2,
    # for a new search, --resume and --extend alike; nothing is changed.
    results = tmp_path / "results"
    (results / "t").mkdir(parents=True)
    (results / "t" / "study_state.json").write_text(text)
    refused(capsys, [*smoke(), *flag], results, "study_state.json", "corrupt")


def test_extend_with_a_different_space_is_refused_naming_what_differs(tmp_path, capsys):
    # Rule: --extend continues the study as it was; a changed setting is named, not mixed in.
    results = tmp_path / "results"
    _fake_study(results, "t", finished=True, raw=_smoke_raw(tmp_path, "t"))
    refused(
        capsys,
        [*smoke("train.max_epochs=2", "model.lstm_units=9"), "--extend", "2"],
        results,
        "differ",
        "train.max_epochs",
        "model.lstm_units",
    )


def test_extend_on_an_interrupted_study_says_resume_first(tmp_path, capsys):
    results = tmp_path / "results"
    _fake_study(results, "t", finished=False, raw=_smoke_raw(tmp_path, "t"))
    refused(capsys, [*smoke(), "--extend", "2"], results, "run --resume first")


def test_extend_with_a_corrupt_optuna_database_is_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    study = _fake_study(results, "t", finished=True, raw=_smoke_raw(tmp_path, "t"))
    (study / "optuna.db").write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    refused(capsys, [*smoke(), "--extend", "2"], results, "optuna.db", "Optuna database")


class _Payload:
    """Unpickling this creates a file: the proof a crafted pickle ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("how", ["group_writable_pickle", "other_writable_folder", "foreign_owner"])
def test_resume_refuses_pickles_others_could_have_written(tmp_path, capsys, how):
    # Rule (OpenSSH StrictModes): before --resume unpickles tuner.pkl and the searcher state,
    # the study folder and every pickle must be the user's and writable by nobody else; else
    # one line naming the file and the override, and the crafted pickle never runs.
    results = tmp_path / "results"
    study = _fake_study(results, "t", finished=False)
    exp = study / "ray" / "search"
    exp.mkdir(parents=True)
    marker = tmp_path / "pwned"
    (exp / "tuner.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    for p in (study, study / "ray", exp):
        p.chmod(0o755)
    (exp / "tuner.pkl").chmod(0o644)
    if how == "group_writable_pickle":
        (exp / "tuner.pkl").chmod(0o664)
    elif how == "other_writable_folder":
        study.chmod(0o757)
    else:
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(exp / "tuner.pkl", 12345, 12345)
    refused(capsys, [*smoke(), "--resume"], results, "--trust-study-files", "unpickles")
    assert not marker.exists()


# ================================================================ class 7: a dead address


@pytest.fixture
def silent_port():
    """A TCP port where something accepts connections but never answers (not a Ray head)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    "where,fragment",
    [("nothing", "nothing accepts connections"), ("silent", "does not answer like a Ray head")],
)
def test_search_address_that_is_no_ray_head_fails_fast_with_one_line(tmp_path, silent_port, where, fragment):
    # Rule: --address where nothing listens, or where something that is not a Ray head
    # listens, is one line and exit 2 within a bounded time (a 5-s probe), not a hang; no
    # study folder is left.
    results = tmp_path / "results"
    address = "127.0.0.1:1" if where == "nothing" else f"127.0.0.1:{silent_port}"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.search",
            "--space",
            str(SMOKE),
            "--smoke",
            "--name",
            "ad",
            "--results-dir",
            str(results),
            "--address",
            address,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "RAY_ADDRESS": ""},
        check=False,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and address in lines[0] and fragment in lines[0], proc.stderr
    assert not (results / "ad").exists()
    print(f"refused after {time.monotonic() - started:.1f} s")


def test_resume_of_a_moved_study_with_trials_not_yet_started_is_one_line(tmp_path, capsys):
    # Rule: a study moved since its experiment started resumes only when all its trials exist
    # (Ray would give trials created after the resume the old storage path); otherwise one
    # line naming the old place. (A moved study whose trials all exist resumes: test_faults.)
    results = tmp_path / "results"
    study = _fake_study(results, "t", finished=False)
    state = json.loads((study / "study_state.json").read_text())
    state["experiments"][0]["folder"] = str(tmp_path / "old" / "t")
    (study / "study_state.json").write_text(json.dumps(state))
    exp = study / "ray" / "search"
    (exp / "trial_a").mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"harmless": 1}))
    refused(capsys, [*smoke(), "--resume"], results, "moved from", "3 of 4 trials")
