"""The search's own overhead: a Ray Tune grid of K fixed trainings against the same K trainings
run in two plain processes without Ray.

    python benchmarks/bench_search.py            # K=6 trials, 8 x 4,000 steps, w128, 64 units,
                                                 # Adam, N=10, 40 epochs (~10-15 s per trial)
    python benchmarks/bench_search.py --quick    # K=4 tiny trials (< 1 min on an idle machine)
    python benchmarks/bench_search.py --repeats 3 --json out.json   # alternate the arms, medians

Both arms run the same K configs: one generated space file (a `grid` over `train.seed` with K
values, everything else fixed; algorithm grid, scheduler fifo, max_concurrent 2, resources cpu 1,
checkpoint_every 5, max_failures 0), written to a temporary folder.

* (a) search arm: `python -m tuner.search --space <that file> --results-dir <tmp> --no-dashboard
  --no-report --num-cpus 2` as a subprocess, timed end to end. Tune's own "Total run time ...
  (X seconds for the tuning loop)" log line gives the tuning loop. The end-to-end time is also
  split by timestamps: spawn -> `study.yaml` written (Python start, imports, plan, data check)
  -> Ray's "Started a local Ray instance." line (ray.init) -> start of the tuning loop (Tuner
  set-up) -> end of the loop -> exit (ray.shutdown, tables export, summary).
* Ray start-up: a separate subprocess times a bare `import ray` + `ray.init(address="local",
  num_cpus=2, include_dashboard=False)` (+ `ray.shutdown()`, reported apart), before arm (a).
* (b) plain arm: two subprocesses of this script (`--worker`), each taking every other seed,
  started together; each builds its configs exactly as a trial does (`load_space` + `resolve`
  on {"train.seed": s}, then threads=1 and device cpu as `tuner.trial._placed` does for a
  1-CPU trial), prepares the data once per process (as a reused trial actor does) and calls
  `tuner.train.fit`. Timed from the first spawn to the last exit, so the Python start and the
  torch import of the workers count, as a trial actor's start counts in (a)'s loop.

Every Ray instance the benchmark starts lives under its own `RAY_TMPDIR` (a short temporary
folder) and `address="local"`: it never joins or disturbs another Ray running on the machine,
and it never runs `ray stop`. RAY_ADDRESS is removed from the children's environment.

CPU utilisation of an arm = CPU seconds / (wall x 2 cores), measured three ways:
* rusage: `getrusage(RUSAGE_CHILDREN)` around the subprocess(es). Exact for (b); for (a) it
  misses Ray processes that were not reaped through the driver (a lower bound).
* tree: the arm's process tree, sampled from /proc every 0.5 s (utime+stime of every
  descendant, the last value seen per process): a lower bound, by at most one interval per
  process; split by process kind (trainers, the search driver, Ray's daemons).
* machine: /proc/stat busy time of the whole machine over the arm's wall time. The simplest
  honest measure of "both cores busy", but it counts any other workload too: when the 1-minute
  load average exceeds 0.5 at start, a warning says the numbers are not trustworthy.

Same work: per seed, both arms must end with the same final loss (same config, same seed, one
thread: the same math) and the same epoch count; the sums of per-trial training seconds
(`seconds` of trials.csv = the sum of `epoch_time_s`; `state.train_time_s` in (b)) should be
close. Per-trial overhead inside (a) is read from each trial's result.json: time_this_iter_s
minus epoch_time_s per reported epoch (the report round trip, checkpoint epochs apart).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402

CORES = 2
"""The arms' CPU share: 2 trial slots (max_concurrent 2, cpu 1 each) vs 2 worker processes."""
RATIO_GOAL = 1.15
LOAD_WARN = 0.5
STUDY = "bench_search"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name: trials K, n_series, length (prices), window, units, chunks N, epochs E
SETTINGS = {
    "full": dict(trials=6, n_series=8, length=4000, window=128, units=64, chunks=10, epochs=40),
    "quick": dict(trials=4, n_series=4, length=2000, window=64, units=32, chunks=10, epochs=20),
}
OPTIMIZER, LR, CHECKPOINT_EVERY = "adam", 0.001, 5

LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
TOTAL_RE = re.compile(r"Total run time: ([\d.]+) seconds \(([\d.]+) seconds for the tuning loop\)")


# ---------------------------------------------------------------- the space file


def space_document(s: dict[str, int]) -> dict[str, Any]:
    return {
        "name": STUDY,
        "data": {
            "preset": "two-modes",
            "n_series": s["n_series"],
            "length": s["length"],
            "window": s["window"],
            "seed": 0,
        },
        "model": {"dense_units": s["units"], "lstm_units": s["units"], "noise_std": 0.1},
        "train": {
            "max_epochs": s["epochs"],
            "optimizer": OPTIMIZER,
            "lr": LR,
            "threads": 1,
            "schedule": {"chunks": [s["chunks"]]},
        },
        "space": {"train.seed": {"grid": list(range(s["trials"]))}},
        "search": {
            "algorithm": "grid",
            "metric": "train_loss",
            "mode": "min",
            "num_samples": 1,
            "scheduler": {"type": "fifo"},
            "max_concurrent": CORES,
            "checkpoint_every": s["checkpoint_every"],
            "max_failures": 0,
            "seed": 0,
        },
        "resources": {"cpu": 1, "gpu": 0},
    }


# ---------------------------------------------------------------- measuring CPU


def proc_stat() -> tuple[int, int]:
    """(total, idle) jiffies of the whole machine, all cores (guest time is inside user)."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:9]]
    return sum(vals), vals[3] + vals[4]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime jiffies, starttime) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def _label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return ""
    if not argv:
        return ""
    if argv[0].startswith("ray::"):
        return argv[0].split()[0].split(".")[0]  # ray::ImplicitFunc.train -> ray::ImplicitFunc
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    scripts = [a for a in argv[1:] if a.endswith(".py")]
    return os.path.basename(scripts[0] if scripts else argv[0])


class TreeSampler(threading.Thread):
    """CPU seconds of every descendant of `roots`, sampled from /proc every `interval` s."""

    def __init__(self, roots: list[int], root_label: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots = list(roots)
        self.root_label = root_label
        self.interval = interval
        self.ticks: dict[tuple[int, int], int] = {}
        self.seen: dict[tuple[int, int], list[str]] = defaultdict(list)
        self.series: list[tuple[float, dict[tuple[int, int], int]]] = []
        self._halt = threading.Event()

    def sample(self) -> None:
        procs: dict[int, tuple[int, int, int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _read_stat(int(name))
                if st is not None:
                    procs[int(name)] = st
        kids: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _, _) in procs.items():
            kids[ppid].append(pid)
        stack, tree = [r for r in self.roots if r in procs], set()
        while stack:
            pid = stack.pop()
            if pid not in tree:
                tree.add(pid)
                stack.extend(kids.get(pid, ()))
        # Known processes that left the tree (orphaned) are still followed by (pid, start).
        tree |= {pid for pid, start in self.ticks if pid in procs and procs[pid][2] == start}
        for pid in tree:
            _, ticks, start = procs[pid]
            key = (pid, start)
            self.ticks[key] = ticks
            label = self.root_label if pid in self.roots else _label(pid)
            if label and label not in self.seen[key]:
                self.seen[key].append(label)
        self.series.append((time.time(), dict(self.ticks)))

    def label(self, key: tuple[int, int]) -> str:
        """What a process became: a Ray actor's name over ray::IDLE over its start command."""
        seen = self.seen.get(key) or ["?"]
        actors = [lab for lab in seen if lab.startswith("ray::") and lab != "ray::IDLE"]
        return actors[0] if actors else ("ray::IDLE" if "ray::IDLE" in seen else seen[0])

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def by_label(self, start: float | None = None, end: float | None = None) -> dict[str, float]:
        """CPU seconds per process kind, over the whole run or between two wall-clock times
        (the last sample at or before `start`, the first at or after `end`)."""
        ticks = self.ticks
        base: dict[tuple[int, int], int] = {}
        if start is not None and end is not None and self.series:
            base = next((t for ts, t in reversed(self.series) if ts <= start), {})
            ticks = next((t for ts, t in self.series if ts >= end), self.series[-1][1])
        out: dict[str, float] = defaultdict(float)
        for key, value in ticks.items():
            out[self.label(key)] += (value - base.get(key, 0)) / CLK_TCK
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def total(self) -> float:
        return sum(self.ticks.values()) / CLK_TCK

    def alive(self) -> list[tuple[int, str]]:
        """Processes of the tree still running (same pid and start time)."""
        out = []
        for (pid, start), _ in self.ticks.items():
            st = _read_stat(pid)
            if st is not None and st[2] == start:
                out.append((pid, self.label((pid, start))))
        return out


def reap_leftovers(sampler: TreeSampler, what: str, wait_s: float = 10.0) -> list[str]:
    """Wait for the processes this benchmark started to end; SIGTERM (by pid) what remains."""
    deadline = time.monotonic() + wait_s
    left = sampler.alive()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = sampler.alive()
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return [f"{what}: {label} (pid {pid}) outlived its parent; sent SIGTERM" for pid, label in left]


class Window:
    """Wall clock, machine /proc/stat and RUSAGE_CHILDREN over one arm."""

    def __enter__(self) -> Window:
        self.stat0, self.ru0 = proc_stat(), children_cpu()
        self.wall0, self.t0 = time.time(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_s = time.perf_counter() - self.t0
        self.rusage_cpu = children_cpu() - self.ru0
        total, idle = proc_stat()
        dt, di = total - self.stat0[0], idle - self.stat0[1]
        self.machine_busy = (dt - di) / dt if dt > 0 else math.nan
        self.machine_busy_core_s = (dt - di) / CLK_TCK


# ---------------------------------------------------------------- environment of the children


def search_command(space: Path, results: Path, *flags: str) -> list[str]:
    """`python -m tuner.search` on `space` into `results`, no dashboard or report, plus `flags`
    (how every benchmark runs the real search)."""
    cmd = [sys.executable, "-m", "tuner.search", "--space", str(space), "--results-dir", str(results)]
    return [*cmd, "--no-dashboard", "--no-report", *flags]


def child_env(ray_tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join a running cluster
    env["RAY_TMPDIR"] = str(ray_tmp)  # own sockets, session folder and address file
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def worker_env(ray_tmp: Path) -> dict[str, str]:
    env = child_env(ray_tmp)
    # Ray sets OMP_NUM_THREADS to a trial's CPU count (1) when it is unset: mirror that.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ---------------------------------------------------------------- Ray start-up probe


PROBE = """
import json, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard=False)
t2 = time.perf_counter()
ray.shutdown()
t3 = time.perf_counter()
print("PROBE " + json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}))
"""


def ray_probe(ray_tmp: Path) -> dict[str, Any]:
    with Window() as w:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE],
            cwd=ROOT,
            env=child_env(ray_tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sampler = TreeSampler([proc.pid], "probe")
        sampler.start()
        out, err = proc.communicate()
        sampler.stop()
    notes = reap_leftovers(sampler, "ray probe")
    line = next((ln for ln in out.splitlines() if ln.startswith("PROBE ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"ray start-up probe failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(line[6:])
    res.update(
        startup_s=res["import_s"] + res["init_s"], wall_s=w.wall_s, notes=notes, tree_cpu=sampler.total()
    )
    return res


# ---------------------------------------------------------------- arm (a): the search


def _log_time(line: str) -> float | None:
    m = LOG_TS.match(line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _trial_overheads(exp_dir: Path) -> list[dict[str, Any]]:
    """Per trial, from result.json: in-trial time not spent in train_epoch."""
    out = []
    for folder in sorted(exp_dir.glob("trial_*")):
        rows = []
        path = folder / "result.json"
        if path.exists():
            for ln in path.read_text().splitlines():
                try:
                    rows.append(json.loads(ln))
                except json.JSONDecodeError:
                    break
        rows = [r for r in rows if "epoch_time_s" in r and "time_this_iter_s" in r]
        if not rows:
            continue
        gaps = [r["time_this_iter_s"] - r["epoch_time_s"] for r in rows]
        ckpt = [g for g, r in zip(gaps[1:], rows[1:]) if r.get("checkpoint_dir_name")]
        plain = [g for g, r in zip(gaps[1:], rows[1:]) if not r.get("checkpoint_dir_name")]
        # The last report carries the final checkpoint, copied to storage by the trial process
        # right at that report (result.json itself is rewritten later, at the experiment's end).
        saved = [f.stat().st_mtime for f in folder.glob("checkpoint_*/*") if f.is_file()]
        end = max(saved) if saved else path.stat().st_mtime
        out.append(
            {
                "end": end,
                "start": end - rows[-1]["time_total_s"],
                "trial": folder.name,
                "seed": rows[-1].get("seed"),
                "pid": rows[-1].get("pid"),
                "epochs": len(rows),
                "time_total_s": rows[-1]["time_total_s"],
                "train_time_s": rows[-1]["train_time_s"],
                "first_gap_s": gaps[0],
                "plain_gap_s": statistics.median(plain) if plain else math.nan,
                "ckpt_gap_s": statistics.median(ckpt) if ckpt else math.nan,
                "plain_gaps_sum_s": sum(plain),
                "ckpt_gaps_sum_s": sum(ckpt),
                "n_ckpt": len(ckpt) + bool(rows[0].get("checkpoint_dir_name")),
            }
        )
    return out


def run_search(space: Path, tmp: Path, ray_tmp: Path, k: int) -> dict[str, Any]:
    """Arm (a): one real `python -m tuner.search`, timed phase by phase. Long on purpose: the
    phases are read from one process's output and files in order, and splitting them would
    scatter that timeline."""
    results = tmp / "results"
    if results.exists():
        shutil.rmtree(results)
    cmd = search_command(space, results, "--num-cpus", str(CORES))
    lines: list[tuple[float, str]] = []
    proc = None
    with Window() as w:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=child_env(ray_tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        sampler = TreeSampler([proc.pid], "search driver")
        sampler.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))
            rc = proc.wait()
        except BaseException:
            proc.send_signal(signal.SIGINT)  # Tune stops gracefully on SIGINT
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            sampler.stop()
            reap_leftovers(sampler, "search")
            raise
        end = time.time()
        sampler.stop()
    notes = reap_leftovers(sampler, "search")
    log = tmp / "search.log"
    log.write_text("\n".join(ln for _, ln in lines) + "\n")
    if rc != 0:
        tail = "\n".join(ln for _, ln in lines[-40:])
        raise SystemExit(f"search failed (exit {rc}); log {log}:\n{tail}")

    study = results / STUDY
    started = loop_end = None
    loop_s = total_s = math.nan
    for _, ln in lines:
        if "Started a local Ray instance" in ln:
            started = _log_time(ln)
        m = TOTAL_RE.search(ln)
        if m:
            total_s, loop_s = float(m.group(1)), float(m.group(2))
            loop_end = _log_time(ln)
    yaml_t = (study / "study.yaml").stat().st_mtime if (study / "study.yaml").exists() else None

    def span(a: float | None, b: float | None) -> float:
        return b - a if a is not None and b is not None else math.nan

    loop_start = loop_end - loop_s if loop_end is not None and math.isfinite(loop_s) else None
    phases = {
        "pre_ray_s": span(w.wall0, yaml_t),
        "ray_init_s": span(yaml_t, started),
        "tuner_setup_s": span(started, loop_start),
        "loop_s": loop_s,
        "post_s": span(loop_end, end),
    }

    with (study / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    bad = [t for t in trials if t["status"] != "completed"]
    if len(trials) != k or bad:
        raise SystemExit(
            f"search: expected {k} completed trials, got "
            f"{[(t['trial_id'], t['status']) for t in trials]}; log {log}"
        )
    per_seed = {
        int(float(t["seed"])): {
            "final_loss": float(t["train_loss"]),
            "seconds": float(t["seconds"]),
            "epochs": int(t["epochs"]),
        }
        for t in trials
    }
    groups = sampler.by_label()
    loop_groups = sampler.by_label(loop_start, loop_end) if loop_start is not None else {}
    trainer_cpu = sum(v for lab, v in loop_groups.items() if lab.startswith("ray::ImplicitFunc"))
    return {
        "wall_s": w.wall_s,
        "loop_s": loop_s,
        "tune_total_s": total_s,
        "phases": phases,
        "loop_start": loop_start,
        "loop_end": loop_end,
        "rusage_cpu": w.rusage_cpu,
        "tree_cpu": sampler.total(),
        "cpu_by_process": groups,
        "loop_cpu_by_process": loop_groups,
        "trainer_cpu": trainer_cpu,
        "machine_busy": w.machine_busy,
        "machine_busy_core_s": w.machine_busy_core_s,
        "per_seed": per_seed,
        "trial_overheads": _trial_overheads(study / "ray" / "search"),
        "notes": notes,
        "load_after": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- arm (b): two plain processes


def worker(space: str, seeds: list[int], out: str) -> None:
    """One plain process: the trials' configs, data prepared once, `fit` per seed."""
    started = time.time()
    t0 = time.perf_counter()
    from tuner.core.data import prepare
    from tuner.space import load_space, resolve
    from tuner.core.train import fit

    imports_s = time.perf_counter() - t0
    spec = load_space(space)
    prepared: dict[Any, Any] = {}
    trials = []
    for seed in seeds:
        config, _ = resolve(spec, {"train.seed": seed})
        # What tuner.trial._placed does for a trial with resources cpu 1, gpu 0.
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, threads=1, device="cpu"))
        t = time.perf_counter()
        data = prepared.get(config.data)
        if data is None:
            data = prepared[config.data] = prepare(config.data, device="cpu")
        prepare_s = time.perf_counter() - t
        marks: list[float] = []
        t = time.perf_counter()
        result = fit(config, lambda r, s, marks=marks: marks.append(time.perf_counter()), data=data)
        fit_s = time.perf_counter() - t
        times = [r["epoch_time_s"] for r in result.records]
        gaps = [m - p - e for m, p, e in zip(marks, [t, *marks[:-1]], times)]
        trials.append(
            {
                "seed": seed,
                "status": result.status,
                "epochs": len(result.records),
                "final_loss": result.final_train_loss,
                "train_time_s": result.state.train_time_s,
                "fit_s": fit_s,
                "prepare_s": prepare_s,
                "first_gap_s": gaps[0],
                "gap_s": statistics.median(gaps[1:]) if len(gaps) > 1 else math.nan,
                "epoch_times": times,
            }
        )
    Path(out).write_text(
        json.dumps({"started": started, "imports_s": imports_s, "trials": trials, "ended": time.time()})
    )


def run_plain(space: Path, tmp: Path, ray_tmp: Path, k: int) -> dict[str, Any]:
    seeds = list(range(k))
    halves = [seeds[i::CORES] for i in range(CORES)]
    outs = [tmp / f"worker{i}.json" for i in range(CORES)]
    for o in outs:
        o.unlink(missing_ok=True)
    procs: list[subprocess.Popen] = []
    with Window() as w:
        try:
            for half, out in zip(halves, outs):
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    str(space),
                    "--seeds",
                    ",".join(map(str, half)),
                    "--out",
                    str(out),
                ]
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=worker_env(ray_tmp),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            sampler = TreeSampler([p.pid for p in procs], "plain worker")
            sampler.start()
            errs = [p.communicate()[1] for p in procs]
        except BaseException:
            for p in procs:
                p.kill()
            raise
        sampler.stop()
    for p, err in zip(procs, errs):
        if p.returncode != 0:
            raise SystemExit(f"plain worker failed ({p.returncode}):\n{err[-3000:]}")
    docs = [json.loads(o.read_text()) for o in outs]
    trials = [t for d in docs for t in d["trials"]]
    bad = [t for t in trials if t["status"] != "completed"]
    if len(trials) != k or bad:
        raise SystemExit(f"plain arm: expected {k} completed trainings, got {trials}")
    return {
        "wall_s": w.wall_s,
        "rusage_cpu": w.rusage_cpu,
        "tree_cpu": sampler.total(),
        "machine_busy": w.machine_busy,
        "machine_busy_core_s": w.machine_busy_core_s,
        "per_seed": {t["seed"]: t for t in trials},
        "workers": docs,
        "worker_start_s": [d["started"] - w.wall0 for d in docs],
        "imports_s": [d["imports_s"] for d in docs],
        "load_after": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- report


def header(s: dict[str, int], mode: str, repeats: int) -> str:
    steps = s["n_series"] * (s["length"] - 1)
    return "\n".join(
        [
            machine_line("torch", "ray", "optuna"),
            f"mode: {mode} | K={s['trials']} trials (grid over train.seed), {OPTIMIZER} lr {LR}, "
            f"N={s['chunks']} chunks, data {s['n_series']} series x {s['length'] - 1} steps "
            f"({steps:,} per epoch), window {s['window']}, {s['units']} units, {s['epochs']} epochs "
            f"| search: grid, fifo, max_concurrent {CORES}, cpu 1 per trial, checkpoint_every "
            f"{s['checkpoint_every']}, reuse_actors (package), --num-cpus {CORES} | "
            f"repeats {repeats}",
            f"goal: (a) tuning loop / (b) <= {RATIO_GOAL:.2f}",
        ]
    )


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.0f}%"


def _med(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def table(runs: list[dict[str, Any]]) -> str:
    """Medians over repeats; ratios against (b). CPU s: the arm's process tree (sampled)."""

    def med(f) -> float:
        return _med([f(r) for r in runs])

    a_wall, b_wall = med(lambda r: r["a"]["wall_s"]), med(lambda r: r["b"]["wall_s"])
    a_loop = med(lambda r: r["a"]["loop_s"])
    start = med(lambda r: r["probe"]["startup_s"])
    a_cpu, b_cpu = med(lambda r: r["a"]["tree_cpu"]), med(lambda r: r["b"]["tree_cpu"])
    loop_cpu = med(lambda r: sum(r["a"]["loop_cpu_by_process"].values()) or math.nan)
    probe_cpu = med(lambda r: r["probe"]["tree_cpu"])

    def util(arm: str, key: str) -> str:
        return _pct(med(lambda r: r[arm][key] / (r[arm]["wall_s"] * CORES)))

    rows = [
        (
            "(a) search, end to end",
            a_wall,
            a_cpu,
            util("a", "rusage_cpu"),
            util("a", "tree_cpu"),
            _pct(med(lambda r: r["a"]["machine_busy"])),
        ),
        ("(a) tuning loop (Tune's log line)", a_loop, loop_cpu, "-", _pct(loop_cpu / (a_loop * CORES)), "-"),
        ("(a) end to end - Ray start-up", a_wall - start, a_cpu - probe_cpu, "-", "-", "-"),
        ("Ray start-up (import ray + ray.init, bare)", start, probe_cpu, "-", "-", "-"),
        (
            "(b) 2 plain processes, no Ray",
            b_wall,
            b_cpu,
            util("b", "rusage_cpu"),
            util("b", "tree_cpu"),
            _pct(med(lambda r: r["b"]["machine_busy"])),
        ),
    ]
    lines = [
        "| measure | wall s | wall / (b) | CPU s | CPU / (b) | CPU util rusage | "
        "CPU util tree | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, sec, cpu, rus, tree, busy in rows:
        bare = name.startswith("Ray start-up")
        lines.append(
            f"| {name} | {_f(sec)} | {'-' if bare else _f(sec / b_wall, '.2f')} | "
            f"{_f(cpu)} | {'-' if bare else _f(cpu / b_cpu, '.2f')} | {rus} | {tree} | "
            f"{busy} |"
        )
    return "\n".join(lines)


def details(runs: list[dict[str, Any]], k: int) -> str:
    """The per-run breakdown printed under the table; long only because it lists every measure."""
    out = [""]
    for i, r in enumerate(runs, 1):
        a, b, p = r["a"], r["b"], r["probe"]
        ph = a["phases"]
        out.append(
            f"repeat {i} (order {r['order']}): (a) {a['wall_s']:.1f} s = pre-Ray "
            f"{_f(ph['pre_ray_s'])} + ray.init {_f(ph['ray_init_s'])} + Tuner set-up "
            f"{_f(ph['tuner_setup_s'])} + tuning loop {_f(ph['loop_s'])} + shutdown/"
            f"export {_f(ph['post_s'])} (Tune's total {_f(a['tune_total_s'])}); (b) "
            f"{b['wall_s']:.1f} s; bare Ray: import {p['import_s']:.1f} + init "
            f"{p['init_s']:.1f} (+ shutdown {p['shutdown_s']:.1f}) s; load after (a) "
            f"{a['load_after']:.2f}, after (b) {b['load_after']:.2f}"
        )
        out.append(
            f"  CPU s: (a) rusage {a['rusage_cpu']:.1f}, tree {a['tree_cpu']:.1f}, "
            f"machine {a['machine_busy_core_s']:.1f} core-s; (b) rusage "
            f"{b['rusage_cpu']:.1f}, tree {b['tree_cpu']:.1f}, machine "
            f"{b['machine_busy_core_s']:.1f} core-s"
        )

        def groups(d: dict[str, float]) -> str:
            return ", ".join(f"{lab} {v:.1f}" for lab, v in d.items() if v >= 0.05) or "-"

        out.append(f"  (a) CPU s by process, whole run (tree): {groups(a['cpu_by_process'])}")
        loop_cpu = a["loop_cpu_by_process"]
        if loop_cpu and math.isfinite(a["loop_s"]):
            cap = a["loop_s"] * CORES
            other = sum(loop_cpu.values()) - a["trainer_cpu"]
            out.append(
                f"  (a) during the tuning loop ({a['loop_s']:.1f} s x {CORES} cores = "
                f"{cap:.1f} core-s): trial processes {a['trainer_cpu']:.1f} "
                f"({a['trainer_cpu'] / cap:.0%}), everything else {other:.1f} "
                f"({other / cap:.0%}): {groups(loop_cpu)}"
            )
        ovh = a["trial_overheads"]
        if ovh:
            plain = _med([t["plain_gap_s"] for t in ovh])
            ckpt = _med([t["ckpt_gap_s"] for t in ovh])
            first = [t["first_gap_s"] for t in ovh]
            in_trial = sum(t["time_total_s"] - t["train_time_s"] for t in ovh)
            reports = sum(t["plain_gaps_sum_s"] for t in ovh)
            ckpts = sum(t["ckpt_gaps_sum_s"] for t in ovh)
            b_gap = _med([t["gap_s"] for t in b["per_seed"].values()])
            b_first = [t["first_gap_s"] for _, t in sorted(b["per_seed"].items())]
            out.append(
                f"  (a) in-trial time outside train_epoch (result.json, all trials): "
                f"{in_trial:.1f} s = first report {sum(first):.1f} (per trial "
                f"{' '.join(f'{x:.2f}' for x in first)}; (b) fit start to first epoch "
                f"end, less the epoch: {' '.join(f'{x:.2f}' for x in b_first)}) + "
                f"per-epoch report round trips "
                f"{reports:.1f} (median {_f(plain * 1000, '.0f')} ms/epoch; (b) fit's own "
                f"{_f(b_gap * 1000, '.1f')} ms) + checkpoint epochs {ckpts:.1f} (median "
                f"{_f(ckpt * 1000, '.0f')} ms, {sum(t['n_ckpt'] for t in ovh)} checkpoints)"
            )
            by_pid: dict[Any, list[dict]] = defaultdict(list)
            for t in sorted(ovh, key=lambda t: t["start"]):
                by_pid[t["pid"]].append(t)
            slots = []
            for pid, ts in by_pid.items():
                text = f"pid {pid}: {len(ts)} trials, {sum(t['time_total_s'] for t in ts):.1f} s in trials"
                if a.get("loop_start") is not None:
                    hand = [n["start"] - p["end"] for p, n in zip(ts, ts[1:])]
                    text += (
                        f" (first trial started {ts[0]['start'] - a['loop_start']:.1f} s "
                        f"into the loop, hand-over {' '.join(f'{h:.2f}' for h in hand) or '-'}"
                        f" s, last ended {a['loop_end'] - ts[-1]['end']:.1f} s before "
                        "the loop's end)"
                    )
                slots.append(text)
            out.append(
                "  (a) trial processes (trial end = its final checkpoint's mtime, start = "
                "end - time_total_s): " + "; ".join(slots)
            )
        out.append(
            f"  (b) workers started {' '.join(f'{x:.2f}' for x in b['worker_start_s'])} s "
            f"after spawn, imports {' '.join(f'{x:.1f}' for x in b['imports_s'])} s; fit "
            f"s per seed: " + " ".join(f"{s}:{t['fit_s']:.1f}" for s, t in sorted(b["per_seed"].items()))
        )
        for note in [*p["notes"], *a["notes"]]:
            out.append(f"  warning: {note}")

    out.append("")
    last = runs[-1]
    a_seed, b_seed = last["a"]["per_seed"], last["b"]["per_seed"]
    rel = max(
        abs(a_seed[s]["final_loss"] - b_seed[s]["final_loss"]) / max(abs(b_seed[s]["final_loss"]), 1e-12)
        for s in range(k)
    )
    same_epochs = all(a_seed[s]["epochs"] == b_seed[s]["epochs"] for s in range(k))
    a_sec = [sum(r["a"]["per_seed"][s]["seconds"] for s in range(k)) for r in runs]
    b_sec = [sum(r["b"]["per_seed"][s]["train_time_s"] for s in range(k)) for r in runs]
    out.append(
        "same work: per-seed final loss (a) vs (b) max rel diff "
        f"{rel:.1e} ({'ok' if rel <= 1e-6 else 'DIFFERENT'}), epochs "
        f"{'equal' if same_epochs else 'DIFFERENT'}; sum of per-trial training seconds "
        f"(a) {' '.join(f'{x:.1f}' for x in a_sec)} vs (b) "
        f"{' '.join(f'{x:.1f}' for x in b_sec)} (ratio {_med(a_sec) / _med(b_sec):.2f}"
        + (
            "; differ by > 15%: the arms did not run at the same speed per epoch)"
            if abs(_med(a_sec) / _med(b_sec) - 1) > 0.15
            else ")"
        )
    )
    trial_cpu = _med(
        [
            sum(v for lab, v in r["a"]["cpu_by_process"].items() if lab.startswith("ray::ImplicitFunc"))
            for r in runs
        ]
    )
    out.append(
        f"CPU s of the processes that trained: (a) trial processes {trial_cpu:.1f} vs (b) "
        f"plain workers {_med([r['b']['tree_cpu'] for r in runs]):.1f} (both include "
        "their imports; the difference is Ray's share inside the trial processes)"
    )
    loop_ratio = _med([r["a"]["loop_s"] / r["b"]["wall_s"] for r in runs])
    net_ratio = _med([(r["a"]["wall_s"] - r["probe"]["startup_s"]) / r["b"]["wall_s"] for r in runs])
    out.append(
        f"ratio (a) tuning loop / (b) = {loop_ratio:.2f} -> goal <= {RATIO_GOAL:.2f} "
        + ("met" if loop_ratio <= RATIO_GOAL else "NOT met")
        + f"; ratio ((a) end to end - Ray start-up) / (b) = {net_ratio:.2f}"
    )
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Both arms, repeated and alternated, then the table (a linear script: long, not deep)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K=4 tiny trials (< 1 min)")
    p.add_argument("--trials", type=int, help="K (default 6, quick 4)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 40, quick 20)")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the arms this many times, alternating their order; medians",
    )
    p.add_argument("--json", help="also write every raw number to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, results)")
    p.add_argument("--worker", metavar="SPACE", help=argparse.SUPPRESS)
    p.add_argument("--seeds", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, [int(s) for s in args.seeds.split(",") if s], args.out)
        return 0

    mode = "quick" if args.quick else "full"
    s = dict(SETTINGS[mode], checkpoint_every=args.checkpoint_every)
    if args.trials:
        s["trials"] = args.trials
    if args.epochs:
        s["epochs"] = args.epochs
    k = s["trials"]
    load1 = os.getloadavg()[0]
    print(header(s, mode, args.repeats), flush=True)
    if load1 > LOAD_WARN:
        print(
            f"WARNING: 1-minute load average {load1:.2f} > {LOAD_WARN} at start: something else "
            "is using the CPUs; the numbers below are not trustworthy.",
            flush=True,
        )

    import yaml

    from tuner.space import load_space

    # Short path: Ray's Unix sockets live under RAY_TMPDIR (107-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="bsearch_", dir="/tmp" if os.path.isdir("/tmp") else None))
    ray_tmp = tmp / "r"
    ray_tmp.mkdir()
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(space_document(s), sort_keys=False))
    load_space(space)  # fails here, in one line, if the generated file is wrong
    start = time.perf_counter()
    runs = []
    try:
        for i in range(args.repeats):
            order = "ab" if i % 2 == 0 else "ba"
            run: dict[str, Any] = {"order": order}
            run["probe"] = ray_probe(ray_tmp)
            print(f"  ray start-up (bare): {run['probe']['startup_s']:.1f} s", file=sys.stderr, flush=True)
            for arm in order:
                if arm == "a":
                    run["a"] = run_search(space, tmp, ray_tmp, k)
                    print(
                        f"  (a) search: {run['a']['wall_s']:.1f} s (loop {run['a']['loop_s']:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    run["b"] = run_plain(space, tmp, ray_tmp, k)
                    print(f"  (b) plain: {run['b']['wall_s']:.1f} s", file=sys.stderr, flush=True)
            runs.append(run)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(table(runs))
    print(details(runs, k))
    print(f"total benchmark wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": s, "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
