"""A fusion model of your own in one file, trained, evaluated and compared like a built-in.

    vafusion train CACHE --run runs/mine --model my_model:MyFusion --model-option hidden=64
    vafusion compare CACHE --runs runs/cmp --models imf,my_model:MyFusion

(from the folder holding this file, or with it on PYTHONPATH; from the repository root it
is ``examples.my_model:MyFusion``). The README's "Writing your own model" walks through it,
and tests/fusion/models/test_plugins.py runs it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class MyFusion(nn.Module):
    """A GRU over all streams, with presence flags: causal by construction, a few lines long."""

    # optional: one line of help per option, shown by `vafusion models`
    option_help: ClassVar[dict[str, str]] = {
        "hidden": "GRU width",
        "layers": "stacked GRU layers",
        "dropout": "dropout between GRU layers",
    }

    def __init__(self, dims: list[int], *, hidden: int = 32, layers: int = 1, dropout: float = 0.0) -> None:
        # dims[i]: width of feature stream i, in --features order (the first is the visual one).
        # Every keyword argument with a default is an option: --model-option hidden=64.
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValueError(f"need hidden >= 1 and layers >= 1, got {hidden} and {layers}")  # -> a one-line error
        self.dims = list(dims)
        self.gru = nn.GRU(
            sum(dims) + len(dims), hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.out = nn.Linear(hidden, 2)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        # streams[i] (B, W, dims[i]) float32; present[i] (B, W) bool: False = no face / no audio at that
        # frame, and the value there is meaningless; valid (B, W) bool: False = padding after the video.
        values = [torch.where(p[..., None], x, torch.zeros_like(x)) for x, p in zip(streams, present)]
        flags = [p[..., None].to(values[0].dtype) for p in present]
        h, _ = self.gru(torch.cat(values + flags, dim=-1))  # one direction: frame t sees frames <= t only
        return torch.tanh(self.out(h))  # (B, W, 2): valence, arousal in [-1, 1]
