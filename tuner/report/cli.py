"""``python -m tuner.report results/NAME [--out DIR]``: exit 0, or 2 with one line on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tuner.report.build import make_report
from tuner.report.load import ReportError


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m tuner.report results/NAME [--out DIR]``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m tuner.report",
        description="Write report.md and plots/*.png for a study folder (results/NAME).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m tuner.report results/seed_ablation_small\n"
        "  python -m tuner.report results/full --out /tmp/full-report\n"
        "  lstm-tuner report results/full",
    )
    parser.add_argument("study_dir", help="the study folder holding trials.csv, epochs.csv, study.yaml")
    parser.add_argument("--out", default=None, help="output folder (default: the study folder)")
    args = parser.parse_args(argv)
    try:
        report = make_report(args.study_dir, args.out)
    except ReportError as exc:
        print(f"tuner.report: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0
