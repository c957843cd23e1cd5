"""The network: state in, state out, so chunks chain exactly like one long forward."""

from __future__ import annotations

import pytest
import torch

from tuner.core.config import ModelConfig
from tuner.core.model import GaussianNoise, QNet, detach_state
from tuner.core.train import chunk_bounds


def _net(noise: float = 0.0) -> QNet:
    torch.manual_seed(0)
    return QNet(n_inputs=5, n_actions=2, cfg=ModelConfig(dense_units=6, lstm_units=7, noise_std=noise))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 64])
def test_model_chunked_forward_equals_whole_sequence(n):
    # Rule: carrying the state across N chunks gives the same outputs as one forward pass.
    net = _net().eval()
    x = torch.randn(3, 64, 5)
    whole, _ = net(x)
    state, parts = None, []
    for a, b in chunk_bounds(64, n):
        q, state = net(x[:, a:b], state)
        parts.append(q)
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-5)


def test_model_state_shapes_and_head():
    # Rule: 2 LSTM layers of lstm_units, one output per action.
    q, (h, c) = _net()(torch.randn(4, 9, 5))
    assert q.shape == (4, 9, 2) and h.shape == (2, 4, 7) and c.shape == (2, 4, 7)


def test_model_noise_only_in_training():
    # Rule: the Gaussian-noise layers perturb in train mode and are the identity in eval mode.
    layer = GaussianNoise(0.5)
    x = torch.zeros(1000)
    assert layer.train()(x).std() > 0.4
    assert torch.equal(layer.eval()(x), x)
    net = _net(noise=0.5)
    x = torch.randn(2, 5, 5)
    assert torch.equal(net.eval()(x)[0], net(x)[0])


def test_model_detach_cuts_gradient_at_boundary():
    # Rule: after detach_state, a later chunk's loss sends no gradient into an earlier chunk.
    net = _net()
    x1 = torch.randn(2, 4, 5, requires_grad=True)
    _, state = net(x1)
    q2, _ = net(torch.randn(2, 4, 5), detach_state(state))
    q2.sum().backward()
    assert x1.grad is None


def test_model_segmented_lstm_same_outputs_and_gradients():
    # Rule: checkpointed LSTM segments change memory, not math: same outputs and gradients.
    torch.manual_seed(0)
    plain = QNet(5, 2, ModelConfig(dense_units=6, lstm_units=7, noise_std=0.0, lstm_segment=0))
    seg = QNet(5, 2, ModelConfig(dense_units=6, lstm_units=7, noise_std=0.0, lstm_segment=16))
    seg.load_state_dict(plain.state_dict())
    x = torch.randn(3, 50, 5)
    outs = []
    for net in (plain, seg):
        q, (h, c) = net(x)
        (q.square().sum() + h.sum()).backward()
        outs.append((q, h, [p.grad.clone() for p in net.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6)
    for g0, g1 in zip(outs[0][2], outs[1][2]):
        assert torch.allclose(g0, g1, atol=1e-5)
