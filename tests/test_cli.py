"""The console entry point and the key listing (tuner.cli, tuner.keys)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tuner import keys
from tuner.core import config as config_mod


def test_keys_lists_every_config_key_with_default_and_doc():
    # Rule: the listing is generated from the dataclasses: every key the loader accepts appears,
    # with the default the loader uses and a non-empty doc line.
    listed = {key: (default, doc) for key, _, default, doc in keys.config_keys()}
    assert set(listed) == set(config_mod.leaf_keys())
    defaults = config_mod.load(None, [])
    for key, (default, doc) in listed.items():
        section, *rest = key.split(".")
        value = getattr(defaults, section)
        for part in rest:
            value = getattr(value, part)
        assert value == default, key
        assert doc, f"{key} has no doc line"


def test_keys_cli_filters_by_prefix_and_refuses_an_unknown_one(capsys):
    # Rule: a prefix narrows the listing; a prefix that matches nothing is one line, exit 2.
    assert keys.main(["train.clip"]) == 0
    out = capsys.readouterr().out
    assert "train.clip.mode" in out and "data.window" not in out
    assert keys.main(["nosuch"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_console_script_dispatches_and_refuses_unknown_commands():
    # Rule: `lstm-tuner CMD` runs `python -m tuner.CMD`; an unknown command is one line, exit 2.
    exe = shutil.which("lstm-tuner")
    cmd = [exe] if exe else [sys.executable, "-m", "tuner.cli"]
    ok = subprocess.run(cmd + ["keys", "model.lstm_units"], capture_output=True, text=True)
    assert ok.returncode == 0 and "model.lstm_units = 64" in ok.stdout
    bad = subprocess.run(cmd + ["serch"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "search" in bad.stderr


@pytest.mark.process
@pytest.mark.parametrize("command", ["search", "train", "report", "keys"])
def test_every_command_help_shows_examples(command):
    # Rule: --help of every command shows at least two examples.
    out = subprocess.run([sys.executable, "-m", f"tuner.{command}", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "example" in out.stdout.lower() and out.stdout.lower().count("tuner") >= 2


@pytest.mark.process
def test_train_smoke_test_alias_runs_the_tiny_config(tmp_path):
    # Rule: `--smoke-test` (Ray's examples' spelling) is `--smoke`: tiny data, 3 epochs.
    out = subprocess.run(
        [sys.executable, "-m", "tuner.train", "--smoke-test", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "epochs.csv").read_text().strip().splitlines()) == 1 + 3
