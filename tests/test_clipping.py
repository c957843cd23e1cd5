"""Rules of the gradient clip strategies (tuner.core.clipping)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tuner.core.clipping import ClipStat, Clipper, EpochClipStats, make_clipper, mean_std, percentile
from tuner.core.config import ClipConfig


def params_with_grads(
    *grads: list[float] | torch.Tensor, dtype: torch.dtype = torch.float64
) -> list[torch.nn.Parameter]:
    """Parameters whose .grad are the given values (one tensor each)."""
    out = []
    for g in grads:
        t = torch.as_tensor(g, dtype=dtype)
        p = torch.nn.Parameter(torch.zeros_like(t))
        p.grad = t.clone()
        out.append(p)
    return out


def global_norm(params: list[torch.nn.Parameter]) -> float:
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))


def snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


def test_none_leaves_grads_unchanged_and_reports_norm() -> None:
    # Rule: mode none measures the global norm and never touches the gradients.
    ps = params_with_grads([3.0, 0.0], [[4.0]])
    before = snapshot(ps)
    stat = make_clipper(ClipConfig(mode="none")).clip(ps)
    assert stat == ClipStat(5.0, False)
    assert all(torch.equal(p.grad, b) for p, b in zip(ps, before))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norm_bounds_global_norm_and_keeps_direction(dtype: torch.dtype) -> None:
    # Rule: norm scales all grads together so the global norm <= threshold, direction preserved.
    torch.manual_seed(0)
    ps = params_with_grads(torch.randn(5, 3) * 10, torch.randn(7) * 10, dtype=dtype)
    before = snapshot(ps)
    pre = global_norm(ps)
    stat = make_clipper(ClipConfig(mode="norm", threshold=1.0)).clip(ps)
    assert stat.clipped and stat.pre_norm == pytest.approx(pre, rel=1e-6)
    assert global_norm(ps) <= 1.0 + (1e-6 if dtype == torch.float32 else 0.0)
    assert global_norm(ps) == pytest.approx(1.0, rel=1e-5)
    scale = float(ps[0].grad.flatten()[0] / before[0].flatten()[0])
    for p, b in zip(ps, before):  # same scale for every element of every tensor
        torch.testing.assert_close(p.grad, b * scale)


def test_norm_below_threshold_is_untouched() -> None:
    # Rule: a global norm at or below the threshold leaves grads bit-for-bit unchanged.
    ps = params_with_grads([0.6], [0.8])  # global norm exactly 1
    before = snapshot(ps)
    stat = make_clipper(ClipConfig(mode="norm", threshold=1.0)).clip(ps)
    assert stat == ClipStat(1.0, False)
    assert all(torch.equal(p.grad, b) for p, b in zip(ps, before))


def test_value_clamps_every_element() -> None:
    # Rule: value clamps each element to [-t, t]; elements inside are unchanged.
    ps = params_with_grads([3.0, -0.2, -5.0], [[0.4, 2.0]])
    pre = global_norm(ps)
    stat = make_clipper(ClipConfig(mode="value", threshold=0.5)).clip(ps)
    assert stat.clipped and stat.pre_norm == pytest.approx(pre)
    assert ps[0].grad.tolist() == [0.5, -0.2, -0.5]
    assert ps[1].grad.tolist() == [[0.4, 0.5]]
    assert all(float(p.grad.abs().max()) <= 0.5 for p in ps)


def test_value_not_clipped_when_all_inside() -> None:
    # Rule: clipped is True only when some |g| > threshold.
    ps = params_with_grads([0.5, -0.5], [0.1])
    assert make_clipper(ClipConfig(mode="value", threshold=0.5)).clip(ps).clipped is False


def test_per_tensor_norm_bounds_each_tensor_and_leaves_small_ones() -> None:
    # Rule: each tensor's own norm <= threshold; tensors already within it are untouched.
    big = torch.tensor([30.0, 40.0])
    small = torch.tensor([0.3, 0.4])
    ps = params_with_grads(big, small, torch.tensor([[0.0, 2.0]]))
    pre = global_norm(ps)
    stat = make_clipper(ClipConfig(mode="per-tensor-norm", threshold=1.0)).clip(ps)
    assert stat.clipped and stat.pre_norm == pytest.approx(pre)
    for p in ps:
        assert float(torch.linalg.vector_norm(p.grad)) <= 1.0
    assert torch.equal(ps[1].grad, small.double())
    torch.testing.assert_close(ps[0].grad, big.double() / 50.0, rtol=1e-6, atol=0)
    assert global_norm(ps) > 1.0  # not a global clip: two tensors of norm ~1 remain


def test_per_tensor_norm_not_clipped_when_all_small() -> None:
    # Rule: clipped only when some tensor's norm exceeds the threshold.
    ps = params_with_grads([0.6, 0.8], [0.6, 0.8])  # each norm 1, global norm sqrt 2
    stat = make_clipper(ClipConfig(mode="per-tensor-norm", threshold=1.0)).clip(ps)
    assert stat.clipped is False


def feed(clipper: Clipper, norms: list[float]) -> list[ClipStat]:
    """Clip one single-element gradient per norm value."""
    return [clipper.clip(params_with_grads([n])) for n in norms]


def test_adaptive_bound_is_mean_plus_k_std_of_history() -> None:
    # Rule: after warmup, the bound is mean + k * population std of the previous norms.
    clipper = make_clipper(ClipConfig(mode="adaptive", threshold=2.0, history=100, warmup=4))
    hist = [1.0, 2.0, 3.0, 4.0]
    stats = feed(clipper, hist)
    assert not any(s.clipped for s in stats)
    mean = 2.5
    std = math.sqrt(sum((x - mean) ** 2 for x in hist) / len(hist))  # population std
    bound = mean + 2.0 * std
    assert clipper.bound() == pytest.approx(bound, rel=1e-12)
    ps = params_with_grads([10.0])
    stat = clipper.clip(ps)
    assert stat == ClipStat(10.0, True)
    assert float(ps[0].grad) == pytest.approx(bound, rel=1e-6)
    assert float(ps[0].grad) <= bound
    assert list(clipper.history) == hist + [10.0]  # the pre-clip norm is recorded, after the bound


def test_adaptive_does_not_clip_during_warmup() -> None:
    # Rule: no clipping until the history holds `warmup` norms, however large the norm.
    clipper = make_clipper(ClipConfig(mode="adaptive", threshold=0.0, history=10, warmup=3))
    stats = feed(clipper, [1.0, 1.0, 1e6])
    assert [s.clipped for s in stats] == [False, False, False]
    assert clipper.clip(params_with_grads([1e6])).clipped is True  # history now 3 long


def test_history_is_capped_at_maxlen() -> None:
    # Rule: the history remembers only the last `history` pre-clip norms.
    clipper = make_clipper(ClipConfig(mode="adaptive", threshold=1.0, history=3, warmup=2))
    feed(clipper, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert list(clipper.history) == [3.0, 4.0, 5.0]


def test_non_finite_norm_not_recorded_and_grads_untouched() -> None:
    # Rule: an inf/nan norm is reported as is, never enters the history, grads keep their NaN.
    clipper = make_clipper(ClipConfig(mode="adaptive", threshold=1.0, history=5, warmup=2))
    feed(clipper, [1.0, 1.0])
    ps = params_with_grads([float("nan"), 3.0])
    stat = clipper.clip(ps)
    assert math.isnan(stat.pre_norm) and stat.clipped is False
    assert math.isnan(float(ps[0].grad[0])) and float(ps[0].grad[1]) == 3.0
    assert list(clipper.history) == [1.0, 1.0]


@pytest.mark.parametrize("mode", ["norm", "value", "per-tensor-norm", "percentile"])
def test_inf_norm_is_reported_and_not_laundered(mode: str) -> None:
    # Rule: a non-finite norm never raises and clipping does not make the grads finite.
    ps = params_with_grads([float("inf"), 1.0])
    stat = make_clipper(ClipConfig(mode=mode, threshold=0.5, warmup=2)).clip(ps)
    assert stat.pre_norm == math.inf and stat.clipped is False
    assert ps[0].grad[0] == math.inf


def test_percentile_helper_matches_linear_interpolation() -> None:
    # Rule: percentile interpolates linearly between order statistics (numpy's default).
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 10) == pytest.approx(1.4)
    t = torch.tensor(xs, dtype=torch.float64)
    for p in (1, 25, 62.5, 90, 99):
        assert percentile(xs, p) == pytest.approx(float(torch.quantile(t, p / 100)))
    assert mean_std([2.0, 4.0]) == (3.0, 1.0)


def test_percentile_bound_is_pth_percentile_of_history() -> None:
    # Rule: after warmup, the global norm is clipped to the p-th percentile of previous norms.
    clipper = make_clipper(ClipConfig(mode="percentile", threshold=50.0, history=10, warmup=5))
    feed(clipper, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert clipper.bound() == 3.0
    ps = params_with_grads([2.0, 0.0], [0.0])  # norm 2 is below the median: untouched
    assert clipper.clip(ps).clipped is False
    ps = params_with_grads([6.0, 8.0])  # norm 10; history now [1..5, 2] has median 2.5
    stat = clipper.clip(ps)
    assert stat == ClipStat(10.0, True)
    assert global_norm(ps) == pytest.approx(2.5, rel=1e-6)


@pytest.mark.parametrize("mode", ["adaptive", "percentile"])
def test_state_round_trip_restores_exactly(mode: str) -> None:
    # Rule: a JSON round trip of state_dict gives a clipper that behaves identically.
    cfg = ClipConfig(mode=mode, threshold=1.0 if mode == "adaptive" else 60.0, history=6, warmup=3)
    a = make_clipper(cfg)
    feed(a, [1.0, 3.0, 2.0, 5.0])
    b = make_clipper(cfg)
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    for n in [4.0, 9.0, 0.5, 7.0, 20.0]:
        pa, pb = params_with_grads([n]), params_with_grads([n])
        assert a.clip(pa) == b.clip(pb)
        assert torch.equal(pa[0].grad, pb[0].grad)
    assert list(a.history) == list(b.history)


def test_load_rejects_state_of_another_mode() -> None:
    # Rule: a checkpoint from another clip mode fails loudly.
    state = make_clipper(ClipConfig(mode="adaptive")).state_dict()
    with pytest.raises(ValueError, match="mode"):
        make_clipper(ClipConfig(mode="percentile", threshold=90.0)).load_state_dict(state)


def test_none_and_empty_grads_are_skipped() -> None:
    # Rule: parameters without gradients do not count; no gradients at all reports 0.
    ps = params_with_grads([3.0], [4.0])
    ps.append(torch.nn.Parameter(torch.ones(2)))  # .grad is None
    assert make_clipper(ClipConfig(mode="norm", threshold=10.0)).clip(ps) == ClipStat(5.0, False)
    assert make_clipper(ClipConfig(mode="norm")).clip([]) == ClipStat(0.0, False)


def test_clipper_on_real_model_backward() -> None:
    # Rule: used after backward on a real module, the reported norm equals the pre-clip norm.
    torch.manual_seed(0)
    model = torch.nn.LSTM(3, 4)
    out, _ = model(torch.randn(5, 2, 3) * 100)
    (out.sum() * 100).backward()
    ps = list(model.parameters())
    expected = float(torch.nn.utils.get_total_norm([p.grad for p in ps]))
    stat = make_clipper(ClipConfig(mode="norm", threshold=0.1)).clip(ps)
    assert stat.pre_norm == pytest.approx(expected, rel=1e-6) and stat.clipped
    assert global_norm(ps) <= 0.1 * (1 + 1e-6)


def test_epoch_clip_stats_summary() -> None:
    # Rule: mean and max of pre-clip norms and the fraction of clipped steps; NaN wins the max.
    acc = EpochClipStats()
    assert acc.summary()["clip_fraction"] == 0.0
    for s in [ClipStat(1.0, False), ClipStat(3.0, True), ClipStat(2.0, False), ClipStat(2.0, True)]:
        acc.add(s)
    assert acc.summary() == {"grad_norm_mean": 2.0, "grad_norm_max": 3.0, "clip_fraction": 0.5}
    acc.add(ClipStat(math.nan, False))
    acc.add(ClipStat(5.0, False))
    summary = acc.summary()
    assert math.isnan(summary["grad_norm_max"]) and math.isnan(summary["grad_norm_mean"])
