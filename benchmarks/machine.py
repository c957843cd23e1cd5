"""The machine line every benchmark prints above its table, so numbers carry their context."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def machine_line(*packages: str) -> str:
    """'machine: CPU | cores | load | Python | pkg versions...'."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = " | ".join(f"{p} {version(p)}" for p in packages)
    return (
        f"machine: {cpu_model()} | {os.cpu_count()} logical cores ({usable} usable) | "
        f"load avg {load} | Python {platform.python_version()} | {versions}"
    )
