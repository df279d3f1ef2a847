"""``interactive``: bidirectional cross-modal attention.

Like ``imf`` (a TCN per stream, the visual stream queries each audio stream), and each
audio stream also queries the visual one; both directions, with their has-key flags, are
concatenated before the head::

    v_i = LayerNorm(h_0 + Attention(query=h_0, key=value=h_i))     visual -> audio i
    u_i = LayerNorm(h_i + Attention(query=h_i, key=value=h_0))     audio i -> visual
    [h_0, v_1 .. v_n, u_1 .. u_n, flags] ─ MLP ─ tanh ─> (B, W, 2)

Where the face is absent, the audio queries find no visual key at those frames (masked),
so ``u_i`` falls back to the audio stream itself and its flag says so.
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


class Interactive(nn.Module):
    """Bidirectional attention: visual queries each audio stream and each audio stream queries the visual one."""

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
        D, n_audio = d_model, len(self.dims) - 1
        self.project = nn.ModuleList(nn.Linear(d, D) for d in self.dims)
        self.missing = nn.Parameter(torch.randn(len(self.dims), D) * 0.02)
        self.tcns = nn.ModuleList(TCN(D, D, tcn_kernel, tcn_dilations, dropout, causal) for _ in self.dims)
        self.to_audio = nn.ModuleList(
            CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in range(n_audio))
        self.to_visual = nn.ModuleList(
            CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in range(n_audio))
        self.head = regression_head(D * (1 + 2 * n_audio) + 2 * n_audio, head_hidden, dropout)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        check_streams(self.dims, streams, present)
        valid = valid.bool()
        hs = [encode_tcn(self.tcns[i], embed_stream(self.project[i], self.missing[i], x, p.bool(), valid), valid)
              for i, (x, p) in enumerate(zip(streams, present))]
        n_audio = len(hs) - 1
        forward, forward_flags = cross_attend(self.to_audio, [hs[0]] * n_audio, hs[1:], present[1:], valid)
        backward, backward_flags = cross_attend(self.to_visual, hs[1:], [hs[0]] * n_audio, [present[0]] * n_audio,
                                                valid)
        parts = [hs[0], *forward, *backward, *forward_flags, *backward_flags]
        return torch.tanh(self.head(torch.cat(parts, dim=-1)))
