"""Shared fixtures: tiny configs, so the core suite runs in seconds on 2 CPUs."""

from __future__ import annotations

import pytest

from tuner.core import config as config_mod


def tiny(**overrides) -> config_mod.Config:
    """A small, fast run; `overrides` are dotted keys, e.g. tiny(**{"train.lr": 0.1})."""
    base = [
        "data.n_series=3",
        "data.length=120",
        "data.window=8",
        "data.noise_std=0.0",
        "model.dense_units=8",
        "model.lstm_units=8",
        "model.noise_std=0.0",
        "train.max_epochs=3",
        "train.threads=1",
    ]
    extra = [f"{k}={v}" for k, v in overrides.items()]
    return config_mod.load(None, base + extra)


@pytest.fixture
def tiny_config():
    return tiny


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance shared by every in-process search test (starting one costs
    seconds); `tuner.search.main` reuses an initialised Ray instead of starting its own, and
    subprocess searches join it with `--address`. One logical GPU, for the GPU-scheduling tests
    (a trial that asks for no GPU gets none, so the others do not notice it)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _starts_ray(item: pytest.Item) -> bool:
    return item.get_closest_marker("ray") is not None or "ray_session" in getattr(item, "fixturenames", ())


def _schedule_rank(item: pytest.Item) -> int:
    """0: runs searches (tens of seconds), 1: starts a Python process (seconds), 2: the rest."""
    if _starts_ray(item):
        return 0
    return 1 if item.get_closest_marker("process") is not None else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest tests first (a stable sort: files keep their order otherwise): searches, then
    tests that start a process, then the many short ones. Under pytest-xdist the long tests
    then start early and the short ones fill both workers at the end, instead of one worker
    running a long test alone at the end (measured: 8 s of one idle core)."""
    items.sort(key=_schedule_rank)
