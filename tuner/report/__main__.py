"""``python -m tuner.report results/NAME [--out DIR]``."""

from tuner.report.cli import main

raise SystemExit(main())
