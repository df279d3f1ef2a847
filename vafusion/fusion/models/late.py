"""``late``: late fusion. Each stream has its own TCN and head; their predictions are mixed
per frame by learned weights that respect absent streams.

Per stream ``i``: ``y_i`` (B, W, 2) from its TCN and head, and gate logits ``g_i`` (B, W, 2),
one per output, so valence can lean on the face and arousal on the voice. At each frame
the weights are a softmax of the logits over the streams present there (an absent stream
gets weight exactly 0); where no stream is present, over all of them (each then speaks
from its ``missing`` vector and its temporal context). Output ``tanh(sum_i w_i y_i)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vafusion.fusion.models.layers import (
    TCN,
    check_streams,
    checked_dims,
    embed_stream,
    encode_tcn,
    option_help,
    regression_head,
    stream_inputs,
)
from vafusion.fusion.models.spaces import option_space


class LateFusion(nn.Module):
    """Late fusion: a TCN and head per stream, mixed by learned per-frame weights over the present streams."""

    option_help = option_help("d_model", "tcn_kernel", "tcn_dilations", "causal", "dropout", "head_hidden")
    option_space = option_space("d_model", "tcn_kernel", "tcn_dilations", "dropout", "head_hidden")

    def __init__(
        self,
        dims: list[int],
        *,
        d_model: int = 128,
        tcn_kernel: int = 5,
        tcn_dilations: tuple[int, ...] = (1, 2, 4, 8),
        causal: bool = False,
        dropout: float = 0.2,
        head_hidden: int = 64,
    ) -> None:
        super().__init__()
        self.dims = checked_dims(dims, d_model, dropout, head_hidden)
        D = d_model
        self.project, self.missing = stream_inputs(self.dims, D)
        self.tcns = nn.ModuleList(TCN(D, D, tcn_kernel, tcn_dilations, dropout, causal) for _ in self.dims)
        self.heads = nn.ModuleList(regression_head(D, head_hidden, dropout) for _ in self.dims)
        self.gates = nn.ModuleList(nn.Linear(D, 2) for _ in self.dims)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        check_streams(self.dims, streams, present)
        valid = valid.bool()
        preds, logits = [], []
        for i, (x, p) in enumerate(zip(streams, present)):
            h = encode_tcn(self.tcns[i], embed_stream(self.project[i], self.missing[i], x, p.bool(), valid), valid)
            preds.append(self.heads[i](h))
            logits.append(self.gates[i](h))
        usable = torch.stack([p.bool() & valid for p in present])  # (n, B, W)
        usable = usable | ~usable.any(dim=0, keepdim=True)  # no stream present: all of them
        logits_t = torch.stack(logits).masked_fill(~usable[..., None], float("-inf"))
        weights = torch.softmax(logits_t.float(), dim=0).to(preds[0].dtype)  # (n, B, W, 2)
        return torch.tanh((weights * torch.stack(preds)).sum(dim=0))
