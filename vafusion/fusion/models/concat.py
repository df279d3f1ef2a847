"""``concat``: early fusion. The projected streams are concatenated frame by frame, one TCN
models time, the head regresses valence and arousal.

Absent frames enter as each stream's learned ``missing`` vector (see
:func:`~vafusion.fusion.models.layers.embed_stream`), so the TCN sees which modality is
missing where; there is no attention, so it is the cheapest multimodal built-in.
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


class EarlyConcat(nn.Module):
    """Early fusion: projected streams concatenated per frame, one TCN, the head."""

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
        self.tcn = TCN(D * len(self.dims), D, tcn_kernel, tcn_dilations, dropout, causal)
        self.head = regression_head(D, head_hidden, dropout)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        check_streams(self.dims, streams, present)
        valid = valid.bool()
        hs = [
            embed_stream(self.project[i], self.missing[i], x, p.bool(), valid)
            for i, (x, p) in enumerate(zip(streams, present))
        ]
        return torch.tanh(self.head(encode_tcn(self.tcn, torch.cat(hs, dim=-1), valid)))
