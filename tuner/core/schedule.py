"""The chunk schedule of truncated BPTT: how many chunks N each series is cut into, per epoch.

The article starts with many short chunks (N=100) and moves to fewer, longer ones (50, 10, 2, 1)
"each time the loss has not improved for 20 epochs". `ChunkSchedule` is that rule as a small
state machine the trainer feeds one loss per epoch; it knows nothing about torch or the data.

Decisions (the article leaves them open):

* The best loss is kept across stages, not reset: an epoch in a new stage counts as an
  improvement only if it beats the best loss seen in any stage. A stage change alone never
  makes a worse loss look like progress.
* The patience count restarts at 0 on entering a new stage, so every stage gets `patience`
  epochs of its own before the next move (the count is never carried over).
* On the last stage the count keeps growing (a caller may use it for early stopping), but the
  schedule never advances past it. A one-element `chunks` is a fixed N that never advances.
* A NaN loss never improves (``nan < x`` is False), so it counts as a non-improving epoch.
"""

from __future__ import annotations

import math
from typing import Any

from tuner.core.config import ScheduleConfig


class ChunkSchedule:
    """Plateau-driven stage counter over `ScheduleConfig.chunks`; `chunks` is the current N."""

    def __init__(self, cfg: ScheduleConfig) -> None:
        self._chunks: tuple[int, ...] = tuple(int(n) for n in cfg.chunks)
        self._patience: int = int(cfg.patience)
        self._min_delta: float = float(cfg.min_delta)
        self._min_stage: int = min(int(cfg.min_stage), len(self._chunks) - 1)
        self._stage: int = self._min_stage
        self._best: float = math.inf
        self._since: int = 0

    @property
    def stage(self) -> int:
        """Index of the current stage in the configured chunk counts (0-based)."""
        return self._stage

    @property
    def chunks(self) -> int:
        """The chunk count N to use for the next epoch."""
        return self._chunks[self._stage]

    @property
    def best(self) -> float:
        """The best (lowest) epoch loss seen so far in any stage; inf before the first epoch."""
        return self._best

    @property
    def since_improvement(self) -> int:
        """Epochs since the last improvement, counted afresh from 0 in each new stage."""
        return self._since

    @property
    def at_last_stage(self) -> bool:
        """True when there is no further stage to move to (always True for a fixed N)."""
        return self._stage == len(self._chunks) - 1

    def step(self, loss: float) -> bool:
        """Record one epoch's loss; return True when this epoch moved the schedule to a new stage.

        An epoch improves when ``loss < best - min_delta``. After `patience` consecutive
        non-improving epochs in a stage the schedule advances, unless it is on the last stage.
        """
        loss = float(loss)
        if loss < self._best - self._min_delta:
            self._best = loss
            self._since = 0
            return False
        self._since += 1
        if self._since >= self._patience and not self.at_last_stage:
            self._stage += 1
            self._since = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON values that restore the schedule exactly (`best` is None while infinite)."""
        return {
            "chunks": list(self._chunks),
            "stage": self._stage,
            "best": None if math.isinf(self._best) else self._best,
            "since_improvement": self._since,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; ValueError when it was saved under different chunks.

        Resuming a checkpoint under another schedule would silently mean a different stage, so
        the chunk counts must match the configured ones.
        """
        saved = state.get("chunks")
        if saved is not None and tuple(int(n) for n in saved) != self._chunks:
            raise ValueError(
                f"schedule state was saved for chunks {list(saved)}, "
                f"but this schedule has {list(self._chunks)}"
            )
        stage = int(state["stage"])
        if not 0 <= stage < len(self._chunks):
            raise ValueError(f"schedule state: stage {stage} out of range for {len(self._chunks)} stages")
        since = int(state["since_improvement"])
        if since < 0:
            raise ValueError(f"schedule state: since_improvement {since} is negative")
        best = state.get("best")
        self._stage = max(stage, self._min_stage)
        self._best = math.inf if best is None else float(best)
        self._since = since
