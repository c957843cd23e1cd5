"""The Ray Tune trainable: one trial = `tuner.train.fit` + `tune.report` per epoch + checkpoints.

The training core knows nothing of Ray; this module adapts it. Each epoch is reported with all
per-epoch metrics (train_loss_running, train_loss, val_loss, best_val_loss, best_epoch, ...)
plus the running `objective` the search minimises. A checkpoint goes with the
report every `checkpoint_every` epochs and at the end, and a restarted trial (after a failure, a
driver restore or a PBT exploit) continues from `tune.get_checkpoint()` exactly where it was.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.util import get_node_ip_address

from tuner.core.config import Config, DataConfig
from tuner.core.data import Prepared, prepare
from tuner.objectives import running_objective
from tuner.space import SpaceFile, resolve
from tuner.core.train import TrainingState, fit, load_checkpoint, resolve_device, save_checkpoint

CHECKPOINT_FILE = "state.pt"


@functools.lru_cache(maxsize=2)
def _prepared(data: DataConfig, device: str) -> Prepared:
    """Series are generated (or read) once per trial process and reused by later trials there."""
    return prepare(data, device=device)


def _placed(config: Config) -> tuple[Config, dict[str, str]]:
    """Threads = this trial's CPU share; the device from `train.device` and whether Ray gave the
    trial a GPU (`resolve_device`: no silent CPU fallback). Also where it runs: {node, device}."""
    resources = tune.get_context().get_trial_resources().required_resources
    threads = max(1, int(resources.get("CPU", 1)))
    device = resolve_device(config.train.device, gpu=resources.get("GPU", 0) > 0)
    train = dataclasses.replace(config.train, threads=threads, device=device.type)
    label = "cpu"
    if device.type == "cuda":
        index = torch.cuda.current_device()
        label = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    where = {"node": get_node_ip_address(), "device": label}
    return dataclasses.replace(config, train=train), where


def _restore() -> dict[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / CHECKPOINT_FILE)


def run_trial(params: dict[str, Any], spec: SpaceFile) -> None:
    """Tune function trainable; `spec` comes through `tune.with_parameters`."""
    for name in ("ray.train", "ray.tune"):  # one line per checkpoint drowns the trial table
        logging.getLogger(name).setLevel(logging.WARNING)
    config, used = resolve(spec, params)
    config, where = _placed(config)
    search = spec.search
    data = _prepared(config.data, config.train.device)
    max_epochs = config.train.max_epochs

    reported = []

    def on_epoch(record: dict[str, Any], state: TrainingState) -> None:
        diverged = not math.isfinite(record["train_loss"])
        finished = diverged or state.early_stopped or state.epoch >= max_epochs
        # NaN (no hold-out) is left out: Tune's searchers and schedulers choke on it.
        metrics = {k: v for k, v in record.items() if not (isinstance(v, float) and math.isnan(v))}
        metrics.update(
            objective=running_objective(search.metric, state.records, search.target_loss, search.target_unit),
            diverged=diverged,
            finished=finished,
            early_stopped=state.early_stopped,
            max_epochs=max_epochs,
            target_std=data.target_std,
            seed=config.train.seed,
            params=used,
        )
        metrics.update(where)
        reported.append(record["epoch"])
        if finished or state.epoch % search.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(state, os.path.join(folder, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)

    result = fit(config, on_epoch, checkpoint=_restore(), data=data)
    if not reported and result.records:
        # Restored at its end (a PBT exploit of a finished donor): say where it stands.
        on_epoch(result.records[-1], result.state)
