"""Epoch time on CUDA against the CPU, and fractional trials sharing one GPU.

    python benchmarks/bench_gpu.py            # full: 4 timed epochs per case, 5 epochs per trial
    python benchmarks/bench_gpu.py --quick    # 2 timed epochs per case, 3 per trial (~5 min)

Without CUDA it prints one line saying so and exits 0, so it runs everywhere.

* Epoch time at the article's scale (15 series x 19,999 steps, window 128, 64 units, SGD lr
  0.01, chunks N = 100 and N = 1): the real `fit(config, data=...)` path on `cuda` and on the
  CPU with `--cpu-threads` torch threads (default 1: what a 1-CPU trial gets), same run, same
  data. The time is the median of the epochs after the first (warm-up, cuDNN autotuning).
* Fractional trials: k = 1, 2, 4, 8 trials on one GPU (`resources: {cpu: 1, gpu: 1/k}`), run
  by the real command (`python -m tuner.search --num-gpus 1`, a grid over `train.seed`, all k
  at once) at the same scale, N = 100. Throughput = epochs per minute of all trials together:
  the sum over trials of (epochs after the first) / (their seconds), each trial timed while the
  others ran. `device` is what the trials reported (proves they trained on CUDA).
Ratios are against the CPU baseline measured in this same run (one CPU trial at N = 100).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (after the sys.path line above)

SCALE = (15, 20000, 128)  # series, length in prices (= steps + 1), window
LR = 0.01
CONCURRENCY = (1, 2, 4, 8)


def make_config(n: int, epochs: int, device: str, threads: int):
    from tuner.core.config import Config, DataConfig, ModelConfig, ScheduleConfig, TrainConfig

    s, length, window = SCALE
    return Config(
        data=DataConfig(n_series=s, length=length, window=window),
        model=ModelConfig(dense_units=64, lstm_units=64),
        train=TrainConfig(
            optimizer="sgd",
            lr=LR,
            momentum=0.0,
            max_epochs=epochs,
            threads=threads,
            seed=0,
            device=device,
            schedule=ScheduleConfig(chunks=(n,)),
        ),
    )


def epoch_time(n: int, epochs: int, device: str, threads: int, prepared: dict) -> float:
    """Median seconds per epoch of `fit` after the first epoch."""
    from tuner.core.data import prepare
    from tuner.core.train import fit

    cfg = make_config(n, epochs, device, threads)
    if device not in prepared:
        prepared[device] = prepare(cfg.data, device=device)
    torch.set_num_threads(threads)
    result = fit(cfg, data=prepared[device])
    times = [r["epoch_time_s"] for r in result.records]
    if len(times) < 2:
        raise SystemExit(f"N={n} on {device}: fit ended {result.status} after {len(times)} epochs")
    return statistics.median(times[1:])


def concurrent(
    k: int, epochs: int, cpus: int, timeout: float, device: str = "cuda", scale: tuple[int, int, int] = SCALE
) -> dict:
    """k trials with gpu 1/k each, all at once, through `python -m tuner.search`."""
    import yaml

    from tuner.results import read_logs

    s, length, window = scale
    doc = {
        "name": f"gpu-{k}",
        "data": {"n_series": s, "length": length, "window": window, "seed": 0},
        "model": {"dense_units": 64, "lstm_units": 64},
        "train": {
            "optimizer": "sgd",
            "lr": LR,
            "momentum": 0.0,
            "max_epochs": epochs,
            "device": device,
            "schedule": {"chunks": [100]},
        },
        "space": {"train.seed": {"grid": list(range(k))}},
        "search": {
            "algorithm": "grid",
            "metric": "train_loss",
            "mode": "min",
            "scheduler": {"type": "fifo"},
            "max_concurrent": k,
            "checkpoint_every": epochs,
            "max_failures": 0,
        },
        "resources": {"cpu": 1, "gpu": round(1.0 / k, 6)},
    }
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(yaml.safe_dump(doc, sort_keys=False))
        from benchmarks.bench_search import search_command

        cmd = search_command(space, Path(tmp) / "results", "--num-cpus", str(cpus), "--num-gpus", "1")
        env = {key: v for key, v in os.environ.items() if key != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(":")
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"k": k, "error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - start
        logs = read_logs(Path(tmp) / "results" / doc["name"])
    if proc.returncode != 0:
        return {"k": k, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    rates, devices, done = [], set(), 0
    for log in logs:
        times = [r["epoch_time_s"] for r in log.results if "epoch_time_s" in r]
        devices.update(r.get("device", "?") for r in log.results)
        done += len(times)
        if len(times) >= 2:
            rates.append((len(times) - 1) / sum(times[1:]))
    if len(rates) < k:
        return {"k": k, "error": f"{len(rates)} of {k} trials ran 2+ epochs", "devices": devices}
    return {"k": k, "epochs_per_min": 60.0 * sum(rates), "wall_s": wall, "epochs": done, "devices": devices}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs (about 5 minutes)")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads of the CPU baseline")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per concurrent search")
    p.add_argument("--no-concurrent", action="store_true", help="epoch times only (no Ray)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"bench_gpu: no CUDA device (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}): nothing to measure"
        )
        return 0

    from benchmarks.machine import machine_line

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    epochs = 3 if args.quick else 5
    print(
        f"{machine_line('torch', 'ray')} | CUDA {torch.version.cuda} | "
        f"GPU {torch.cuda.get_device_name(0)} (of {torch.cuda.device_count()})"
    )
    print(
        f"mode: {'quick' if args.quick else 'full'} | scale {SCALE[0]}x{SCALE[1] - 1} steps, "
        f"window {SCALE[2]}, 64 units, SGD lr {LR} | CPU baseline: {args.cpu_threads} "
        f"thread(s)",
        flush=True,
    )
    start = time.perf_counter()

    rows, prepared = [], {}
    for n in (100, 1):
        gpu = epoch_time(n, epochs, "cuda", 1, prepared)
        cpu = epoch_time(n, epochs, "cpu", args.cpu_threads, prepared)
        rows.append((n, cpu, gpu))
        print(f"  N={n}: cpu {cpu:.3f} s, cuda {gpu:.3f} s", file=sys.stderr, flush=True)
    print("\n| N | CPU s/epoch | CUDA s/epoch | speed-up (CPU/CUDA) |\n|---:|---:|---:|---:|")
    for n, cpu, gpu in rows:
        print(f"| {n} | {cpu:.3f} | {gpu:.3f} | {cpu / gpu:.2f} |")

    if not args.no_concurrent:
        cpu_rate = 60.0 / rows[0][1]  # one CPU trial at N = 100, epochs per minute
        print(f"\nCPU baseline: {cpu_rate:.1f} epochs/min (one trial, N = 100, {args.cpu_threads} thread(s))")
        print(
            "| trials at once | GPU per trial | epochs/min (all) | vs 1 GPU trial | "
            "vs CPU trial | search wall s | device |\n|---:|---:|---:|---:|---:|---:|---|"
        )
        one = None
        for k in CONCURRENCY:
            if k > cpus:
                print(f"| {k} | 1/{k} | skipped: {cpus} CPUs, {k} trials need 1 each | | | | |")
                continue
            r = concurrent(k, epochs, cpus, args.timeout)
            devices = ", ".join(sorted(r.get("devices", []))) or "-"
            if "error" in r:
                print(f"| {k} | 1/{k} | failed: {r['error']} | | | | {devices} |", flush=True)
                continue
            one = one or r["epochs_per_min"]
            print(
                f"| {k} | 1/{k} | {r['epochs_per_min']:.1f} | {r['epochs_per_min'] / one:.2f} | "
                f"{r['epochs_per_min'] / cpu_rate:.2f} | {r['wall_s']:.0f} | {devices} |",
                flush=True,
            )
    print(f"\ntotal benchmark wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
