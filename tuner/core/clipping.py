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
from typing import Any, Iterable, NamedTuple

import torch

from tuner.core.config import ClipConfig

_EPS = 1e-6
"""Added to the norm in the scaling coefficient, as torch.nn.utils.clip_grad_norm_ does."""


class ClipStat(NamedTuple):
    """What one clip call saw: the global L2 gradient norm before clipping, and whether it clipped."""

    pre_norm: float
    clipped: bool


def _grads(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The gradients that exist and hold elements (None and empty ones contribute nothing)."""
    return [p.grad for p in params if p.grad is not None and p.grad.numel() > 0]


def _tensor_norms(grads: list[torch.Tensor], order: float = 2.0) -> torch.Tensor:
    """1-D tensor of each gradient's `order`-norm, computed in one fused call when available."""
    if hasattr(torch, "_foreach_norm"):
        norms = torch._foreach_norm(grads, order)
    else:  # pragma: no cover - torch without foreach kernels
        norms = [torch.linalg.vector_norm(g, order) for g in grads]
    return torch.stack(list(norms))


def _scale_(grads: list[torch.Tensor], coef: float | list[torch.Tensor]) -> None:
    """Multiply gradients in place by one scalar or by one 0-dim tensor per gradient."""
    if hasattr(torch, "_foreach_mul_"):
        torch._foreach_mul_(grads, coef)
    else:  # pragma: no cover - torch without foreach kernels
        coefs = coef if isinstance(coef, list) else [coef] * len(grads)
        for g, c in zip(grads, coefs):
            g.mul_(c)


def _clamp_(grads: list[torch.Tensor], bound: float) -> None:
    """Clamp every gradient element to [-bound, bound] in place."""
    if hasattr(torch, "_foreach_clamp_max_") and hasattr(torch, "_foreach_clamp_min_"):
        torch._foreach_clamp_max_(grads, bound)
        torch._foreach_clamp_min_(grads, -bound)
    else:  # pragma: no cover - torch without foreach kernels
        for g in grads:
            g.clamp_(-bound, bound)


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
        grads = _grads(params)
        if not grads:
            return ClipStat(0.0, False)
        return self._clip(grads)

    def _clip(self, grads: list[torch.Tensor]) -> ClipStat:
        norm = torch.linalg.vector_norm(_tensor_norms(grads)).item()
        return ClipStat(norm, False)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON values that restore the clipper exactly (the mode, the norm history)."""
        return {"mode": self.mode, "history": []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; ValueError when it was saved by another mode."""
        mode = state.get("mode", self.mode)
        if mode != self.mode:
            raise ValueError(f"clip state was saved by mode {mode!r}, "
                             f"but this clipper is {self.mode!r}")


class NoClipper(Clipper):
    """``none``: report the global norm, leave the gradients alone."""

    mode = "none"


class NormClipper(Clipper):
    """``norm``: the global L2 norm of all gradients together is bounded by `threshold`."""

    mode = "norm"

    def _clip(self, grads: list[torch.Tensor]) -> ClipStat:
        norm = torch.linalg.vector_norm(_tensor_norms(grads)).item()
        return ClipStat(norm, _clip_global(grads, norm, self.threshold))


class ValueClipper(Clipper):
    """``value``: every gradient element is clamped to [-threshold, threshold]."""

    mode = "value"

    def _clip(self, grads: list[torch.Tensor]) -> ClipStat:
        total = torch.linalg.vector_norm(_tensor_norms(grads))
        largest = _tensor_norms(grads, math.inf).max()
        norm, peak = torch.stack([total, largest.to(total.dtype)]).tolist()
        if not math.isfinite(norm) or peak <= self.threshold:
            return ClipStat(norm, False)
        _clamp_(grads, self.threshold)
        return ClipStat(norm, True)


class PerTensorNormClipper(Clipper):
    """``per-tensor-norm``: each gradient tensor's own L2 norm is bounded by `threshold`."""

    mode = "per-tensor-norm"

    def _clip(self, grads: list[torch.Tensor]) -> ClipStat:
        norms = _tensor_norms(grads)
        total = torch.linalg.vector_norm(norms)
        norm, peak = torch.stack([total, norms.max()]).tolist()
        if not math.isfinite(norm) or peak <= self.threshold:
            return ClipStat(norm, False)
        # Coefficient 1 (an exact no-op) for tensors at or below the bound.
        coefs = torch.where(norms > self.threshold, self.threshold / (norms + _EPS),
                            torch.ones_like(norms))
        _scale_(grads, list(coefs.unbind()))
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

    def _clip(self, grads: list[torch.Tensor]) -> ClipStat:
        norm = torch.linalg.vector_norm(_tensor_norms(grads)).item()
        if not math.isfinite(norm):
            return ClipStat(norm, False)
        bound = self.bound()
        self.history.append(norm)
        if bound is None:
            return ClipStat(norm, False)
        return ClipStat(norm, _clip_global(grads, norm, bound))

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


def _clip_global(grads: list[torch.Tensor], norm: float, bound: float) -> bool:
    """Scale all gradients by bound / (norm + eps) when the finite `norm` exceeds `bound`."""
    if not math.isfinite(norm) or norm <= bound:
        return False
    _scale_(grads, bound / (norm + _EPS))
    return True


_CLIPPERS: dict[str, type[Clipper]] = {
    c.mode: c for c in (NoClipper, NormClipper, ValueClipper, PerTensorNormClipper,
                        AdaptiveClipper, PercentileClipper)
}


def make_clipper(cfg: ClipConfig) -> Clipper:
    """The clipper for `cfg.mode`."""
    try:
        cls = _CLIPPERS[cfg.mode]
    except KeyError:
        raise ValueError(f"unknown clip mode {cfg.mode!r}; allowed: "
                         f"{', '.join(_CLIPPERS)}") from None
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
