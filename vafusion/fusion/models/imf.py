"""``imf``: the paper's model (Interactive Multimodal Fusion, arXiv 2503.10523).

Data flow for streams ``x_0`` (visual, the query stream) and ``x_1 .. x_n`` (audio)::

    x_i (B, W, d_i) ─ Linear ─ absent frames -> learned "missing" vector ─ TCN_i ─> h_i (B, W, D)
    a_i = LayerNorm(h_0 + Attention_i(query=h_0, key=value=h_i))          i = 1..n
    [h_0, a_1 .. a_n, has_key_1 .. has_key_n] ─ MLP ─ Linear(., 2) ─ tanh ─> (B, W, 2)

Masking, padding and causality follow :mod:`vafusion.fusion.models.layers`. The head
receives a per-frame ``has_key`` flag for every audio stream, so it knows when a visual
query found no audio at all (a video without sound, or causally a frame before the first
audio). With one stream the model is a TCN plus head.

Its state_dict keys (``project``, ``missing``, ``tcns``, ``cross``, ``head``) are those of
the ``FusionModel`` of config_version 1, so run directories of that version load unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vafusion.fusion.models.layers import (
    TCN,
    CrossModalAttention,
    check_common,
    check_dims,
    cross_attend,
    check_streams,
    embed_stream,
    encode_tcn,
    option_help,
    regression_head,
)


class IMF(nn.Module):
    """The paper's model: a TCN per stream, the visual stream queries each audio stream."""

    option_help = option_help("d_model", "tcn_kernel", "tcn_dilations", "causal", "dropout", "heads", "head_hidden",
                              "attn_distance_bias")

    def __init__(
        self, dims: list[int], *, d_model: int = 128, tcn_kernel: int = 5, tcn_dilations: tuple[int, ...] = (1, 2, 4, 8),
        causal: bool = False, dropout: float = 0.2, heads: int = 4, head_hidden: int = 64,
        attn_distance_bias: bool = True,
    ) -> None:
        super().__init__()
        self.dims = check_dims(dims)
        check_common(d_model, dropout, head_hidden)
        self.causal = bool(causal)
        D = d_model
        self.project = nn.ModuleList(nn.Linear(d, D) for d in self.dims)
        self.missing = nn.Parameter(torch.randn(len(self.dims), D) * 0.02)  # one learned vector per stream
        self.tcns = nn.ModuleList(TCN(D, D, tcn_kernel, tcn_dilations, dropout, causal) for _ in self.dims)
        self.cross = nn.ModuleList(
            CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in self.dims[1:]
        )
        self.head = regression_head(D * len(self.dims) + len(self.dims) - 1, head_hidden, dropout)

    def encode(self, i: int, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        """Stream ``i``: (B, W, d_i) -> (B, W, D) after projection, missing-frame substitution, TCN."""
        return encode_tcn(self.tcns[i], embed_stream(self.project[i], self.missing[i], x, present, valid), valid)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        """``streams[i]`` (B, W, d_i) float, ``present[i]`` (B, W) bool, ``valid`` (B, W) bool -> (B, W, 2)."""
        check_streams(self.dims, streams, present)
        valid = valid.bool()
        hs = [self.encode(i, x, p.bool(), valid) for i, (x, p) in enumerate(zip(streams, present))]
        n_audio = len(self.cross)
        attended, flags = cross_attend(self.cross, [hs[0]] * n_audio, hs[1:], present[1:], valid)
        return torch.tanh(self.head(torch.cat([hs[0], *attended, *flags], dim=-1)))
