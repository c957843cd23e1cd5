"""`python -m tuner.search --space FILE.yaml`: Ray Tune trials of the training core, searched by Optuna.

The flow: validate the space file (and data) before anything starts -> start or join Ray ->
Tuner(trainable, OptunaSearch | Tune's variant generator, ASHA | median | PBT | FIFO) -> tables
rewritten while it runs -> trials.csv, epochs.csv, best_config.yaml, study.yaml, report.md.

A study folder `results/NAME/` holds everything: Tune's experiments under `ray/` (`search`, then
`extend-1`, ... for each `--extend`), the Optuna study in `optuna.db`, and the exported tables.

This module is the command line only: flags -> `tuner.api.SearchOptions` -> `tuner.api.run`.
The work is done in tuner.study (plan, state, files), tuner.cluster (Ray), tuner.tuning (Tune)
and tuner.tracking (MLflow, TensorBoard).
"""

from __future__ import annotations

import argparse
import os
import sys

from tuner.core.config import ConfigError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each flag's default and keeps the examples' line breaks.

    No "(default: ...)" where it says nothing: no default, an on/off flag (`--no-report` would
    read "default: True"), or a help text that already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if action.default is None or switch or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse that answers bad flags with one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see python -m tuner.search --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m tuner.search",
        description="Search how to train the chunked LSTM fastest (Ray Tune + Optuna).",
        formatter_class=_Help,
        epilog="examples:\n"
        "  python -m tuner.search --space search_spaces/full.yaml\n"
        "  python -m tuner.search --space search_spaces/smoke.yaml --smoke-test --no-dashboard\n"
        "  python -m tuner.search --space search_spaces/full.yaml --name full --resume\n"
        "  python -m tuner.search --space search_spaces/full.yaml train.optimizer=adam --mlflow\n"
        "every config key and its default: python -m tuner.keys",
    )
    p.add_argument("--space", required=True, help="search space YAML, e.g. search_spaces/full.yaml")
    p.add_argument("--name", help="study name (default: the file's `name`)")
    p.add_argument("--results-dir", default="results", help="parent folder of study folders")
    p.add_argument("--num-samples", type=int, help="override search.num_samples")
    p.add_argument("--time-budget", type=float, help="override search.time_budget_s (seconds)")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="join a running cluster (auto or HOST:PORT); default: start Ray here",
    )
    p.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the Ray dashboard (local Ray only)",
    )
    p.add_argument("--dashboard-host", default="127.0.0.1", help="where the dashboard listens")
    p.add_argument("--dashboard-port", type=int, default=8265, help="the dashboard's port")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument(
        "--num-gpus",
        type=int,
        help="GPUs of the local Ray instance (default: those "
        "it finds; any number, e.g. logical GPUs on a CPU machine for tests)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted study")
    p.add_argument("--extend", type=int, metavar="N", help="run N more trials on a finished study")
    p.add_argument(
        "--smoke", "--smoke-test", action="store_true", help="tiny data and budget (about a minute)"
    )
    p.add_argument("--no-report", dest="report", action="store_false", help="skip report.md at the end")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="local",
        metavar="URI",
        help="log every trial as an MLflow run; URI default: local, the study's "
        'mlflow.db (needs pip install -e ".[mlflow]")',
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="TensorBoard event files per trial under the study's ray/ folder "
        '(needs pip install -e ".[tensorboard]")',
    )
    p.add_argument(
        "--trust-study-files",
        action="store_true",
        help="--resume even when the study's pickles are not yours alone",
    )
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.length=4000")
    args = p.parse_args(argv)
    if args.num_gpus is not None and (args.address or args.num_gpus < 0):
        with_address = " with --address (the cluster says what GPUs it has)" if args.address else ""
        p.error(f"--num-gpus: got {args.num_gpus}{with_address}; allowed: an integer >= 0, local Ray only")
    return args


def options(args: argparse.Namespace):
    """Parsed flags -> `tuner.api.SearchOptions` (the same names)."""
    from tuner.api import SearchOptions

    values = vars(args)
    values["overrides"] = tuple(values["overrides"])
    mlflow = values.get("mlflow")
    if mlflow and "=" in mlflow and "://" not in mlflow:  # `--mlflow key=value`: an override
        values.update(mlflow="local", overrides=(mlflow, *values["overrides"]))
    return SearchOptions(**values)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from tuner.api import run

    try:  # tuner.api.run removes what a failed start created and releases the study's lock
        study = run(options(args), argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if study.finished else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
