"""tuner.tuning's decisions on constructed cases: the time-step budget and why a search ended."""

from __future__ import annotations

from types import SimpleNamespace

from tuner.space.sections import SearchSpec
from tuner.tuning import timestep_budget, why_finished


def test_timestep_budget_stops_all_once_the_trials_latest_counts_add_up():
    # Rule: each trial's `timesteps` is its cumulative count, so the spend is the sum of every
    # trial's latest value (not of every result); the search stops at the result that reaches it.
    stopper = timestep_budget(1000)
    assert stopper("a", {"timesteps": 300}) is False and not stopper.stop_all()
    assert stopper("a", {"timesteps": 600}) is False and not stopper.stop_all()  # 600, not 900
    stopper("b", {"timesteps": 399})
    assert not stopper.stop_all()  # 999
    stopper("b", {"timesteps": 400})
    assert stopper.stop_all()  # 1000
    stopper("c", {})  # a result without timesteps counts 0
    assert stopper.stop_all()


def _plan(**search) -> SimpleNamespace:
    spec = SimpleNamespace(search=SearchSpec(**search), uses_variant_generator=False)
    return SimpleNamespace(spec=spec, num_samples=search.get("num_samples", 16))


class _Grid(list):
    """A ResultGrid's public surface: its results (metrics, error) and the two counts."""

    def __init__(self, metrics: list[dict], terminated: int | None = None) -> None:
        super().__init__(SimpleNamespace(metrics=m, error=None) for m in metrics)
        self.num_terminated = len(self) if terminated is None else terminated
        self.num_errors = 0


def test_why_finished_names_the_time_step_budget_even_with_trials_cut_or_pending():
    # Rule: once the trials' summed time steps reach search.timestep_budget the search is over
    # (exit 0, not "continue with --resume"), though the stopper cut running trials mid-run
    # and a searcher's next trial may still be pending; below the budget those same trials
    # mean an interrupted search.
    cut = [{"timesteps": 600, "done": True}, {"timesteps": 500}]  # the second was cut mid-run
    assert why_finished(_plan(timestep_budget=1000), _Grid(cut, terminated=1), 1.0) == (
        "its time-step budget (1,000) ran out"
    )
    assert why_finished(_plan(timestep_budget=2000), _Grid(cut, terminated=1), 1.0) == ""
    assert why_finished(_plan(), _Grid(cut), 1.0) == ""
    done = [{"timesteps": 600, "done": True}, {"timesteps": 500, "finished": True}]
    assert why_finished(_plan(num_samples=2), _Grid(done), 1.0) == "all 2 trials ran"
