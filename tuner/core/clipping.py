"""Gradient clipping strategies behind one interface, plus per-epoch clip statistics.

The trainer calls ``clipper.clip(params)`` once per optimizer step, after ``backward()`` and
before ``optimizer.step()``. Every mode measures the global L2 norm of all gradients before
clipping (so runs with and without clipping report the same quantity), clips in place, and
returns a `ClipStat`. `EpochClipStats` folds those into the numbers logged per epoch.

Modes (`ClipConfig.mode`):

* ``none``: measure only.
* ``norm``: scale all gradients together so their global norm is at most `threshold`
  (``torch.nn.utils.clip_grad_norm_``; the 2019 Keras ``clipnorm``).
* ``value``: clamp every element to ``[-threshold, threshold]``.
* ``per-tensor-norm``: scale each tensor whose own norm exceeds `threshold` (today's Keras
  ``clipnorm``); tensors below it are not touched.
* ``adaptive``: global-norm clipping at ``mean + k * std`` of the recent pre-clip norms,
  ``k = threshold`` (the article's "one standard deviation from the average").
* ``percentile``: global-norm clipping at the p-th percentile of the recent pre-clip norms,
  ``p = threshold`` (AutoClip, Seetharaman et al. 2020).

Decisions:

* Scaling happens only when the norm is strictly above the bound, with coefficient
  ``bound / (norm + 1e-6)`` as in ``clip_grad_norm_``; at or below the bound the gradients are
  left bit-for-bit unchanged (clip_grad_norm_ would multiply by ~1 inside a 1e-6 band).
* Non-finite global norm (inf/nan): the gradients are left untouched and the norm is reported
  as is, never raised on. Clipping would otherwise turn inf into finite values (``value``) or
  spread NaN silently; leaving them lets the trainer see the divergence.
* Adaptive modes: the bound is computed from the history *before* the current norm is added
  (a spike cannot raise its own bound; AutoClip's reference code appends first). Only finite
  norms enter the history, so one bad step cannot poison it. ``std`` is the population
  standard deviation (divide by n) of the history. The percentile interpolates linearly
  between order statistics, like ``numpy.percentile``'s default. No clipping happens until the
  history holds ``min(warmup, history)`` norms (a warmup longer than the history could never
  be reached otherwise).
* All gradients are expected on one device (the model lives on one device here). Gradients
  that are None or empty are skipped. One host sync per step: the ``.item()``/``.tolist()``
  that reads the norm (and, for ``value``/``per-tensor-norm``, the largest element/tensor
  norm in the same transfer).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

from tuner.core.config import ClipConfig

_EPS = 1e-6
"""Added to the norm in the scaling coefficient, as torch.nn.utils.clip_grad_norm_ does."""


class ClipStat(NamedTuple):
    """What one clip call saw: the global L2 gradient norm before clipping, and whether it clipped."""

    pre_norm: float
    clipped: bool


def _with_grads(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """The parameters whose gradient exists and holds elements (others contribute nothing)."""
    return [p for p in params if p.grad is not None and p.grad.numel() > 0]


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params]


def _tensor_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """1-D tensor of each gradient's L2 norm, in one fused call."""
    return torch.stack(torch._foreach_norm(grads, 2.0))


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (p in [0, 100]) with linear interpolation, as numpy.percentile."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty sequence")
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (divide by n), summed with math.fsum."""
    xs = list(values)
    if not xs:
        raise ValueError("mean_std of an empty sequence")
    mean = math.fsum(xs) / len(xs)
    var = math.fsum((x - mean) ** 2 for x in xs) / len(xs)
    return mean, math.sqrt(var)


class Clipper:
    """Base of all clip strategies: measures the global norm; subclasses clip in place.

    Subclasses implement `_clip`; the base handles gathering gradients, the empty case and
    the state of the adaptive history (empty and unused for the stateless modes).
    """

    mode: str = "none"

    def __init__(self, cfg: ClipConfig) -> None:
        self.cfg = cfg
        self.threshold: float = float(cfg.threshold)

    def clip(self, params: Iterable[torch.nn.Parameter]) -> ClipStat:
        """Measure the pre-clip global L2 norm, clip the gradients in place, report both."""
        params = _with_grads(params)
        if not params:
            return ClipStat(0.0, False)
        return self._clip(params)

    def _clip(self, params: list[torch.nn.Parameter]) -> ClipStat:
        return ClipStat(get_total_norm(_grads(params)).item(), False)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON values that restore the clipper exactly (the mode, the norm history)."""
        return {"mode": self.mode, "history": []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; ValueError when it was saved by another mode."""
        mode = state.get("mode", self.mode)
        if mode != self.mode:
            raise ValueError(f"clip state was saved by mode {mode!r}, but this clipper is {self.mode!r}")


class NoClipper(Clipper):
    """``none``: report the global norm, leave the gradients alone."""

    mode = "none"


class NormClipper(Clipper):
    """``norm``: the global L2 norm of all gradients together is bounded by `threshold`."""

    mode = "norm"

    def _clip(self, params: list[torch.nn.Parameter]) -> ClipStat:
        total = get_total_norm(_grads(params))
        return ClipStat(total.item(), _clip_global(params, total, self.threshold))


class ValueClipper(Clipper):
    """``value``: every gradient element is clamped to [-threshold, threshold]."""

    mode = "value"

    def _clip(self, params: list[torch.nn.Parameter]) -> ClipStat:
        grads = _grads(params)
        total = get_total_norm(grads)
        largest = get_total_norm(grads, math.inf)  # the largest |element| of all gradients
        norm, peak = torch.stack([total, largest.to(total.dtype)]).tolist()
        if not math.isfinite(norm) or peak <= self.threshold:
            return ClipStat(norm, False)
        clip_grad_value_(params, self.threshold)
        return ClipStat(norm, True)


class PerTensorNormClipper(Clipper):
    """``per-tensor-norm``: each gradient tensor's own L2 norm is bounded by `threshold`."""

    mode = "per-tensor-norm"

    def _clip(self, params: list[torch.nn.Parameter]) -> ClipStat:
        grads = _grads(params)
        norms = _tensor_norms(grads)
        total = torch.linalg.vector_norm(norms)
        norm, peak = torch.stack([total, norms.max()]).tolist()
        if not math.isfinite(norm) or peak <= self.threshold:
            return ClipStat(norm, False)
        # Coefficient 1 (an exact no-op) for tensors at or below the bound.
        coefs = torch.where(norms > self.threshold, self.threshold / (norms + _EPS), torch.ones_like(norms))
        torch._foreach_mul_(grads, list(coefs.unbind()))
        return ClipStat(norm, True)


class _HistoryClipper(Clipper):
    """Global-norm clipping at a bound derived from the recent finite pre-clip norms."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__(cfg)
        self.history: deque[float] = deque(maxlen=int(cfg.history))
        self.warmup: int = min(int(cfg.warmup), int(cfg.history))

    def bound(self) -> float | None:
        """The current clip bound, or None while the history is shorter than the warmup."""
        if len(self.history) < self.warmup:
            return None
        return self._bound()

    def _bound(self) -> float:
        raise NotImplementedError

    def _clip(self, params: list[torch.nn.Parameter]) -> ClipStat:
        total = get_total_norm(_grads(params))
        norm = total.item()
        if not math.isfinite(norm):
            return ClipStat(norm, False)
        bound = self.bound()
        self.history.append(norm)
        if bound is None:
            return ClipStat(norm, False)
        return ClipStat(norm, _clip_global(params, total, bound))

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "history": [float(x) for x in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.history.clear()
        self.history.extend(float(x) for x in state.get("history", []))


class AdaptiveClipper(_HistoryClipper):
    """``adaptive``: bound = mean + k * population std of the history, k = `threshold`."""

    mode = "adaptive"

    def _bound(self) -> float:
        mean, std = mean_std(self.history)
        return mean + self.threshold * std


class PercentileClipper(_HistoryClipper):
    """``percentile``: bound = the p-th percentile of the history, p = `threshold` (AutoClip)."""

    mode = "percentile"

    def _bound(self) -> float:
        return percentile(self.history, self.threshold)


def _clip_global(params: list[torch.nn.Parameter], total: torch.Tensor, bound: float) -> bool:
    """Scale all gradients by bound / (norm + 1e-6) (`clip_grads_with_norm_`) when the finite
    global norm `total` exceeds `bound`; at or below it they stay bit-for-bit unchanged."""
    norm = total.item()
    if not math.isfinite(norm) or norm <= bound:
        return False
    clip_grads_with_norm_(params, bound, total)
    return True


_CLIPPERS: dict[str, type[Clipper]] = {
    c.mode: c
    for c in (NoClipper, NormClipper, ValueClipper, PerTensorNormClipper, AdaptiveClipper, PercentileClipper)
}


def make_clipper(cfg: ClipConfig) -> Clipper:
    """The clipper for `cfg.mode`."""
    try:
        cls = _CLIPPERS[cfg.mode]
    except KeyError:
        raise ValueError(f"unknown clip mode {cfg.mode!r}; allowed: {', '.join(_CLIPPERS)}") from None
    return cls(cfg)


class EpochClipStats:
    """Accumulates one epoch's `ClipStat`s into the mean and max pre-clip norm and clip rate.

    A non-finite norm makes the mean and max non-finite too (NaN wins over everything), so a
    diverged step is visible in the epoch summary rather than averaged away.
    """

    def __init__(self) -> None:
        self.steps: int = 0
        self.clipped: int = 0
        self._sum: float = 0.0
        self._max: float = -math.inf

    def add(self, stat: ClipStat) -> None:
        """Count one optimizer step."""
        n = float(stat.pre_norm)
        self.steps += 1
        self.clipped += bool(stat.clipped)
        self._sum += n
        if math.isnan(n) or (not math.isnan(self._max) and n > self._max):
            self._max = n

    def summary(self) -> dict[str, float]:
        """grad_norm_mean, grad_norm_max (NaN when no step was added) and clip_fraction."""
        if self.steps == 0:
            return {"grad_norm_mean": math.nan, "grad_norm_max": math.nan, "clip_fraction": 0.0}
        return {
            "grad_norm_mean": self._sum / self.steps,
            "grad_norm_max": self._max,
            "clip_fraction": self.clipped / self.steps,
        }
