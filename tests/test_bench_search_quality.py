"""benchmarks/bench_search_quality.py --quick end to end (a real process, real searches on real Ray).

Checks the outputs' shape, never their numbers: the numbers are the benchmark's to report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.ray  # starts several local Ray instances: deselect with -m "not ray"


def test_bench_search_quality_quick_writes_table_curves_and_clock(tmp_path, ray_session):
    # Rule: --quick runs the reference grid and every strategy through the real search and
    # writes one summary row per strategy (all four ran), one run row per
    # strategy and seed, both plots, the ASHA clock table and the goal line.
    out = tmp_path / "sq"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_search_quality.py"),
            "--quick",
            "--repeats",
            "1",
            "--out",
            str(out),
            "--address",  # every search joins the shared test Ray instead of starting its own
            ray_session.get_runtime_context().gcs_address,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["strategy"]) == ["(a) grid", "(b) random+ASHA", "(c) TPE+ASHA", "(d) TPE+ASHA+warm"]
    ran = summary[summary["repeats"] > 0]
    assert len(ran) == 4  # (d)'s warm start (search.start_from) runs too
    for col in ("reached", "to_target", "best_at_1/10", "best_at_1/3", "best_at_all", "trials", "wall_s"):
        assert ran[col].notna().all(), col
    runs = pd.read_csv(out / "runs.csv")
    ok = runs[runs["error"].isna()]
    # Every strategy ran until it had spent the grid's budget (then it was stopped).
    budget = float(ok.loc[ok["strategy"] == "(a) grid", "spent"].iloc[0])
    assert (ok["spent"] >= budget).all() and (ok["trials"] >= 1).all()
    assert (ok["to_target"] >= 0).all()
    clock = pd.read_csv(out / "asha_clock.csv")
    assert set(clock["clock"]) == {"timesteps", "train seconds", "updates"}
    assert len(clock) == 3 * 3 * 4 and set(clock["best_survives"]) <= {"yes", "no"}
    text = (out / "table.md").read_text()
    assert "machine:" in text and "goal: (c) or (d) reaches the target" in text
    assert (" met (" in text) or ("not met (" in text)
    for png in ("anytime.png", "anytime_seconds.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "work").exists()  # study folders go to a temporary folder
