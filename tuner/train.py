"""`python -m tuner.train`: one training run of the core, no Ray (a thin command line over `fit`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from tuner.core import config as config_mod
from tuner.core.atomic import atomic_write_text
from tuner.core.config import ConfigError
from tuner.core.data import prepare
from tuner.preflight import check_memory
from tuner.core.train import EPOCH_COLUMNS, fit, resolve_device, save_checkpoint


def _progress_line(r: dict[str, Any], max_epochs: int) -> str:
    val = f"  val {r['val_loss']:.5g}" if math.isfinite(r["val_loss"]) else ""
    return (f"epoch {r['epoch']:>4}/{max_epochs}  loss {r['loss']:.5g}{val}  N={r['chunks']:<4} "
            f"stage {r['stage']}  |g| {r['grad_norm_mean']:.3g}  clipped {r['clip_fraction']:.0%}  "
            f"{r['steps_per_s']:,.0f} steps/s  {r['epoch_time_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    """`python -m tuner.train --config FILE.yaml [--epochs N] [--out DIR] [key=value ...]`."""
    import pandas as pd

    parser = argparse.ArgumentParser(prog="python -m tuner.train",
                                     description="Train the chunked LSTM once, without Ray.")
    parser.add_argument("--config", help="YAML with sections data, model, train")
    parser.add_argument("--epochs", type=int, help="override train.max_epochs")
    parser.add_argument("--out", default="runs/train", help="folder for epochs.csv and model.pt")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=0.001")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
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
    print(f"training {config.data.n_series if config.data.path is None else 'file'} series, "
          f"{data.train.steps} steps, schedule {list(config.train.schedule.chunks)}, "
          f"{config.train.optimizer} lr {config.train.lr}, clip {config.train.clip.mode}; "
          f"targets standardised (scale {data.target_std:.4g})", flush=True)
    result = fit(config, lambda r, s: print(_progress_line(r, config.train.max_epochs), flush=True),
                 data=data)
    frame = pd.DataFrame(result.records, columns=list(EPOCH_COLUMNS))
    atomic_write_text(out / "epochs.csv", frame.to_csv(index=False))
    save_checkpoint(result.state, out / "model.pt")
    tail = f" at epoch {result.diverged_epoch}" if result.diverged_epoch else ""
    print(f"{result.status}{tail}: best loss {result.best_loss:.5g}, final {result.final_loss:.5g}; "
          f"wrote {out / 'epochs.csv'} and {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
