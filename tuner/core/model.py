"""The article's network: two Dense layers, two LSTM layers, a linear Q-value head.

A Gaussian-noise layer follows each Dense layer (regularisation, active only in training), as in
the source's Keras model. The LSTM state goes in and comes out of `forward`, so a long series can
be fed chunk by chunk with the state carried between chunks (stateful truncated BPTT).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tuner.core.config import ModelConfig

State = tuple[torch.Tensor, torch.Tensor]
"""(h, c) of the stacked LSTM, each of shape (2 layers, batch, lstm_units)."""

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "linear": nn.Identity}


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode and nothing in eval mode (Keras GaussianNoise)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


class QNet(nn.Module):
    """Dense -> noise -> Dense -> noise -> 2 x LSTM -> Linear(n_actions), batch first."""

    def __init__(self, n_inputs: int, n_actions: int, cfg: ModelConfig) -> None:
        super().__init__()
        act = _ACTIVATIONS[cfg.activation]
        self.dense = nn.Sequential(
            nn.Linear(n_inputs, cfg.dense_units),
            act(),
            GaussianNoise(cfg.noise_std),
            nn.Linear(cfg.dense_units, cfg.dense_units),
            act(),
            GaussianNoise(cfg.noise_std),
        )
        self.lstm = nn.LSTM(cfg.dense_units, cfg.lstm_units, num_layers=2, batch_first=True)
        self.head = nn.Linear(cfg.lstm_units, n_actions)
        self.segment = cfg.lstm_segment

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x: (batch, steps, n_inputs) -> (q: (batch, steps, n_actions), state after the last step)."""
        z = self.dense(x)
        if self.segment and z.shape[1] > self.segment and torch.is_grad_enabled():
            out, state = self._segmented_lstm(z, state)
        else:
            out, state = self.lstm(z, state)
        return self.head(out), state

    def _segmented_lstm(self, z: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        # The LSTM's saved activations grow with the chunk length (over 1 GB per layer for
        # 15 x 20,000 steps); recomputing them per segment in backward bounds that.
        if state is None:
            zeros = z.new_zeros(self.lstm.num_layers, z.shape[0], self.lstm.hidden_size)
            state = (zeros, zeros)
        outs = []
        for start in range(0, z.shape[1], self.segment):
            piece = z[:, start : start + self.segment]
            out, h, c = checkpoint(self._lstm_flat, piece, *state, use_reentrant=False)
            outs.append(out)
            state = (h, c)
        return torch.cat(outs, dim=1), state

    def _lstm_flat(self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h, c) = self.lstm(z, (h, c))
        return out, h, c


def detach_state(state: State | None) -> State | None:
    """Cut the graph at a chunk boundary: keep the values, drop the history.

    Without this, backward would run through every earlier chunk (and fail on the freed graph)."""
    if state is None:
        return None
    return state[0].detach(), state[1].detach()
