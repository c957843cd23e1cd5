"""The study folder's guard: one search at a time, nothing overwritten, nothing untrusted loaded.

One command claims its study folder (`claim`) before it looks at what the folder holds and
keeps the claim to its end (`release`):

- an exclusive OS lock (`flock` on the folder; on filesystems without it, such as some NFS
  mounts, a POSIX lock on `.lock` inside it), released by the kernel if the process dies;
- a folder this command created is removed again when the command fails before its search
  started (`abandon`), so the corrected command is not refused with "already exists";
- `read_state` refuses a corrupt `study_state.json`; `check_new` a folder that holds files but
  is no study (they are never overwritten); `check_extend` an `--extend` whose space differs from
  the study's `study.yaml`, one on an interrupted study, or one with a corrupt `optuna.db`;
- `check_trust` does what OpenSSH's StrictModes does before `--resume` unpickles Ray's
  `tuner.pkl` and the searcher state: the folder and every pickle must be owned by this user
  and writable by nobody else, unless `--trust-study-files` says otherwise;
- `storage` gives Optuna's SQLite storage a URL that pickles as "the study folder's optuna.db",
  so a study folder that was moved or copied resumes against its own database.

Every refusal is a ConfigError: one line, exit code 2.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

from tuner.core.config import ConfigError

STATE_FILE = "study_state.json"
LOCK_FILE = ".lock"
EXPERIMENT_KEYS = {"name": str, "num_samples": int, "seed": int, "finished": bool, "why": str}
"""Keys every experiment record must have (newer records also hold `folder`, where it ran)."""
EXTEND_MAY_CHANGE = (("search", "num_samples"), ("search", "time_budget_s"), ("search", "timestep_budget"))
"""What an --extend may set differently from the study (the new experiment's own budget)."""
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL}


NAME_MAX = 100
_NAME = re.compile(r"[\w][\w.+=-]*")


def check_name(name: str) -> None:
    """A study name every filesystem takes: at most NAME_MAX characters (and 200 bytes) of
    letters, digits and . _ - + =, not starting with . or -."""
    if len(name) > NAME_MAX or len(name.encode()) > 2 * NAME_MAX or not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConfigError(
            f"name: got {shown!r} ({len(name)} characters); allowed: up to "
            f"{NAME_MAX} letters, digits and . _ - + =, starting with a letter, "
            "digit or _"
        )


class _Claim:
    def __init__(self, folder: Path, fd: int, created: bool) -> None:
        self.folder, self.fd, self.created, self.started = folder, fd, created, False


_claims: dict[Path, _Claim] = {}
_current: list[Path] = []
"""The study folder whose pickles are being restored (read by `StudyStorage.__setstate__`)."""


def claim(folder: Path) -> None:
    """Create `folder` if needed and lock it for this process; ConfigError if another search
    holds it, if it is a file, or if it cannot be locked at all."""
    folder = Path(folder)
    if folder in _claims:
        return
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{folder}: is a file, not a study folder; allowed: another --name or --results-dir"
        )
    created = False
    try:
        folder.mkdir()
        created = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create ({exc.strerror or exc})") from None
    fd = -1
    try:
        fd = _lock(folder)
    finally:
        if fd < 0 and created:
            shutil.rmtree(folder, ignore_errors=True)
    _claims[folder] = _Claim(folder, fd, created)


def _lock(folder: Path) -> int:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise _busy(folder) from None
        if exc.errno not in _NO_FLOCK:
            raise ConfigError(
                f"{folder}: cannot lock ({exc.strerror}); allowed: a folder on a filesystem with file locks"
            ) from None
    try:  # NFS and friends: a POSIX record lock on a file inside the folder
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot lock ({exc.strerror}); allowed: a writable folder "
            "on a filesystem with file locks"
        ) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _busy(folder) from None
        raise ConfigError(
            f"{folder}: cannot lock ({exc.strerror}); allowed: a folder on a "
            "filesystem with file locks (local disk, or NFS with its lock "
            "service)"
        ) from None


def _busy(folder: Path) -> ConfigError:
    return ConfigError(
        f"{folder}: another search is running on this study now; allowed: "
        "wait for it to end, or another --name"
    )


def started(folder: Path) -> None:
    """The search has begun: from now on a failure keeps what was written (it can resume)."""
    if folder in _claims:
        _claims[folder].started = True


def abandon() -> None:
    """After a failure: remove every folder this process created and whose search never
    started (nothing in it is the user's)."""
    for c in _claims.values():
        if c.created and not c.started:
            shutil.rmtree(c.folder, ignore_errors=True)


def release() -> None:
    """Drop every claim of this process (the kernel also does it when the process dies)."""
    for c in list(_claims.values()):
        try:
            os.close(c.fd)
        except OSError:
            pass
    _claims.clear()
    _current.clear()


# ---------------------------------------------------------------- what the folder holds


def read_state(folder: Path) -> dict[str, Any]:
    """The study's record of experiments ({"experiments": []} when there is none), checked."""
    path = folder / STATE_FILE
    if not path.exists():
        return {"experiments": []}
    bad = (
        f"{path}: corrupt study record ({{}}); allowed: the file tuner.search writes (restore "
        "it from a backup, or move the study folder away and start again)"
    )
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(bad.format(exc.__class__.__name__)) from None
    if not isinstance(state, dict) or not isinstance(state.get("experiments"), list):
        raise ConfigError(bad.format("no list of experiments"))
    for i, exp in enumerate(state["experiments"]):
        if not isinstance(exp, dict) or any(
            not isinstance(exp.get(k), t) or (t is int and isinstance(exp.get(k), bool))
            for k, t in EXPERIMENT_KEYS.items()
        ):
            raise ConfigError(bad.format(f"experiment {i} lacks " + ", ".join(EXPERIMENT_KEYS)))
    return state


def check_new(folder: Path) -> None:
    """A new study may only start in an empty folder: files without a study record would be
    overwritten."""
    found = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) if folder.is_dir() else []
    if found and not (folder / STATE_FILE).exists():
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ConfigError(
            f"{folder}: holds files ({shown}) but no {STATE_FILE}, so it is no "
            "study of this program; nothing there is overwritten; allowed: another "
            "--name or an empty folder"
        )


def _differences(old: Any, new: Any, path: tuple = ()) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), path + (key,))
        return out
    if path in EXTEND_MAY_CHANGE or old == new:
        return []
    return [".".join(map(str, path))]


def check_extend(folder: Path, raw: dict[str, Any], state: dict[str, Any], uses_optuna: bool) -> None:
    """--extend only continues the study as it was: the same space and settings (see
    EXTEND_MAY_CHANGE), its last experiment finished, its Optuna database readable."""
    from tuner.core.config import read_yaml

    last = state["experiments"][-1]
    if not last["finished"]:
        raise ConfigError(
            f"--extend: experiment {last['name']!r} of {folder.name!r} was "
            "interrupted; allowed: run --resume first, then --extend"
        )
    from tuner.core.config import STUDY_RECORD

    recorded = {k: v for k, v in read_yaml(folder / "study.yaml").items() if k not in (*STUDY_RECORD, "name")}
    changed = _differences(recorded, {k: v for k, v in raw.items() if k != "name"})
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(
            f"--extend: the space and settings differ from the study's "
            f"study.yaml at {shown}; allowed: the study's own space "
            f"(--space {folder / 'study.yaml'}) with no other overrides"
        )
    if uses_optuna:
        check_database(folder / "optuna.db")


def check_database(path: Path) -> None:
    """The Optuna SQLite file opens and passes SQLite's quick check (read-only)."""
    if not path.exists():
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            con.execute("SELECT count(*) FROM studies").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        ok, why = False, str(exc)
    else:
        why = "integrity check failed"
    if not ok:
        raise ConfigError(
            f"{path}: not a readable Optuna database ({why}); allowed: the "
            "file the study wrote (restore it from a backup)"
        )


# ---------------------------------------------------------------- trust before unpickling


def _untrusted(path: Path) -> str:
    try:
        st = path.lstat()
    except OSError:
        return ""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not you (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def check_trust(folder: Path, experiment: str) -> None:
    """Refuse to resume from pickles that someone else could have written (StrictModes)."""
    exp = folder / "ray" / experiment
    paths = [folder, folder / "ray", exp, *sorted(exp.rglob("*.pkl"))] if exp.is_dir() else [folder]
    for path in paths:
        why = _untrusted(path)
        if why:
            raise ConfigError(
                f"--resume: {path} {why}; resuming unpickles it, which runs code "
                "as you; allowed: files only you can write (chmod -R go-w, "
                "chown), or --trust-study-files to resume anyway"
            )


def check_moved(folder: Path, experiment: dict[str, Any], trials: int) -> None:
    """A study moved or copied since its experiment started resumes only when every trial of
    it exists already: Ray 2.60 restores the trials it has at the new place, but gives trials
    its searcher creates after the resume the experiment's old storage path (they fail, or
    write into the original)."""
    old = experiment.get("folder")
    if not old or Path(old) == Path(folder).resolve():
        return
    made = len(list((folder / "ray" / experiment["name"]).glob("trial_*")))
    if made < trials:
        raise ConfigError(
            f"--resume: this study was moved from {old} with {trials - made} of "
            f"{trials} trials not yet started, which Ray would write to the old "
            f"place; allowed: move it back to {old} to resume (a finished study "
            "can be moved and extended freely)"
        )


# ---------------------------------------------------------------- a relocatable Optuna database


def storage(folder: Path):
    """Optuna storage on `folder/optuna.db` that, when unpickled from Tune's searcher state
    during a resume, opens the resumed folder's database instead of the path it was saved at."""
    return __getattr__("StudyStorage")(f"sqlite:///{Path(folder).resolve() / 'optuna.db'}")


def resuming(folder: Path) -> None:
    """Say which study folder the pickles being restored belong to (before Tuner.restore)."""
    _current[:] = [Path(folder).resolve()]


def resuming_folder() -> Path | None:
    """The study folder set by `resuming` (None outside a resume)."""
    return _current[0] if _current else None


def _make_study_storage():
    from optuna.storages import RDBStorage

    class StudyStorage(RDBStorage):
        """RDBStorage whose pickled URL is re-pointed at the study folder being resumed."""

        def __setstate__(self, state: dict[str, Any]) -> None:
            if _current and str(state.get("url", "")).startswith("sqlite:///"):
                state = {**state, "url": f"sqlite:///{_current[0] / 'optuna.db'}"}
            super().__setstate__(state)

    StudyStorage.__module__ = __name__
    StudyStorage.__qualname__ = "StudyStorage"
    return StudyStorage


def __getattr__(name: str) -> Any:
    """`StudyStorage` is built on first use, so importing this module does not import Optuna."""
    if name == "StudyStorage":
        cls = globals().get("_StudyStorage") or _make_study_storage()
        globals()["_StudyStorage"] = cls
        return cls
    raise AttributeError(name)
