"""Checks that run before Ray starts, so a search that is doomed is never started.

Three kinds, each answering bad input with one ConfigError line:

- the data: the same checks a trial's data preparation makes (`tuner.core.prices.check_split` on
  the real file or the generated series), a relative `data.path` made absolute once (trials run
  in their own folders) so `study.yaml` records where the data is;
- numbers the space loader leaves open (it checks types, finiteness, seeds and signs): a
  reachable `search.target_loss`, resource amounts Ray can schedule, and the command's flags;
- memory: an estimate of one trial's data and model against the memory this machine has free,
  which refuses absurd sizes (`data.length=1e10`, a million units) before anything allocates.

Pure Python over the config and the space; imports neither Ray nor Optuna.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from tuner.core.config import Config, ConfigError

MAX_TRIALS = 10**6
"""Most trials (num_samples, --extend) one experiment may ask for."""
MAX_CPUS = 65536
"""Most CPUs a local Ray instance (--num-cpus) may be started with."""
RESOURCE_QUANTUM = 1e-4
"""Ray schedules fractional resources in steps of 0.0001; amounts above 1 must be whole."""


# ---------------------------------------------------------------- data


def absolute_data_path(spec: Any) -> Any:
    """The space with a relative `data.path` made absolute (from the current directory), in its
    base config and in the document written as study.yaml; unchanged otherwise."""
    path = (spec.base.get("data") or {}).get("path")
    if not path or Path(path).is_absolute() or "://" in str(path):
        return spec
    full = str(Path(path).resolve())
    base = {**spec.base, "data": {**spec.base["data"], "path": full}}
    raw = dict(spec.raw)
    if isinstance(raw.get("data"), dict):
        raw["data"] = {**raw["data"], "path": full}
    return dataclasses.replace(spec, base=base, raw=raw)


def check_data(config: Config) -> int:
    """Load or generate the series exactly as a trial does and run its checks (prices finite,
    positive and long enough; the hold-out leaves training data); returns the steps per epoch."""
    from tuner.core.prices import check_split, prices

    check_memory(config)
    series = prices(config.data)
    check_split(series, config.data)
    check_memory(config, [len(s) for s in series])
    return sum(len(s) - 1 for s in series)


# ---------------------------------------------------------------- memory


def available_bytes() -> int:
    """Memory this machine has available now (MemAvailable; free pages where /proc is absent)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 2**62  # unknown: do not refuse


def estimate_bytes(config: Config, lengths: list[int] | None = None) -> int:
    """A lower estimate of one trial's peak memory: data preparation (float64 prices, Q targets
    and differences, float32 tensors), the model with gradients and two optimizer moments, and
    the activations autograd keeps for the longest chunk of a batch."""
    d, m, t = config.data, config.model, config.train
    lengths = lengths or [d.length] * d.n_series
    n_series, steps = len(lengths), max(lengths) - 1
    actions = d.n_actions
    cells = n_series * steps
    data = cells * (8 * 3 + 8 * actions * 3 + 4 * (1 + actions) + 1)
    w, dn, u = d.window, m.dense_units, m.lstm_units
    params = (
        w * dn
        + dn * dn
        + 2 * dn
        + 4 * (dn * u + u * u + 2 * u)
        + 4 * (2 * u * u + 2 * u)
        + u * actions
        + actions
    )
    model = 4 * 4 * params
    batch = min(t.batch_series or n_series, n_series)
    chunk = math.ceil(steps / max(1, min(t.schedule.chunks)))
    held = min(chunk, m.lstm_segment) if m.lstm_segment else chunk
    activations = 4 * batch * (chunk * (w + 2 * dn) + held * 10 * u)
    return int(data + model + activations)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"  # pragma: no cover


def check_memory(config: Config, lengths: list[int] | None = None) -> None:
    """ConfigError when one trial's estimated memory exceeds what this machine has available."""
    need, have = estimate_bytes(config, lengths), available_bytes()
    if need > have:
        d, m = config.data, config.model
        sizes = (
            f"{len(lengths) if lengths else d.n_series} series x "
            f"{max(lengths) if lengths else d.length} steps, window {d.window}, "
            f"{m.dense_units}/{m.lstm_units} units"
        )
        raise ConfigError(
            f"data/model: one trial needs about {_size(need)} ({sizes}) but this "
            f"machine has {_size(have)} available; allowed: smaller data.length, "
            "data.n_series, data.window, model units or train.batch_series"
        )


# ---------------------------------------------------------------- search, resources, flags


def _resource(key: str, value: float, allow_zero: bool) -> None:
    if value == 0 and allow_zero:
        return
    steps = value / RESOURCE_QUANTUM
    if (
        value < RESOURCE_QUANTUM
        or abs(steps - round(steps)) > 1e-6
        or (value > 1 and value != int(value))
        or value > MAX_CPUS
    ):
        raise ConfigError(
            f"{key}: got {value:g}; allowed: "
            f"{'0 or ' if allow_zero else ''}a fraction of 1 in steps of 0.0001, "
            f"or a whole number up to {MAX_CPUS} (what Ray can schedule)"
        )


def check_spec(spec: Any) -> None:
    """Numbers of `search:` and `resources:` that the space loader accepts but Ray, Optuna or
    numpy would reject, or that can never be met."""
    s = spec.search
    if s.target_loss is not None and not s.target_loss > 0:
        raise ConfigError(
            f"search.target_loss: got {s.target_loss:g}; allowed: a loss > 0 "
            "(a mean squared error is never below 0)"
        )
    if s.num_samples > MAX_TRIALS:
        raise ConfigError(f"search.num_samples: got {s.num_samples}; allowed: 1 to {MAX_TRIALS}")
    if s.max_concurrent > MAX_CPUS:
        raise ConfigError(f"search.max_concurrent: got {s.max_concurrent}; allowed: 1 to {MAX_CPUS}")
    _resource("resources.cpu", spec.resources.cpu, allow_zero=False)
    _resource("resources.gpu", spec.resources.gpu, allow_zero=True)


def _port(flag: str, text: str) -> None:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{flag}: port {text!r}; allowed: 1 to 65535")


def check_flags(args: Any) -> None:
    """Ranges of the search command's flags (argparse checks only their types; --num-samples
    and --time-budget are checked as the search.* keys they set)."""
    if args.num_cpus is not None and not 1 <= args.num_cpus <= MAX_CPUS:
        raise ConfigError(f"--num-cpus: got {args.num_cpus}; allowed: 1 to {MAX_CPUS}")
    if args.extend is not None and not 1 <= args.extend <= MAX_TRIALS:
        raise ConfigError(f"--extend: got {args.extend}; allowed: an integer >= 1 and <= {MAX_TRIALS}")
    _port("--dashboard-port", str(args.dashboard_port))
    if args.address and args.address not in ("auto", "local"):
        address = args.address.split("://", 1)[-1]
        host, sep, port = address.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"--address: got {args.address!r}; allowed: auto or HOST:PORT")
        _port("--address", port)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""The HTTP/2 client preface and an empty SETTINGS frame."""


def probe_ray_head(address: str, timeout: float = 5.0) -> str:
    """Why `address` (HOST:PORT) is not a Ray head, or '' when it answers like one.

    A Ray head's GCS is a gRPC (HTTP/2) server: sent the HTTP/2 client preface, it answers with
    a SETTINGS frame. Without this probe, ray.init retries for minutes against a port where
    nothing (or something else) listens, inside native code no signal can interrupt."""
    import socket

    if address in ("auto", "local") or os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
        return ""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as exc:
        return f"nothing accepts connections there ({exc.strerror or exc.__class__.__name__})"
    try:
        sock.settimeout(timeout)
        sock.sendall(_HTTP2_PREFACE)
        head = sock.recv(9)
    except OSError:
        head = b""
    finally:
        sock.close()
    if len(head) < 9 or head[3] != 4:
        return "something listens there but does not answer like a Ray head (gRPC)"
    return ""
