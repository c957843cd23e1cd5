"""Opt-in trackers where users already look: MLflow runs and TensorBoard event files.

MLflow: one experiment per study (named after it), one run per trial, tagged `tuner.trial_id`.
The run of a trial is found by that tag, never remembered in memory only, so a driver that is
killed and resumed (`--resume`) continues each trial's run instead of starting a second one, and
epochs that Tune re-runs after such a restore are not logged twice (steps already in the run are
skipped). Ray's `MLflowLoggerCallback` keeps its trial -> run map in memory and would open a new
run per trial after a restore, hence this callback.

TensorBoard: Tune's own TBX logger, writing next to each trial's result.json under `ray/`.
"""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path
from typing import Any

from tuner.core.config import ConfigError
from tuner.core.metrics import EPOCH_COLUMNS

TRIAL_TAG = "tuner.trial_id"
BEST_TAG = "tuner.best"
STATUS_TAG = "tuner.status"
METRICS = (*EPOCH_COLUMNS, "objective")
"""Logged per epoch (step = epoch)."""
FINAL_STATUS = {
    "completed": "FINISHED",
    "early_stopped": "FINISHED",
    "diverged": "FINISHED",
    "error": "FAILED",
}
"""trials.csv status -> MLflow run status (anything else, e.g. interrupted: KILLED)."""


def require(module: str, flag: str, extra: str) -> None:
    """A one-line ConfigError naming the pip extra when an optional package is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{flag}: needs the {module} package, which is not installed; "
            f'allowed: install it with pip install -e ".[{extra}]", or leave '
            f"{flag} off"
        ) from None


def tracking_uri(setting: str, study_dir: Path) -> str:
    """'local' -> SQLite `mlflow.db` in the study folder; anything else is a URI as given.

    Not a `mlruns/` file store: MLflow 3 refuses that backend unless MLFLOW_ALLOW_FILE_STORE
    is set (maintenance mode), so `mlflow ui` would need the same variable."""
    return f"sqlite:///{study_dir / 'mlflow.db'}" if setting == "local" else setting


def artifact_location(setting: str, study_dir: Path) -> str | None:
    """Where a local study's runs keep their artifacts: `mlartifacts/` in the study folder
    (MLflow's default is ./mlruns under the working directory)."""
    return (study_dir / "mlartifacts").as_uri() if setting == "local" else None


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config -> {dotted key: text}; lists as 'a,b' (as trials.csv writes them)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return out


class MlflowStudy:
    """The study's MLflow experiment through MLflow's client (no global active run)."""

    def __init__(self, uri: str, name: str, artifacts: str | None = None) -> None:
        """Opens (or creates, with artifacts at `artifacts`) the experiment `name` at `uri`.

        The first use of a SQLite URI creates its tables (seconds): done once, before Tune."""
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(name, artifact_location=artifacts)
        )

    def runs(self) -> dict[str, Any]:
        """{trial_id: Run} of every run of this study's trials."""
        out, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            out.update({r.data.tags[TRIAL_TAG]: r for r in page if TRIAL_TAG in r.data.tags})
            token = page.token
            if not token:
                return out

    def open_run(self, trial_id: str, experiment: str, params: dict[str, str]) -> tuple[str, int]:
        """(run id, last epoch already logged) of the trial's run, created if it has none."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'"
        )
        if found:
            run = found[0]
            history = self.client.get_metric_history(run.info.run_id, "epoch")
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, max((int(m.step) for m in history), default=0)
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial_{trial_id}",
            tags={TRIAL_TAG: trial_id, "tuner.experiment": experiment},
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        return run.info.run_id, 0

    def log_epoch(self, run_id: str, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(result["epoch"])
        metrics = [
            Metric(k, float(result[k]), now, step)
            for k in METRICS
            if isinstance(result.get(k), (int, float))
            and not isinstance(result[k], bool)
            and not math.isnan(result[k])
        ]
        self.client.log_batch(run_id, metrics=metrics)

    def finish(self, trials, best_id: str | None, best_config: Path) -> None:
        """End every run with its trial's status (tag and run status); tag and attach the best."""
        runs = self.runs()
        for row in trials.to_dict("records"):
            run = runs.get(str(row["trial_id"]))
            if run is None:
                continue
            run_id = run.info.run_id
            self.client.set_tag(run_id, STATUS_TAG, row["status"])
            self.client.set_terminated(run_id, FINAL_STATUS.get(row["status"], "KILLED"))
            if str(row["trial_id"]) == best_id:
                self.client.set_tag(run_id, BEST_TAG, "true")
                if best_config.exists():
                    self.client.log_artifact(run_id, str(best_config))
            elif run.data.tags.get(BEST_TAG) == "true":  # an --extend found a better one
                self.client.delete_tag(run_id, BEST_TAG)


def mlflow_callback(uri: str, study_name: str, experiment: str, spec):
    """A Tune callback: one MLflow run per trial, its config as params, each epoch as a step."""
    from ray import tune

    from tuner.space import resolve

    class MlflowRuns(tune.Callback):
        def __init__(self) -> None:
            self._study: MlflowStudy | None = None
            self._runs: dict[str, list] = {}  # trial_id -> [run_id, last logged epoch]

        def __getstate__(self):  # pickled with the Tuner: the client and its runs stay behind
            return {"runs": "found again by tag"}

        def __setstate__(self, state) -> None:
            self.__init__()

        def _run(self, trial) -> list:
            entry = self._runs.get(trial.trial_id)
            if entry is None:
                if self._study is None:
                    self._study = MlflowStudy(uri, study_name)
                config, _ = resolve(spec, trial.config)
                entry = list(self._study.open_run(trial.trial_id, experiment, flat_params(config.to_dict())))
                self._runs[trial.trial_id] = entry
            return entry

        def on_trial_start(self, iteration, trials, trial, **info):
            self._run(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            entry = self._run(trial)
            if "epoch" in result and int(result["epoch"]) > entry[1]:
                self._study.log_epoch(entry[0], result)
                entry[1] = int(result["epoch"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._study.client.set_terminated(self._run(trial)[0], "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._study.client.set_terminated(self._run(trial)[0], "FAILED")

    return MlflowRuns()


def tensorboard_callback():
    """Tune's TBX logger: per-trial scalars as TensorBoard event files in the trial folders."""
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()
