"""Rules of the plateau-driven chunk schedule (tuner.core.schedule.ChunkSchedule)."""

from __future__ import annotations

import json
import math

import pytest

from tuner.core.config import ScheduleConfig
from tuner.core.schedule import ChunkSchedule


def make(chunks: tuple[int, ...] = (100, 50, 10), patience: int = 3, min_delta: float = 0.0) -> ChunkSchedule:
    return ChunkSchedule(ScheduleConfig(chunks=chunks, patience=patience, min_delta=min_delta))


def test_starts_at_first_stage_with_infinite_best() -> None:
    # Rule: before any epoch, stage 0, N = chunks[0], best = inf, no count.
    s = make()
    assert (s.stage, s.chunks, s.best, s.since_improvement) == (0, 100, math.inf, 0)


def test_advances_exactly_after_patience_non_improving_epochs() -> None:
    # Rule: the move happens on the patience-th non-improving epoch, not one earlier.
    s = make(patience=3)
    assert s.step(1.0) is False  # improves on inf
    assert [s.step(1.0), s.step(1.0)] == [False, False]
    assert (s.stage, s.since_improvement) == (0, 2)
    assert s.step(1.0) is True
    assert (s.stage, s.chunks, s.since_improvement) == (1, 50, 0)


def test_improvement_resets_the_count() -> None:
    # Rule: an improving epoch sets best and restarts the count at 0.
    s = make(patience=3)
    s.step(1.0)
    s.step(1.1)
    s.step(1.2)
    assert s.step(0.9) is False
    assert (s.best, s.since_improvement, s.stage) == (0.9, 0, 0)
    assert [s.step(1.0), s.step(1.0), s.step(1.0)] == [False, False, True]


def test_min_delta_is_respected() -> None:
    # Rule: improvement needs loss < best - min_delta; a smaller drop counts as no improvement.
    s = make(patience=2, min_delta=0.1)
    s.step(1.0)
    assert s.step(0.95) is False and s.best == 1.0 and s.since_improvement == 1
    assert s.step(0.9) is True  # 0.9 is not < 1.0 - 0.1 (exactly at the margin): advance
    s.step(0.85)
    assert s.best == 0.85 and s.since_improvement == 0


def test_best_is_kept_across_stages_and_patience_counts_afresh() -> None:
    # Rule: a new stage keeps the best loss and starts its own patience count at 0.
    s = make(patience=2)
    s.step(1.0)
    s.step(2.0)
    assert s.step(2.0) is True
    assert s.best == 1.0 and s.since_improvement == 0
    assert s.step(1.5) is False  # worse than the kept best: not an improvement
    assert s.since_improvement == 1
    assert s.step(1.5) is True and s.stage == 2


def test_stays_on_last_stage_forever() -> None:
    # Rule: on the last stage the count grows but the stage never advances.
    s = make(chunks=(4, 1), patience=2)
    s.step(1.0)
    advanced = [s.step(1.0) for _ in range(20)]
    assert advanced.count(True) == 1
    assert (s.stage, s.chunks, s.at_last_stage) == (1, 1, True)
    assert s.since_improvement == 18


def test_fixed_n_never_advances() -> None:
    # Rule: a one-element chunks tuple is a fixed N.
    s = make(chunks=(7,), patience=1)
    assert not any(s.step(5.0) for _ in range(10))
    assert (s.stage, s.chunks) == (0, 7)


def test_nan_loss_counts_as_non_improving() -> None:
    # Rule: a NaN loss never improves.
    s = make(patience=2)
    s.step(1.0)
    s.step(math.nan)
    assert s.best == 1.0 and s.since_improvement == 1


@pytest.mark.parametrize("warm_epochs", [0, 4])
def test_state_round_trip_continues_identically(warm_epochs: int) -> None:
    # Rule: state_dict is JSON-able and a restored schedule behaves exactly like the original.
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7]
    a = make(patience=3, min_delta=0.01)
    for x in losses[:warm_epochs]:
        a.step(x)
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))
    b = make(patience=3, min_delta=0.01)
    b.load_state_dict(state)
    for x in losses[warm_epochs:]:
        assert a.step(x) == b.step(x)
        assert (a.stage, a.chunks, a.best, a.since_improvement) == (
            b.stage,
            b.chunks,
            b.best,
            b.since_improvement,
        )


def test_load_rejects_state_from_other_chunks() -> None:
    # Rule: resuming under a different schedule fails loudly instead of mislabelling stages.
    state = make(chunks=(100, 50)).state_dict()
    with pytest.raises(ValueError, match="chunks"):
        make(chunks=(100, 10)).load_state_dict(state)


def test_schedule_min_stage_jumps_forward_on_restore():
    # Rule: min_stage (PBT's stage mutation) moves a restored schedule forward, never back,
    # clamped to the last stage.
    from tuner.core.config import ScheduleConfig

    saved = ChunkSchedule(ScheduleConfig(chunks=(100, 10, 1), patience=3)).state_dict()
    jumped = ChunkSchedule(ScheduleConfig(chunks=(100, 10, 1), patience=3, min_stage=1))
    jumped.load_state_dict(saved)
    assert (jumped.stage, jumped.chunks) == (1, 10)
    later = dict(saved, stage=2)
    jumped.load_state_dict(later)
    assert jumped.stage == 2
    clamped = ChunkSchedule(ScheduleConfig(chunks=(100, 10), patience=3, min_stage=7))
    assert clamped.chunks == 10
