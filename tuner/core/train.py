"""Stateful truncated-BPTT training of the Q-value LSTM: the loop every trial runs.

How series sit in a batch and chunks follow each other in time (N = 4 chunks):

    series 0  | chunk 0 | chunk 1 | chunk 2 | chunk 3 |
    series 1  | chunk 0 | chunk 1 | chunk 2 | chunk 3 |   one optimizer step per chunk column,
    ...       |    ->   state   ->   state  ->  state  |   state carried across, graph cut at |
    series S  | chunk 0 | chunk 1 | chunk 2 | chunk 3 |

Every row is a whole series; an epoch walks the columns in order, so the LSTM reads each series
from start to end exactly once, and the state is reset at the start of the next epoch. Shorter
series are padded at the end and their padded steps are masked out of the loss.

`fit` never imports Ray: the search wraps it through the `on_epoch` callback.

Just over 500 lines on purpose: the loop, its state and checkpoint (what resume needs) and the
end-of-epoch evaluation are one mechanism, each a short function; apart they would pass the
training state through three modules.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from tuner.core.atomic import atomic_write
from tuner.core.clipping import EpochClipStats, make_clipper
from tuner.core.config import Config, ConfigError, TrainConfig
from tuner.core.data import Prepared, SeriesSet, prepare
from tuner.core import metrics
from tuner.core.metrics import EPOCH_COLUMNS  # also re-exported: the record's columns
from tuner.core.model import QNet, State, detach_state
from tuner.core.schedule import ChunkSchedule

CHECKPOINT_FORMAT = 2
"""2: records use the train_loss_running/train_loss/val_loss names and the best model rides along."""
EVAL_CHUNK_STEPS = 4096
"""Evaluation needs no gradient, so it runs in long chunks whatever N is (bounds memory only)."""


def set_seed(seed: int) -> None:
    """The one place that seeds torch (weights, noise layers, series order)."""
    torch.manual_seed(seed)


def resolve_device(name: str | None, gpu: bool | None = None) -> torch.device:
    """The torch device for `train.device` (see `TrainConfig.device`).

    `gpu`: whether the scheduler gave this run a GPU (None: no scheduler, a single run). A run
    given a GPU never falls back to the CPU unless asked to (`auto`), and then says so: a GPU
    node whose torch has no CUDA would otherwise burn its reservation at CPU speed, unnoticed."""
    cuda = torch.cuda.is_available()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name is None and gpu):
        if not cuda and gpu:
            raise ConfigError(
                f"given GPU {_visible_gpus()} but torch.cuda.is_available() is "
                "False: install a CUDA build of torch on this node, or set "
                "resources.gpu: 0"
            )
        if not cuda:
            raise ConfigError(
                "train.device: got 'cuda' but torch.cuda.is_available() is False; "
                "allowed: auto, cpu (or install a CUDA build of torch)"
            )
        return torch.device("cuda")
    if gpu is False:  # null or auto without a GPU reserved: stay off GPUs others reserved
        return torch.device("cpu")
    if gpu and not cuda:
        warnings.warn(
            f"given GPU {_visible_gpus()} but torch.cuda.is_available() is False: "
            "training on the CPU (train.device: auto)",
            RuntimeWarning,
            stacklevel=2,
        )
    return torch.device("cuda" if cuda else "cpu")


def _visible_gpus() -> str:
    """The GPU ids a scheduler exposed to this process, and torch's build: '0 (torch 2.1+cpu)'."""
    return f"{os.environ.get('CUDA_VISIBLE_DEVICES') or '?'} (torch {torch.__version__})"


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.optimizer` with its own knobs from the config."""
    eps = {} if cfg.eps is None else {"eps": cfg.eps}
    wd = cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=wd,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, weight_decay=wd, **eps
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, **eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, **eps)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=wd, **eps)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=cfg.rho, weight_decay=wd, **eps)
    raise ConfigError(f"train.optimizer: got {cfg.optimizer!r}")  # pragma: no cover


def chunk_bounds(steps: int, n: int) -> list[tuple[int, int]]:
    """Cut `steps` into `n` consecutive chunks whose sizes differ by at most one; no step lost."""
    n = min(n, steps)
    edges = [round(i * steps / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    config: Config
    model: QNet
    optimizer: torch.optim.Optimizer
    schedule: ChunkSchedule
    clipper: Any
    epoch: int = 0
    timesteps: int = 0
    updates: int = 0
    train_time_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)
    best_value: float = math.inf
    """The lowest selection loss so far (`val_loss` with a hold-out, else `train_loss`)."""
    best_epoch: int = 0
    """The epoch that reached `best_value` (0: none yet)."""
    best_model: dict[str, torch.Tensor] | None = None
    """A copy of the model's weights at `best_epoch`."""
    bad_epochs: int = 0
    """Epochs in a row without improving `best_value` by more than early_stopping.min_delta."""
    early_stopped: bool = False
    """The run ended by early stopping (its weights were restored to `best_model`)."""

    def track_best(self, value: float) -> None:
        """Count an epoch's selection loss: a new best copies the weights, else one more bad epoch."""
        min_delta = self.config.train.early_stopping.min_delta
        if math.isfinite(value) and value < self.best_value - min_delta:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def state_dict(self) -> dict[str, Any]:
        """A named checkpoint dict of tensors and plain values (loadable with weights_only=True)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "clipper": self.clipper.state_dict(),
            "epoch": self.epoch,
            "timesteps": self.timesteps,
            "updates": self.updates,
            "train_time_s": self.train_time_s,
            "records": [dict(r) for r in self.records],
            "best": {
                "value": self.best_value,
                "epoch": self.best_epoch,
                "model": self.best_model,
                "bad_epochs": self.bad_epochs,
            },
            "early_stopped": self.early_stopped,
            "rng": rng,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from `state_dict()`; the current config's lr wins (PBT mutates it on exploit)."""
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT} "
                "(written by an older version; start the run again)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.train.lr
        self.schedule.load_state_dict(ckpt["schedule"])
        self.clipper.load_state_dict(ckpt["clipper"])
        self.epoch = int(ckpt["epoch"])
        self.timesteps = int(ckpt["timesteps"])
        self.updates = int(ckpt["updates"])
        self.train_time_s = float(ckpt["train_time_s"])
        self.records = [dict(r) for r in ckpt["records"]]
        best = ckpt["best"]
        self.best_value, self.best_epoch = float(best["value"]), int(best["epoch"])
        self.bad_epochs = int(best["bad_epochs"])
        self.best_model = best["model"]
        self.early_stopped = bool(ckpt["early_stopped"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


@dataclass
class Result:
    """What a run ends with; divergence is a status, never an exception."""

    status: str
    """completed | diverged | early_stopped (held-out loss stalled for early_stopping.patience
    epochs; best weights restored) | stopped (the callback asked to stop)."""
    records: list[dict[str, Any]]
    diverged_epoch: int | None
    state: TrainingState

    @property
    def best_train_loss(self) -> float:
        """The lowest end-of-epoch training loss (eval mode); +inf for a diverged run (the rule
        of `tuner.core.metrics`)."""
        return metrics.best_loss([r["train_loss"] for r in self.records])

    @property
    def final_train_loss(self) -> float:
        return metrics.final_loss([r["train_loss"] for r in self.records])

    @property
    def best_val_loss(self) -> float:
        """The best epoch's held-out loss (NaN without a hold-out or before a finite one)."""
        value = self.records[-1]["best_val_loss"] if self.records else math.nan
        return value if math.isfinite(value) else math.nan

    @property
    def best_epoch(self) -> int:
        """The epoch of the best model (lowest val_loss, else lowest train_loss); 0 if none."""
        return self.state.best_epoch


EpochCallback = Callable[[dict[str, Any], TrainingState], Any]
"""Called after every epoch with its record and the full state; a truthy return stops the run."""


def save_checkpoint(state: TrainingState, path: str | Path) -> None:
    """Write the state to `path` atomically (temporary file, then rename)."""
    atomic_write(path, lambda fh: torch.save(state.state_dict(), fh))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects (weights_only=True)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_best_model(state: TrainingState, path: str | Path) -> None:
    """Write the best epoch's weights with the config that made them, atomically.

    Load with ``QNet(window, n_actions, cfg.model).load_state_dict(torch.load(path,
    weights_only=True)["model"])``; `epoch`/`value` say which epoch and selection loss."""
    if state.best_model is None:
        raise ValueError("no best model yet: no epoch ended with a finite loss")
    best = {
        "format": CHECKPOINT_FORMAT,
        "config": state.config.to_dict(),
        "model": state.best_model,
        "epoch": state.best_epoch,
        "value": state.best_value,
    }
    atomic_write(path, lambda fh: torch.save(best, fh))


def new_state(config: Config, n_inputs: int, n_actions: int, device: torch.device) -> TrainingState:
    """A freshly initialised model, optimizer, schedule and clipper (seeded by train.seed)."""
    set_seed(config.train.seed)
    model = QNet(n_inputs, n_actions, config.model).to(device)
    optimizer = build_optimizer(list(model.parameters()), config.train)
    return TrainingState(
        config, model, optimizer, ChunkSchedule(config.train.schedule), make_clipper(config.train.clip)
    )


def _series_groups(n_series: int, batch: int | None, seed: int, epoch: int) -> list[torch.Tensor] | None:
    """Row groups of one epoch (a seeded shuffle, so a resumed run sees the same order); None = all."""
    if batch is None or batch >= n_series:
        return None
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_series, generator=gen)
    return list(order.split(batch))


def _masked_sq_error(q: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    err = (q - y).square()
    if mask is not None:
        err = err * mask.unsqueeze(-1)
    return err.sum()


def train_epoch(state: TrainingState, data: SeriesSet) -> dict[str, Any]:
    """One pass over every series at the schedule's current N; returns the partial record.

    `train_loss_running` is the squared error summed over every real step of the epoch (as the
    optimizer met them) divided by their number. A non-finite loss or gradient norm stops the
    epoch before the optimizer applies it, and `train_loss_running` is +inf."""
    model, opt, clipper = state.model, state.optimizer, state.clipper
    model.train()
    n = state.schedule.chunks
    params = [p for p in model.parameters() if p.requires_grad]
    groups = _series_groups(
        data.mask.shape[0], state.config.train.batch_series, state.config.train.seed, state.epoch
    )
    parts = [data] if groups is None else [data.select(rows) for rows in groups]
    stats = EpochClipStats()
    n_actions = data.targets.shape[-1]
    sq_sum = torch.zeros((), device=data.targets.device)
    real_steps = 0
    diverged = False
    start = time.perf_counter()
    for part in parts:
        padded = not bool(part.mask.all())
        hidden: State | None = None
        for a, b in chunk_bounds(part.steps, n):
            mask = part.mask[:, a:b] if padded else None
            count = int(mask.sum()) if padded else part.mask.shape[0] * (b - a)
            if count == 0:
                continue
            q, hidden = model(part.inputs(a, b), hidden)
            err = _masked_sq_error(q, part.targets[:, a:b], mask)
            opt.zero_grad(set_to_none=True)
            (err / (count * n_actions)).backward()
            stat = clipper.clip(params)
            stats.add(stat)
            if not math.isfinite(stat.pre_norm):
                diverged = True
                break
            opt.step()
            hidden = detach_state(hidden)
            sq_sum += err.detach()
            real_steps += count
            state.updates += 1
        if diverged:
            break
    elapsed = time.perf_counter() - start
    loss = float(sq_sum) / max(real_steps * n_actions, 1)
    if diverged or not math.isfinite(loss):
        loss = math.inf
    state.timesteps += real_steps
    state.train_time_s += elapsed
    return {
        "train_loss_running": loss,
        "chunks": n,
        "stage": state.schedule.stage,
        **stats.summary(),
        "epoch_time_s": elapsed,
        "steps_per_s": real_steps / elapsed if elapsed > 0 else 0.0,
    }


@torch.no_grad()
def _eval_pass(model: QNet, data: SeriesSet, prefix: SeriesSet | None = None) -> tuple[float, float]:
    """(MSE over `data`'s mask, MSE over `prefix`'s mask) from a reset state, noise off.

    `prefix` (or None) holds the first rows of `data` cut to its own steps, with the same inputs
    there: a tail hold-out's training rows. One forward pass then scores both sets, since the
    state warmed over a validation row's training part is the training row's own pass."""
    was_training = model.training
    model.eval()
    hidden: State | None = None
    sq = torch.zeros((), device=data.targets.device)
    sq_prefix = torch.zeros((), device=data.targets.device)
    for a, b in chunk_bounds(data.steps, max(1, math.ceil(data.steps / EVAL_CHUNK_STEPS))):
        q, hidden = model(data.inputs(a, b), hidden)
        sq += _masked_sq_error(q, data.targets[:, a:b], data.mask[:, a:b])
        if prefix is not None and a < prefix.steps:
            c, rows = min(b, prefix.steps), prefix.n_series
            sq_prefix += _masked_sq_error(q[:rows, : c - a], prefix.targets[:, a:c], prefix.mask[:, a:c])
    model.train(was_training)

    def mean(total: torch.Tensor, s: SeriesSet | None) -> float:
        count = 0 if s is None else int(s.mask.sum()) * s.targets.shape[-1]
        return float(total) / count if count else math.nan

    return mean(sq, data), mean(sq_prefix, prefix)


def evaluate(model: QNet, data: SeriesSet) -> float:
    """MSE over the masked-in steps of `data`, from a reset state, noise off.

    For a tail hold-out the mask is off over the training part, which still runs first to warm
    the state, so validation never inherits the training loop's state."""
    return _eval_pass(model, data)[0]


def evaluate_split(model: QNet, data: Prepared) -> tuple[float, float]:
    """(train_loss, val_loss) of the model as it stands: eval mode, state from zero.

    With a tail hold-out both come from one pass over the validation rows (see `_eval_pass`);
    `val_loss` is NaN without a hold-out."""
    if data.val is None:
        return evaluate(model, data.train), math.nan
    if data.val_covers_train:
        val_loss, train_loss = _eval_pass(model, data.val, data.train)
        return train_loss, val_loss
    return evaluate(model, data.train), evaluate(model, data.val)


def fit(
    config: Config,
    on_epoch: EpochCallback | None = None,
    checkpoint: dict[str, Any] | None = None,
    data: Prepared | None = None,
) -> Result:
    """Train `config` to `train.max_epochs` (or divergence, or a stop from `on_epoch`).

    `checkpoint` (a `TrainingState.state_dict()`) resumes exactly where it was saved; `data`
    reuses already prepared series (the search prepares them once per trial process)."""
    tc = config.train
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    data = data if data is not None else prepare(config.data, device=device)
    state = new_state(config, data.train.inputs(0, 1).shape[-1], data.n_actions, device)
    if checkpoint is not None:
        state.load_state_dict(checkpoint)

    # Adaptive optimizers drive some statistics into subnormal floats, which the CPU handles up
    # to 4x slower; flush them to zero while training, and leave the process as it was after.
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(state, data, on_epoch)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _finish_record(state: TrainingState, data: Prepared, partial: dict[str, Any]) -> dict[str, Any]:
    """An epoch's full record: `train_epoch`'s part, the eval-mode losses, the best model so far.

    Also steps the chunk schedule (on the running loss, as the article's Keras callback saw it)
    and the best-model tracker (on val_loss, else train_loss). An epoch diverged when its
    running loss or its end-of-epoch train_loss is not finite; its train_loss and val_loss are
    then +inf (val_loss NaN without a hold-out) and an epoch whose running loss blew up is not
    evaluated."""
    start = time.perf_counter()
    held_out = data.val is not None
    diverged = not math.isfinite(partial["train_loss_running"])
    tc = state.config.train
    due = not state.records or state.epoch % tc.eval_every == 0 or state.epoch >= tc.max_epochs
    if diverged:
        train_loss, val_loss = math.inf, math.inf if held_out else math.nan
    elif due:
        train_loss, val_loss = evaluate_split(state.model, data)
    else:  # train.eval_every: the last evaluated losses stand until the next evaluation
        last = state.records[-1]
        train_loss, val_loss = last["train_loss"], last["val_loss"]
    if not math.isfinite(train_loss):
        # The epoch's updates left weights whose outputs overflow: the run diverged at this
        # epoch, although the running loss (measured before those updates) may be finite.
        train_loss, val_loss = math.inf, math.inf if held_out else math.nan
    else:
        if due:
            state.track_best(val_loss if held_out else train_loss)
        state.schedule.step(partial["train_loss_running"])
    record = {
        "epoch": state.epoch,
        **partial,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "best_val_loss": state.best_value if held_out else math.nan,
        "best_epoch": state.best_epoch,
        "eval_time_s": time.perf_counter() - start if due else 0.0,
        "lr": state.optimizer.param_groups[0]["lr"],
        "timesteps": state.timesteps,
        "updates": state.updates,
        "train_time_s": state.train_time_s,
        "wall_time": time.time(),
    }
    return {k: record[k] for k in EPOCH_COLUMNS}


def _train(state: TrainingState, data: Prepared, on_epoch: EpochCallback | None) -> Result:
    """The epoch loop of `fit`, from wherever `state` stands."""
    tc = state.config.train
    patience = tc.early_stopping.patience
    status, diverged_epoch = "completed", None
    while state.epoch < tc.max_epochs and not state.early_stopped:
        partial = train_epoch(state, data.train)
        state.epoch += 1
        record = _finish_record(state, data, partial)
        state.records.append(record)
        if not math.isfinite(record["train_loss"]):
            status, diverged_epoch = "diverged", state.epoch
        elif patience is not None and state.bad_epochs >= patience and state.best_model is not None:
            # Restored before the callback runs, so its last checkpoint holds the best weights.
            state.model.load_state_dict(state.best_model)
            state.early_stopped = True
        stop = on_epoch(record, state) if on_epoch is not None else False
        if status == "diverged" or state.early_stopped:
            break
        if stop:
            status = "stopped"
            break
    if state.early_stopped:  # also when resumed from an early-stopped run's last checkpoint
        status = "early_stopped"
    return Result(status, state.records, diverged_epoch, state)
