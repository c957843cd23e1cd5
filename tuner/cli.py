"""`lstm-tuner COMMAND ...`: the console entry point, one word per `python -m tuner.COMMAND`.

Each command is the same module the `python -m` form runs; this file only dispatches, so a
command's flags, help and exit codes are defined in one place.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "search": ("tuner.search", "run a hyperparameter search (Ray Tune + Optuna)"),
    "train": ("tuner.train", "one training run, no Ray"),
    "report": ("tuner.report", "make a study's report again from its files"),
    "keys": ("tuner.keys", "list every config key with its default and doc"),
}

USAGE = (
    "usage: lstm-tuner {"
    + ",".join(COMMANDS)
    + "} [--help] ...\n\n"
    + "\n".join(f"  {name:<8}{doc}" for name, (_, doc) in COMMANDS.items())
    + (
        "\n\nexamples:\n  lstm-tuner search --space search_spaces/full.yaml\n"
        "  lstm-tuner search --space search_spaces/smoke.yaml --smoke\n"
        "  lstm-tuner train --config results/full/best_config.yaml --epochs 20\n"
    )
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
