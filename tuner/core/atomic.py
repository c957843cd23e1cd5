"""Atomic file writes: a reader (or a crash) only ever sees the old whole file or the new one.

The one writer of the project: the trial tables, the report and its plots, and the training
checkpoints all go through `atomic_write_bytes` (temporary file in the same folder, fsync, then
`os.replace`, which is atomic on POSIX file systems). Part of the core, which imports nothing
above it, so the checkpoint writer can use it too.

The temporary file is created with mode 0o666 and the kernel applies the process umask, so the
result has ordinary file permissions (not mkstemp's 0o600) without reading or setting the umask.
A writer killed by SIGKILL runs no cleanup, so its temporary is removed by the next write of the
same path once it is older than `STALE_TEMP_S`.
"""

from __future__ import annotations

import glob
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

STALE_TEMP_S = 600.0
"""A temporary file older than this was left by a killed writer (a live one exists for the
seconds of one write)."""


def _remove_stale_temps(path: Path) -> None:
    """Delete temporaries of `path` that a killed writer left."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except OSError:
            continue


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(fh)` on a temporary file beside `path`, then rename it onto `path`.

    The folder is created when missing. On any failure the temporary is removed and `path` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
