"""The stateful chunked training loop: faithful, resumable, and divergence-safe."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from tests.conftest import tiny
from tuner.core.data import prepare
from tuner.core.model import QNet
from tuner.core.train import EPOCH_COLUMNS, chunk_bounds, evaluate, fit, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("steps,n", [(100, 1), (100, 3), (101, 7), (5, 5), (10, 100)])
def test_chunk_bounds_cover_every_step_once(steps, n):
    # Rule: chunks are consecutive, non-empty, and lose no step when N does not divide the length.
    bounds = chunk_bounds(steps, n)
    assert bounds[0][0] == 0 and bounds[-1][1] == steps
    assert all(a < b for a, b in bounds)
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_train_same_seed_same_losses():
    # Rule: on CPU the same seed and config give the same losses, run after run.
    cfg = tiny(**{"train.optimizer": "adam", "model.noise_std": 0.1})
    a = [r["train_loss_running"] for r in fit(cfg).records]
    b = [r["train_loss_running"] for r in fit(cfg).records]
    assert a == b
    c = [r["train_loss_running"] for r in fit(tiny(**{"train.optimizer": "adam", "train.seed": 1})).records]
    assert a != c


def test_train_loss_falls_with_adam():
    # Rule: on a small problem Adam lowers the epoch loss.
    cfg = tiny(
        **{
            "train.optimizer": "adam",
            "train.lr": 0.01,
            "train.max_epochs": 15,
            "train.schedule.chunks": "[4]",
        }
    )
    losses = [r["train_loss_running"] for r in fit(cfg).records]
    assert losses[-1] < 0.8 * losses[0]


def test_train_huge_lr_sgd_diverges_without_exception():
    # Rule: a non-finite loss (running, or the end-of-epoch train_loss) ends the run with status
    # diverged and its epoch, never an exception.
    cfg = tiny(
        **{
            "train.optimizer": "sgd",
            "train.lr": 1e12,
            "train.max_epochs": 20,
            "train.schedule.chunks": "[10]",
        }
    )
    result = fit(cfg)
    assert result.status == "diverged"
    assert result.diverged_epoch == len(result.records)
    assert result.records[-1]["train_loss"] == math.inf
    assert result.diverged_epoch < 20


def test_train_epoch_loss_comparable_across_chunk_counts():
    # Rule: the epoch loss is the MSE over every real step, so with (almost) frozen weights it is
    # the same whatever N is.
    losses = {}
    for n in (1, 3, 7):
        cfg = tiny(**{"train.lr": 1e-12, "train.max_epochs": 1, "train.schedule.chunks": f"[{n}]"})
        losses[n] = fit(cfg).records[0]["train_loss_running"]
    assert losses[3] == pytest.approx(losses[1], rel=1e-5)
    assert losses[7] == pytest.approx(losses[1], rel=1e-5)


def test_train_records_have_documented_columns_and_counters():
    # Rule: one record per epoch with the documented columns; timesteps and updates accumulate
    # (N updates per epoch at N chunks, every real step counted once).
    cfg = tiny(**{"train.schedule.chunks": "[5]"})
    records = fit(cfg).records
    assert [list(r) for r in records] == [list(EPOCH_COLUMNS)] * 3
    steps = 3 * (120 - 1)
    assert [r["timesteps"] for r in records] == [steps, 2 * steps, 3 * steps]
    assert [r["updates"] for r in records] == [5, 10, 15]
    assert all(r["chunks"] == 5 and r["stage"] == 0 for r in records)


def test_train_state_reset_each_epoch_and_detached_between_chunks(monkeypatch):
    # Rule: the first chunk of every epoch starts from a reset (None) state; every later chunk
    # gets a state carried from the previous chunk but cut from its graph (truncated BPTT).
    seen = []
    original = QNet.forward

    def spy(self, x, state=None):
        if torch.is_grad_enabled():
            seen.append(None if state is None else (state[0].requires_grad, state[0].grad_fn))
        return original(self, x, state)

    monkeypatch.setattr(QNet, "forward", spy)
    fit(tiny(**{"train.schedule.chunks": "[4]", "train.max_epochs": 2}))
    assert len(seen) == 8
    for epoch in range(2):
        chunks = seen[epoch * 4 : (epoch + 1) * 4]
        assert chunks[0] is None
        assert all(s == (False, None) for s in chunks[1:])


def test_train_schedule_moves_to_next_chunk_count():
    # Rule: the schedule's stage and N appear in the records; the first epoch sets the best loss,
    # and each later non-improving epoch (patience 1) moves to the next N, ending on the last.
    cfg = tiny(
        **{
            "train.lr": 1e-12,
            "train.schedule.chunks": "[6, 2, 1]",
            "train.schedule.patience": 1,
            "train.schedule.min_delta": 1.0,
            "train.max_epochs": 5,
        }
    )
    records = fit(cfg).records
    assert [r["chunks"] for r in records] == [6, 6, 2, 1, 1]
    assert [r["stage"] for r in records] == [0, 0, 1, 2, 2]


def test_train_masked_loss_ignores_padding():
    # Rule: padding a short series to the batch length changes nothing: its padded steps are
    # masked out, so the loss equals that of the same data without the extra long series' tail.
    cfg = tiny(**{"train.max_epochs": 2, "train.schedule.chunks": "[3]"})
    data = prepare(cfg.data)
    short = data.train.select(torch.tensor([0, 1, 2]))
    # Zero out everything the mask hides and compare with garbage in the same places.
    t = short.targets.clone()
    garbage = short.targets.clone()
    m = short.mask.clone()
    m[0, 80:] = False
    garbage[0, 80:] = 1e6
    short_a = type(short)(short.diffs, t, m, short.lengths, short.window)
    short_b = type(short)(short.diffs, garbage, m, short.lengths, short.window)
    data_a = type(data)(**{**data.__dict__, "train": short_a})
    data_b = type(data)(**{**data.__dict__, "train": short_b})
    la = [r["train_loss_running"] for r in fit(cfg, data=data_a).records]
    lb = [r["train_loss_running"] for r in fit(cfg, data=data_b).records]
    assert la == lb


def test_train_validation_loss_reported_when_held_out():
    # Rule: with a hold-out each record has a finite val_loss; without one it is NaN.
    with_val = fit(tiny(**{"data.val_fraction": 0.25})).records
    without = fit(tiny()).records
    assert all(math.isfinite(r["val_loss"]) for r in with_val)
    assert all(math.isnan(r["val_loss"]) for r in without)


def test_train_callback_sees_records_and_can_stop():
    # Rule: the callback receives each record and the live state; a truthy return stops the run.
    seen = []

    def on_epoch(record, state):
        seen.append((record["epoch"], state.epoch))
        return record["epoch"] == 2

    result = fit(tiny(**{"train.max_epochs": 5}), on_epoch)
    assert seen == [(1, 1), (2, 2)] and result.status == "stopped"


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    from tests.conftest import tiny
    from tuner.core.train import fit, load_checkpoint
    cfg = tiny(**{"train.optimizer": "adam", "model.noise_std": 0.1, "train.max_epochs": 5,
                  "train.clip.mode": "adaptive", "train.clip.warmup": 2,
                  "train.schedule.chunks": "[6, 3, 1]", "train.schedule.patience": 1})
    result = fit(cfg, checkpoint=load_checkpoint(sys.argv[1]))
    print(json.dumps([r["train_loss_running"] for r in result.records]))
""")


@pytest.mark.process
def test_train_checkpoint_round_trip_in_fresh_process(tmp_path):
    # Rule: 3 epochs, save, restore in a fresh process, 2 more == 5 uninterrupted epochs (CPU).
    cfg = tiny(
        **{
            "train.optimizer": "adam",
            "model.noise_std": 0.1,
            "train.max_epochs": 5,
            "train.clip.mode": "adaptive",
            "train.clip.warmup": 2,
            "train.schedule.chunks": "[6, 3, 1]",
            "train.schedule.patience": 1,
        }
    )
    full = [r["train_loss_running"] for r in fit(cfg).records]
    path = tmp_path / "state.pt"
    fit(cfg, lambda r, s: save_checkpoint(s, path) if s.epoch == 3 else None)
    assert load_checkpoint(path)["epoch"] == 3
    path3 = tmp_path / "at3.pt"
    path.rename(path3)
    out = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(path3)],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(_root()),
    )
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed == full


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


@pytest.mark.process
def test_train_cli_writes_outputs_and_rejects_bad_keys(tmp_path):
    # Rule: the single-run CLI writes epochs.csv with the documented columns and model.pt, and a
    # config error is one line with exit code 2.
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "tuner.train",
        "--epochs",
        "2",
        "--out",
        str(out),
        "data.n_series=2",
        "data.length=60",
        "data.window=4",
        "model.dense_units=4",
        "model.lstm_units=4",
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=str(_root()))
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "epochs.csv")
    assert list(frame.columns) == list(EPOCH_COLUMNS) and len(frame) == 2
    assert load_checkpoint(out / "model.pt")["epoch"] == 2
    bad = subprocess.run(
        args[:-1] + ["train.optimzer=adam"], capture_output=True, text=True, cwd=str(_root())
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "did you mean 'train.optimizer'" in bad.stderr


BLOCK_RAY = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("ray", "optuna", "matplotlib"):
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    import pkgutil, importlib, tuner.core, tuner.train
    for m in pkgutil.iter_modules(tuner.core.__path__):
        importlib.import_module("tuner.core." + m.name)
    from tests.conftest import tiny
    print(tuner.core.train.fit(tiny(**{"train.max_epochs": 1})).status)
""")


@pytest.mark.process
def test_train_core_imports_without_ray():
    # Rule: every module of the training core (and the single-run CLI) imports and runs with
    # Ray, Optuna and matplotlib unavailable.
    out = subprocess.run([sys.executable, "-c", BLOCK_RAY], capture_output=True, text=True, cwd=str(_root()))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "completed"


@pytest.mark.parametrize(
    "split",
    [
        {},
        {"data.val_fraction": 0.25},
        {"data.val_series": 1},
        {"data.val_fraction": 0.25, "data.val_series": 1},
    ],
)
def test_train_eval_losses_equal_separate_evaluate(split):
    # Rule: each record's train_loss is the end-of-epoch model on the training steps in eval mode
    # (noise off, state from zero), i.e. a separate `evaluate` call on data.train, and val_loss is
    # `evaluate` on data.val, whatever the split (the tail hold-out scores both in one pass).
    cfg = tiny(**{"train.optimizer": "adam", "model.noise_std": 0.3, "train.schedule.chunks": "[4]", **split})
    data = prepare(cfg.data)
    seen = []
    fit(
        cfg,
        lambda r, s: seen.append(
            (r, evaluate(s.model, data.train), evaluate(s.model, data.val) if data.val else math.nan)
        ),
        data=data,
    )
    for record, train_loss, val_loss in seen:
        assert record["train_loss"] == pytest.approx(train_loss, rel=1e-6)
        assert record["train_loss"] != record["train_loss_running"]
        if data.val is None:
            assert math.isnan(record["val_loss"]) and math.isnan(val_loss)
        else:
            assert record["val_loss"] == pytest.approx(val_loss, rel=1e-6)


def test_train_eval_every_k_evaluates_first_every_kth_and_last_epoch():
    # Rule: with train.eval_every=3 over 7 epochs, epochs 1, 3, 6 and 7 are evaluated (their
    # losses equal a separate `evaluate`, eval_time_s > 0); the others repeat the last evaluated
    # losses and cost no evaluation; the best model is chosen among evaluated epochs only.
    cfg = tiny(
        **{"train.optimizer": "adam", "train.max_epochs": 7, "train.eval_every": 3, "data.val_fraction": 0.25}
    )
    data = prepare(cfg.data)
    seen = []
    result = fit(cfg, lambda r, s: seen.append((r, evaluate(s.model, data.val))), data=data)
    evaluated = [r["epoch"] for r, _ in seen if r["eval_time_s"] > 0]
    assert evaluated == [1, 3, 6, 7]
    for (record, val_loss), (prev, _) in zip(seen[1:], seen[:-1]):
        if record["epoch"] in evaluated:
            assert record["val_loss"] == pytest.approx(val_loss, rel=1e-6)
        else:
            assert (record["train_loss"], record["val_loss"]) == (prev["train_loss"], prev["val_loss"])
    assert result.best_epoch in evaluated


def test_train_loss_comparable_across_chunk_counts_after_training():
    # Rule: with the same weights the end-of-epoch train_loss does not depend on N (it is the
    # model as it stands, not an average over the epoch's updates), while the running loss does.
    cfg = tiny(**{"train.optimizer": "adam", "train.max_epochs": 4})
    result = fit(cfg)
    data = prepare(cfg.data)
    assert result.records[-1]["train_loss"] == pytest.approx(
        evaluate(result.state.model, data.train), rel=1e-6
    )


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_early_stopping_restores_best_weights_bit_for_bit():
    # Rule: after `patience` epochs without a held-out improvement larger than min_delta, the run
    # ends `early_stopped` with the weights of its best epoch, tensor for tensor identical.
    cfg = tiny(
        **{
            "train.optimizer": "adam",
            "train.max_epochs": 10,
            "data.val_fraction": 0.25,
            "train.early_stopping.patience": 2,
            "train.early_stopping.min_delta": 10.0,
        }
    )
    at = {}

    def keep(record, state):
        at[record["epoch"]] = _weights(state.model)

    result = fit(cfg, keep)
    assert result.status == "early_stopped" and len(result.records) == 3
    assert result.best_epoch == 1 and [r["best_epoch"] for r in result.records] == [1, 1, 1]
    final = result.state.model.state_dict()
    assert all(torch.equal(final[k], at[1][k]) for k in final)
    assert not all(torch.equal(at[2][k], at[1][k]) for k in final)  # it did train on
    assert result.best_val_loss == result.records[0]["val_loss"] == result.records[-1]["best_val_loss"]


def test_train_early_stopping_resumes_from_checkpoint(tmp_path):
    # Rule: a checkpoint carries the best weights and the no-improvement counter, so a run
    # resumed mid-way stops at the same epoch with the same weights as an uninterrupted one.
    cfg = tiny(
        **{
            "train.optimizer": "adam",
            "train.max_epochs": 10,
            "data.val_fraction": 0.25,
            "train.early_stopping.patience": 3,
            "train.early_stopping.min_delta": 10.0,
        }
    )
    whole = fit(cfg)
    path = tmp_path / "state.pt"
    fit(cfg, lambda r, s: save_checkpoint(s, path) if s.epoch == 2 else None)
    resumed = fit(cfg, checkpoint=load_checkpoint(path))
    assert resumed.status == whole.status == "early_stopped"
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3, 4]
    a, b = resumed.state.model.state_dict(), whole.state.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"train.early_stopping.patience": 3}, "needs a hold-out"),
        ({"train.early_stopping.patience": 0, "data.val_fraction": 0.2}, "an integer >= 1"),
    ],
)
def test_train_early_stopping_config_rejected(overrides, expected):
    # Rule: early stopping needs held-out data and a patience >= 1; otherwise one line that
    # names the key and what is allowed.
    from tuner.core.config import ConfigError

    with pytest.raises(ConfigError) as err:
        tiny(**overrides)
    msg = str(err.value)
    assert "train.early_stopping.patience" in msg and "\n" not in msg
    assert ("hold-out" in msg) if expected == "needs a hold-out" else (expected in msg)


@pytest.mark.process
def test_train_cli_prints_split_baselines_and_three_losses(tmp_path):
    # Rule: `tuner.train --config seed_ablation.yaml --epochs 3` prints the split, both
    # baselines and per epoch train_loss_running, train_loss and val_loss; --save-best writes the
    # best epoch's weights, which equal the restored model's.
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "tuner.train",
        "--config",
        "search_spaces/seed_ablation.yaml",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--save-best",
        str(tmp_path / "best.pt"),
        "data.n_series=4",
        "data.length=200",
        "data.window=8",
        "model.dense_units=4",
        "model.lstm_units=4",
        "train.threads=1",
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=str(_root()))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(
        ln.startswith("split: 2 training series, 398 training steps; held out: 398 steps (2 whole series)")
        for ln in lines
    )
    assert any(ln.startswith("baselines") and "zero train 1.0000" in ln and "ridge" in ln for ln in lines)
    epochs = [ln for ln in lines if ln.startswith("epoch")]
    assert len(epochs) == 3
    assert all(k in ln for ln in epochs for k in ("train_loss_running", "train_loss ", "val_loss"))
    frame = pd.read_csv(out / "epochs.csv")
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == frame["best_epoch"].iloc[-1]
    assert best["value"] == pytest.approx(frame["val_loss"].min())
