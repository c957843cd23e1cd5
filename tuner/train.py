"""`python -m tuner.train`: one training run of the core, no Ray (a thin command line over `fit`).

At the start it prints the split and the two baselines (`tuner.core.baselines`), then per epoch
the running training loss, the end-of-epoch training loss (eval mode) and the held-out loss."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from tuner.core import config as config_mod
from tuner.core.atomic import atomic_write_text
from tuner.core.baselines import describe, reference
from tuner.core.config import ConfigError
from tuner.core.data import prepare
from tuner.core.train import EPOCH_COLUMNS, fit, resolve_device, save_best_model, save_checkpoint
from tuner.preflight import check_memory


def _progress_line(r: dict[str, Any], max_epochs: int) -> str:
    val = f"  val_loss {r['val_loss']:.5g}" if math.isfinite(r["val_loss"]) else ""
    return (
        f"epoch {r['epoch']:>4}/{max_epochs}  train_loss_running "
        f"{r['train_loss_running']:.5g}  train_loss {r['train_loss']:.5g}{val}  "
        f"N={r['chunks']:<4} stage {r['stage']}  |g| {r['grad_norm_mean']:.3g}  "
        f"clipped {r['clip_fraction']:.0%}  {r['steps_per_s']:,.0f} steps/s  "
        f"{r['epoch_time_s']:.2f} s (+{r['eval_time_s']:.2f} s eval)"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m tuner.train --config FILE.yaml [--epochs N] [--out DIR] [--save-best PATH]
    [key=value ...]`."""
    import pandas as pd

    parser = argparse.ArgumentParser(
        prog="python -m tuner.train",
        description="Train the chunked LSTM once, without Ray.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m tuner.train --config search_spaces/seed_ablation.yaml --epochs 20 \\\n"
        "      train.optimizer=adam train.clip.mode=norm train.schedule.chunks=[100,50,10,2,1]\n"
        "  python -m tuner.train --config results/full/best_config.yaml --save-best best.pt\n"
        "  python -m tuner.train --smoke-test          # seconds, tiny data\n"
        "every key and its default: python -m tuner.keys",
    )
    parser.add_argument("--config", help="YAML with sections data, model, train")
    parser.add_argument("--epochs", type=int, help="override train.max_epochs")
    parser.add_argument(
        "--out", default="runs/train", help="folder for epochs.csv and model.pt (default: %(default)s)"
    )
    parser.add_argument(
        "--save-best",
        metavar="PATH",
        help="also save the best epoch's weights (lowest val_loss, else lowest "
        "train_loss) with its config to PATH",
    )
    parser.add_argument(
        "--smoke", "--smoke-test", action="store_true", help="tiny data, model and epochs (seconds)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=0.001")
    args = parser.parse_args(argv)
    overrides = (list(config_mod.SMOKE_OVERRIDES) if args.smoke else []) + list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.max_epochs={args.epochs}")
    try:
        config = config_mod.load(args.config, overrides)
        check_memory(config)  # absurd sizes: one line, not a MemoryError mid-allocation
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        data = prepare(config.data, device=resolve_device(config.train.device))
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"training {config.data.n_series if config.data.path is None else 'file'} series, "
        f"{data.train.steps} steps, schedule {list(config.train.schedule.chunks)}, "
        f"{config.train.optimizer} lr {config.train.lr}, clip {config.train.clip.mode}; "
        f"targets standardised (scale {data.target_std:.4g})",
        flush=True,
    )
    for line in describe(reference(config.data, data)):
        print(line, flush=True)
    result = fit(
        config, lambda r, s: print(_progress_line(r, config.train.max_epochs), flush=True), data=data
    )
    frame = pd.DataFrame(result.records, columns=list(EPOCH_COLUMNS))
    atomic_write_text(out / "epochs.csv", frame.to_csv(index=False))
    save_checkpoint(result.state, out / "model.pt")
    written = [out / "epochs.csv", out / "model.pt"]
    if args.save_best and result.state.best_model is not None:
        save_best_model(result.state, args.save_best)
        written.append(Path(args.save_best))
    tail = f" at epoch {result.diverged_epoch}" if result.diverged_epoch else ""
    held = (
        f"best val_loss {result.best_val_loss:.5g} at epoch {result.best_epoch}, "
        if math.isfinite(result.best_val_loss)
        else ""
    )
    print(
        f"{result.status}{tail}: {held}best train_loss {result.best_train_loss:.5g}, "
        f"final {result.final_train_loss:.5g}; wrote {', '.join(map(str, written))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
