"""Time per epoch of `tuner.train.fit` against a bare PyTorch loop of the same math.

    python benchmarks/bench_train.py            # full: source scale N=1, N=100; small N=1, N=100
    python benchmarks/bench_train.py --quick    # source scale N=100 (1 timed epoch) + small cases

Both arms train the same `QNet` (same init: `torch.manual_seed(train.seed)` right before it is
built, as `tuner.train.new_state` does), on the same prepared data, over the same chunks
(`chunk_bounds(steps, N)`), with one SGD step (lr 0.01, no momentum) per chunk, MSE loss, the
LSTM state detached between chunks and reset each epoch, no clipping, 1 torch thread.

* tuner arm: the real `fit(config, on_epoch=..., data=...)` path, clip mode `none` (which still
  computes the pre-clip global gradient norm every step, with one host sync: that is part of its
  cost). Its epoch time is the wall time between two `on_epoch` calls, so everything `fit` and
  `train_epoch` do per epoch is counted.
* bare arm: a hand-written loop, run inside the tuner's `on_epoch` callback, so the two arms
  alternate epoch by epoch (T B T B ...) and share the machine's noise. Its inputs are
  pre-materialised by default (one contiguous tensor per chunk built before timing, the stricter
  baseline); `--bare-inputs per-chunk` builds them per chunk with `SeriesSet.inputs(a, b)` as the
  tuner does. The global torch RNG (the Gaussian-noise layers) is swapped around the bare epoch,
  so each arm sees the noise draws a standalone run would: their epoch losses must agree, which
  checks that both arms do the same math.

Epoch 1 of each arm is a warm-up; the reported time is the median of the next k epochs.
Peak memory (source scale only): each arm runs alone in a child process
(`--child`), which reports `ru_maxrss` right after its imports, after preparing the data, and at
the end (peak RSS, Python + torch included).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tuner.core.config import Config, DataConfig, ModelConfig, ScheduleConfig, TrainConfig  # noqa: E402
from tuner.core.data import Prepared, SeriesSet, prepare  # noqa: E402
from tuner.core.model import QNet  # noqa: E402
from tuner.core.train import chunk_bounds, fit  # noqa: E402

from benchmarks.machine import machine_line  # noqa: E402

THREADS = 1
SEED = 0
LR = 0.01
RATIO_GOAL = 1.10
MEMORY_GOAL_MB = 1500.0

SCALES = {
    # name: (n_series, length in prices = steps + 1, window)
    "source": (15, 20000, 128),
    "small": (8, 4000, 128),
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def set_threads() -> None:
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:  # already set, or parallel work already started
        pass


def make_config(scale: str, n: int, epochs: int) -> Config:
    s, length, window = SCALES[scale]
    return Config(
        data=DataConfig(n_series=s, length=length, window=window),
        model=ModelConfig(),
        train=TrainConfig(
            optimizer="sgd",
            lr=LR,
            momentum=0.0,
            max_epochs=epochs,
            threads=THREADS,
            seed=SEED,
            device="cpu",
            schedule=ScheduleConfig(chunks=(n,)),
        ),
    )


# ---------------------------------------------------------------- the bare arm


class Bare:
    """The minimal loop: same model, same chunks, SGD step per chunk, state detached between."""

    def __init__(self, cfg: Config, data: SeriesSet, n: int, materialise: bool) -> None:
        if not bool(data.mask.all()):
            raise SystemExit("bare loop assumes equal-length series (no padding mask)")
        torch.manual_seed(cfg.train.seed)
        self.model = QNet(data.window, data.targets.shape[-1], cfg.model)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.train.lr)
        self.rng = torch.get_rng_state()  # the noise draws continue from here, as in fit
        self.data = data
        self.bounds = chunk_bounds(data.steps, n)
        self.materialise = materialise
        if materialise:
            self.xs = [data.inputs(a, b).contiguous() for a, b in self.bounds]
            self.ys = [data.targets[:, a:b].contiguous() for a, b in self.bounds]

    def epoch(self) -> tuple[float, float, float]:
        """One epoch under the bare arm's own RNG stream; (wall s, CPU s, epoch loss)."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        model, opt, data = self.model, self.opt, self.data
        losses = []
        cpu = time.process_time()
        start = time.perf_counter()
        hidden = None
        for i, (a, b) in enumerate(self.bounds):
            if self.materialise:
                x, y = self.xs[i], self.ys[i]
            else:
                x, y = data.inputs(a, b), data.targets[:, a:b]
            q, hidden = model(x, hidden)
            loss = F.mse_loss(q, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hidden = (hidden[0].detach(), hidden[1].detach())
            losses.append(loss.detach())
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)
        sizes = [b - a for a, b in self.bounds]
        loss_value = sum(float(v) * s for v, s in zip(losses, sizes)) / sum(sizes)
        return elapsed, cpu, loss_value


# ---------------------------------------------------------------- one case, both arms


def run_case(scale: str, n: int, k: int, materialise: bool, prepared: Prepared) -> dict:
    """Warm-up + k epochs of each arm, alternating T B T B ...; medians and the loss check."""
    cfg = make_config(scale, n, 1 + k)
    bare = Bare(cfg, prepared.train, n, materialise)
    tuner_times: list[float] = []
    tuner_inner: list[float] = []
    bare_times: list[float] = []
    tuner_cpu: list[float] = []
    bare_cpu: list[float] = []
    tuner_losses: list[float] = []
    bare_losses: list[float] = []
    mark = [0.0, 0.0]  # wall, CPU time at the end of the previous callback

    def on_epoch(record: dict, state) -> bool:
        now, cpu_now = time.perf_counter(), time.process_time()
        tuner_times.append(now - mark[0])
        tuner_cpu.append(cpu_now - mark[1])
        tuner_inner.append(record["epoch_time_s"])
        tuner_losses.append(record["train_loss_running"])
        sec, cpu, loss = bare.epoch()
        bare_times.append(sec)
        bare_cpu.append(cpu)
        bare_losses.append(loss)
        mark[1] = time.process_time()
        mark[0] = time.perf_counter()
        return False

    mark[1] = time.process_time()
    mark[0] = time.perf_counter()
    result = fit(cfg, on_epoch=on_epoch, data=prepared)
    if result.status != "completed" or len(tuner_times) != 1 + k:
        raise SystemExit(f"{scale} N={n}: fit ended {result.status} after {len(tuner_times)} epochs")
    steps = prepared.train.n_real
    t_med = statistics.median(tuner_times[1:])
    b_med = statistics.median(bare_times[1:])
    rel = max(abs(t - b) / max(abs(b), 1e-12) for t, b in zip(tuner_losses, bare_losses))
    return {
        "case": scale,
        "n": n,
        "k": k,
        "steps": steps,
        "tuner_s": t_med,
        "bare_s": b_med,
        "ratio": t_med / b_med,
        "tuner_steps_per_s": steps / t_med,
        "cpu_ratio": statistics.median(tuner_cpu[1:]) / statistics.median(bare_cpu[1:]),
        "tuner_cpu": tuner_cpu,
        "bare_cpu": bare_cpu,
        "tuner_times": tuner_times,
        "tuner_inner": tuner_inner,
        "bare_times": bare_times,
        "loss_rel_diff": rel,
        "tuner_loss": tuner_losses[-1],
        "bare_loss": bare_losses[-1],
    }


# ---------------------------------------------------------------- memory, one arm per process


def child(arm: str, scale: str, n: int, epochs: int, materialise: bool) -> None:
    """Run one arm alone and print a JSON line with its RSS (MB) and epoch times."""
    set_threads()
    rss_imports = peak_rss_mb()
    cfg = make_config(scale, n, epochs)
    prepared = prepare(cfg.data, device="cpu")
    rss_data = peak_rss_mb()
    times: list[float] = []
    if arm == "tuner":
        result = fit(cfg, data=prepared)
        times = [r["epoch_time_s"] for r in result.records]
    else:
        bare = Bare(cfg, prepared.train, n, materialise)
        for _ in range(epochs):
            times.append(bare.epoch()[0])
    print(
        json.dumps(
            {
                "arm": arm,
                "scale": scale,
                "n": n,
                "epochs": epochs,
                "rss_after_imports_mb": rss_imports,
                "rss_after_data_mb": rss_data,
                "peak_rss_mb": peak_rss_mb(),
                "epoch_times": times,
            }
        )
    )


def measure_memory(arm: str, scale: str, n: int, epochs: int, materialise: bool) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--arm",
        arm,
        "--scale",
        scale,
        "--n",
        str(n),
        "--epochs",
        str(epochs),
        "--bare-inputs",
        "materialised" if materialise else "per-chunk",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"child {arm} {scale} N={n} failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def header(materialise: bool, quick: bool) -> str:
    return "\n".join(
        [
            f"{machine_line('torch')} | threads {torch.get_num_threads()} "
            f"(interop {torch.get_num_interop_threads()})",
            f"mode: {'quick' if quick else 'full'} | optimizer SGD lr {LR} | clip none (tuner still "
            f"measures the grad norm) | bare inputs: "
            + (
                "pre-materialised (one contiguous tensor per chunk, built before timing)"
                if materialise
                else "per chunk via SeriesSet.inputs(a, b)"
            ),
            f"goal: ratio (tuner/bare) <= {RATIO_GOAL:.2f}; peak RSS < {MEMORY_GOAL_MB / 1000:.1f} GB "
            "for tuner at the source scale",
        ]
    )


def scale_label(scale: str) -> str:
    s, length, window = SCALES[scale]
    return f"{scale} ({s}x{length - 1} steps, w{window})"


def table(rows: list[dict], memory: dict[tuple[str, int, str], dict]) -> str:
    lines = [
        "| case | N | tuner s/epoch | bare s/epoch | ratio (tuner/bare) | tuner steps/s | "
        "peak RSS tuner (MB) | peak RSS bare (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:

        def rss(arm: str, r: dict = r) -> str:
            m = memory.get((r["case"], r["n"], arm))
            return f"{m['peak_rss_mb']:,.0f}" if m else "-"

        lines.append(
            f"| {scale_label(r['case'])} | {r['n']} | {r['tuner_s']:.3f} | "
            f"{r['bare_s']:.3f} | {r['ratio']:.3f} | {r['tuner_steps_per_s']:,.0f} | "
            f"{rss('tuner')} | {rss('bare')} |"
        )
    return "\n".join(lines)


def details(rows: list[dict], memory: dict[tuple[str, int, str], dict]) -> str:
    out = ["", "per-epoch seconds (first = warm-up, excluded from the median):"]
    for r in rows:
        fmt = lambda xs: " ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        out.append(
            f"  {r['case']} N={r['n']}: tuner fit {fmt(r['tuner_times'])} | tuner "
            f"train_epoch {fmt(r['tuner_inner'])} | bare {fmt(r['bare_times'])} | "
            f"loss max rel diff tuner vs bare {r['loss_rel_diff']:.1e}"
        )
        out.append(
            f"    CPU time (process_time, less sensitive to other workers): tuner "
            f"{fmt(r['tuner_cpu'])} | bare {fmt(r['bare_cpu'])} | median ratio "
            f"{r['cpu_ratio']:.3f}"
        )
    if memory:
        out.append("memory children (MB, ru_maxrss): after imports / after data / peak; epochs")
        for (case, n, arm), m in sorted(memory.items()):
            out.append(
                f"  {case} N={n} {arm}: {m['rss_after_imports_mb']:,.0f} / "
                f"{m['rss_after_data_mb']:,.0f} / {m['peak_rss_mb']:,.0f}; "
                f"{m['epochs']} epoch(s) {' '.join(f'{t:.2f}' for t in m['epoch_times'])} s"
            )
    out.append("")
    slow = [r for r in rows if r["ratio"] > RATIO_GOAL]
    out.append(
        f"ratio goal (<= {RATIO_GOAL:.2f}): "
        + (
            "met in every case"
            if not slow
            else "NOT met in " + ", ".join(f"{r['case']} N={r['n']} ({r['ratio']:.2f})" for r in slow)
        )
    )
    tuner_mem = {k: v for k, v in memory.items() if k[2] == "tuner"}
    if tuner_mem:
        over = [
            f"{k[0]} N={k[1]} ({v['peak_rss_mb']:,.0f} MB)"
            for k, v in sorted(tuner_mem.items())
            if v["peak_rss_mb"] >= MEMORY_GOAL_MB
        ]
        out.append(
            f"memory goal (tuner peak RSS < {MEMORY_GOAL_MB:,.0f} MB at source scale): "
            + ("met" if not over else "NOT met in " + ", ".join(over))
        )
    bad = [r for r in rows if r["loss_rel_diff"] > 1e-3]
    out.append(
        "same-math check (epoch losses agree within 1e-3 relative): "
        + ("ok" if not bad else "FAILED in " + ", ".join(f"{r['case']} N={r['n']}" for r in bad))
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="source scale N=100 with 1 timed epoch, plus the small cases (< 1 min)",
    )
    p.add_argument("--bare-inputs", choices=("materialised", "per-chunk"), default="materialised")
    p.add_argument("--no-memory", action="store_true", help="skip the memory child processes")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", choices=("tuner", "bare"), help=argparse.SUPPRESS)
    p.add_argument("--scale", choices=tuple(SCALES), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    materialise = args.bare_inputs == "materialised"
    if args.child:
        child(args.arm, args.scale, args.n, args.epochs, materialise)
        return 0

    set_threads()
    if args.quick:
        cases = [("source", 100, 1), ("small", 1, 5), ("small", 100, 5)]
        memory_epochs = 1
    else:
        cases = [("source", 1, 3), ("source", 100, 3), ("small", 1, 5), ("small", 100, 5)]
        memory_epochs = 2
    print(header(materialise, args.quick), flush=True)
    start = time.perf_counter()

    memory: dict[tuple[str, int, str], dict] = {}
    if not args.no_memory:
        for scale, n, _ in cases:
            if scale != "source":
                continue
            for arm in ("tuner", "bare"):
                memory[(scale, n, arm)] = measure_memory(arm, scale, n, memory_epochs, materialise)
                print(
                    f"  memory {scale} N={n} {arm}: peak {memory[(scale, n, arm)]['peak_rss_mb']:,.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )

    rows = []
    prepared: dict[str, Prepared] = {}
    for scale, n, k in cases:
        if scale not in prepared:
            prepared[scale] = prepare(make_config(scale, 1, 1).data, device="cpu")
        rows.append(run_case(scale, n, k, materialise, prepared[scale]))
        r = rows[-1]
        print(
            f"  timed {scale} N={n}: tuner {r['tuner_s']:.3f} s, bare {r['bare_s']:.3f} s",
            file=sys.stderr,
            flush=True,
        )

    print()
    print(table(rows, memory))
    print(details(rows, memory))
    print(f"total benchmark wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
