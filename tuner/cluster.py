"""Ray for a search: start a local instance or join a cluster, and check a trial fits on a node."""

from __future__ import annotations

import os

from tuner.core.config import ConfigError
from tuner.space import SpaceFile


def start_ray(args) -> tuple[str | None, bool]:
    """Join `--address` or start a local instance (`args`: a `tuner.api.SearchOptions`).

    Returns (dashboard URL or None, whether this call started Ray and so must shut it down).
    An already initialised Ray (a notebook, a test session) is used as it is."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact one-table progress display
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Snapshot the experiment (and copy trial results to the study folder) every 2 s instead of
    # Tune's >= 10 s: a killed driver then loses, and a resume re-runs, at most 2 s of epochs.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        return None, False
    if args.address:
        from tuner.preflight import probe_ray_head

        why = probe_ray_head(args.address)  # at most 2 x 5 s, never a hang
        if why:
            raise ConfigError(
                f"--address: {args.address}: {why}; allowed: the address of a "
                "running Ray head (ray start --head)"
            )
        ctx = ray.init(address=args.address)
        return ctx.dashboard_url or None, True
    ctx = ray.init(
        address="local",
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        include_dashboard=args.dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
    )
    return (ctx.dashboard_url if args.dashboard else None), True


def check_resources(spec: SpaceFile) -> None:
    """A trial that fits on no node would wait forever: say so now, with what the cluster has."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    fits = any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes)
    if not fits:
        total = ray.cluster_resources()
        biggest = max((n.get("CPU", 0) for n in nodes), default=0)
        raise ConfigError(
            f"resources: a trial asks for {cpu:g} CPU and {gpu:g} GPU but no node has that "
            f"(cluster: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, "
            f"{total.get('GPU', 0):g} GPU, largest node {biggest:g} CPU); allowed: at most that"
        )
