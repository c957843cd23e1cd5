"""Trials across GPUs, proven without one: Ray's logical GPUs on a CPU-only machine.

Ray accepts `num_gpus` for a local instance whether or not a GPU exists, and gives a trial that
asks for one a GPU id (`CUDA_VISIBLE_DEVICES`), while this machine's torch sees no CUDA: exactly
a misconfigured GPU node. Each search runs as the command a user types, in its own process:
one with its own Ray (`python -m tuner.search --num-cpus 2 --num-gpus 1 ...`), the others joined
with `--address` to the session's shared test Ray, which has 2 CPUs and 1 logical GPU too
(starting a Ray costs seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.test_faults import search_cmd
from tuner.core.config import ConfigError
from tuner.core.train import resolve_device
from tuner.results import read_logs

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
FIX = "install a CUDA build of torch on this node, or set resources.gpu: 0"

SPACE = {
    "data": {"preset": "two-modes", "n_series": 4, "length": 300, "window": 16, "seed": 0},
    "model": {"dense_units": 8, "lstm_units": 8},
    "train": {"max_epochs": 2},
    "space": {"train.lr": {"loguniform": [1.0e-3, 1.0e-1]}},
    "search": {
        "algorithm": "optuna",
        "sampler": "random",
        "metric": "train_loss",
        "mode": "min",
        "num_samples": 4,
        "scheduler": {"type": "fifo"},
        "max_concurrent": 4,
        "time_budget_s": 120,
        "seed": 0,
        "checkpoint_every": 2,
        "max_failures": 0,
    },
}


def search(
    tmp_path: Path,
    name: str,
    resources: dict,
    train: dict | None = None,
    num_samples: int = 4,
    address: str | None = None,
) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m tuner.search` on a 2-CPU, 1-logical-GPU Ray: its own local one, or the one at
    `address`; (process, study folder)."""
    doc = {"name": name, **SPACE, "resources": resources}
    doc["train"] = {**SPACE["train"], **(train or {})}
    doc["search"] = {**SPACE["search"], "num_samples": num_samples}
    space = tmp_path / f"{name}.yaml"
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    results = tmp_path / "results"
    ray_flags = ["--address", address] if address else ["--num-cpus", "2", "--num-gpus", "1"]
    proc = subprocess.run(
        search_cmd(space, results, *ray_flags),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc, results / name


# ---------------------------------------------------------------- no Ray


@NO_CUDA
def test_resolve_device_given_gpu_without_cuda_fails():
    # Rule: a run given a GPU, on a torch without CUDA, never trains on the CPU by default:
    # it fails with one line saying what is wrong and both ways out.
    with pytest.raises(ConfigError) as err:
        resolve_device(None, gpu=True)
    message = str(err.value)
    assert message.startswith("given GPU ") and "\n" not in message
    assert "but torch.cuda.is_available() is False: " + FIX in message


@NO_CUDA
def test_resolve_device_auto_falls_back_with_a_warning():
    # Rule: `train.device: auto` is the opt-in fallback: the CPU, and a warning that says so.
    with pytest.warns(RuntimeWarning, match="training on the CPU"):
        assert resolve_device("auto", gpu=True).type == "cpu"


@NO_CUDA
def test_resolve_device_values():
    # Rule: without a GPU reserved the default and `auto` train on the CPU silently, `cpu` is
    # the CPU even with a GPU, and `cuda` without CUDA is bad input (not a CPU run).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device(None, gpu=False).type == "cpu"
        assert resolve_device("auto", gpu=False).type == "cpu"
        assert resolve_device(None).type == "cpu"
        assert resolve_device("cpu", gpu=True).type == "cpu"
    with pytest.raises(ConfigError, match="train.device: got 'cuda'"):
        resolve_device("cuda")


def test_num_gpus_refused_with_address(tmp_path):
    # Rule: --num-gpus sizes a local Ray only; with --address the cluster says what it has:
    # one line, exit 2, before Ray is contacted.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.search",
            "--space",
            str(ROOT / "search_spaces/smoke.yaml"),
            "--results-dir",
            str(tmp_path / "results"),
            "--address",
            "127.0.0.1:1",
            "--num-gpus",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--num-gpus" in lines[0] and "--address" in lines[0]
    assert not (tmp_path / "results" / "smoke").exists()


@pytest.mark.process
@NO_CUDA
def test_bench_gpu_without_cuda_says_so():
    # Rule: the GPU benchmark runs everywhere: without CUDA, one line and exit 0.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(out) == 1 and "CUDA" in out[0], out


# ---------------------------------------------------------------- logical GPUs


@NO_CUDA
@pytest.mark.ray
def test_gpu_fractions_run_four_trials_at_once(tmp_path, ray_session):
    # Rule: `resources: {cpu: 0.5, gpu: 0.25}` on 2 CPUs and 1 GPU runs four trials at once
    # (their running intervals share a moment); with `train.device: auto` they fall back to the
    # CPU with a warning, and trials.csv says where each ran.
    # The four trial processes start one after the other (each imports torch): measured, the
    # last began 0.7-1.1 s after the first, and each ran 2-3 s of 10 epochs (most of it
    # preparing its data and its first epoch).
    proc, study = search(
        tmp_path,
        "fractions",
        {"cpu": 0.5, "gpu": 0.25},
        {"device": "auto", "max_epochs": 10},
        address=ray_session.get_runtime_context().gcs_address,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_csv(study / "trials.csv", keep_default_na=False)
    assert list(trials["status"]) == ["completed"] * 4
    assert set(trials["device"]) == {"cpu"}
    assert all(trials["node"].astype(str).str.len() > 0)
    assert "training on the CPU (train.device: auto)" in proc.stdout + proc.stderr

    # A trial ran (its trainable was executing) from its last result's `wall_time` minus Tune's
    # `time_total_s` (counted from the trainable's start, data preparation included) to that
    # `wall_time`: both floats, so no whole-second slack is needed.
    spans = []
    for log in read_logs(study):
        last = log.results[-1]
        spans.append((last["wall_time"] - last["time_total_s"], last["wall_time"]))
    assert len(spans) == 4
    latest_start = max(start for start, _ in spans)
    earliest_end = min(end for _, end in spans)
    assert latest_start < earliest_end, spans


@pytest.mark.ray
def test_gpu_request_larger_than_the_cluster_refused(tmp_path, ray_session):
    # Rule: `resources: {gpu: 2}` on a 1-GPU cluster would wait forever: refused before the
    # search starts with what the cluster has (exit 2, one line, no study folder).
    address = ray_session.get_runtime_context().gcs_address
    proc, study = search(tmp_path, "too-many", {"cpu": 1, "gpu": 2}, address=address)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: resources:"), proc.stderr
    assert "2 GPU" in lines[0] and "1 GPU" in lines[0], lines[0]
    assert not study.exists()


@NO_CUDA
@pytest.mark.ray
def test_gpu_trial_without_cuda_fails_with_one_line(tmp_path):
    # Rule: with the default `train.device`, a trial given a GPU on a node whose torch has no
    # CUDA fails (never a silent CPU run), and trials.csv's `error` column says why and what to do.
    proc, study = search(tmp_path, "no-cuda", {"cpu": 1, "gpu": 0.5}, num_samples=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_csv(study / "trials.csv", keep_default_na=False)
    assert list(trials["status"]) == ["error"]
    error = trials["error"].iloc[0]
    assert "given GPU 0" in error and "torch.cuda.is_available() is False: " + FIX in error
    assert trials["epochs"].iloc[0] == 0
