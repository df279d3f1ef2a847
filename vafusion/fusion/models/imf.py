"""``imf``: the paper's model (Interactive Multimodal Fusion, arXiv 2503.10523), and ``interactive``.

Data flow for streams ``x_0`` (visual, the query stream) and ``x_1 .. x_n`` (audio)::

    x_i (B, W, d_i) ─ Linear ─ absent frames -> learned "missing" vector ─ TCN_i ─> h_i (B, W, D)
    a_i = LayerNorm(h_0 + Attention_i(query=h_0, key=value=h_i))          i = 1..n
    [h_0, a_1 .. a_n, has_key_1 .. has_key_n] ─ MLP ─ Linear(., 2) ─ tanh ─> (B, W, 2)

Masking, padding and causality follow :mod:`vafusion.fusion.models.layers`. The head
receives a per-frame ``has_key`` flag for every audio stream, so it knows when a visual
query found no audio at all (a video without sound, or causally a frame before the first
audio). With one stream the model is a TCN plus head.

``interactive`` adds the other direction: each audio stream also queries the visual one,
``u_i = LayerNorm(h_i + Attention(query=h_i, key=value=h_0))``, and ``u_1 .. u_n`` with
their flags join the head's input. Where the face is absent the audio queries find no
visual key (masked), so ``u_i`` falls back to the audio stream itself and its flag says so.

The state_dict keys of ``imf`` (``project``, ``missing``, ``tcns``, ``cross``, ``head``) are
those of the ``FusionModel`` of config_version 1, so run directories of that version load
unchanged.

Why ``d_model`` 64 by default (128 before the fast recipe; every run records its width): the
TCN's convolutions are most of a training step, already run at a good share of the CPU's peak,
and cost the square of the width. Halving the width is the one change that made
the step itself faster in fp32; on the hard corpus of BENCHMARKS.md section 12 it reached the
quality bar at the same epoch as 128 for a best validation P 0.004 lower. ``--model-option
d_model=128`` gives the earlier width (a larger corpus may want it; compare both).
"""

from __future__ import annotations

from torch import Tensor, nn

from vafusion.fusion.models.layers import (
    TCN,
    CrossModalAttention,
    VisualQueriesAudio,
    checked_dims,
    embed_stream,
    encode_tcn,
    option_help,
    regression_head,
    stream_inputs,
)
from vafusion.fusion.models.spaces import option_space


class IMF(VisualQueriesAudio):
    """The paper's model: a TCN per stream, the visual stream queries each audio stream."""

    option_help = option_help(
        "d_model", "tcn_kernel", "tcn_dilations", "causal", "dropout", "heads", "head_hidden", "attn_distance_bias"
    )
    option_space = option_space("d_model", "tcn_kernel", "tcn_dilations", "dropout", "heads", "head_hidden")

    def __init__(
        self,
        dims: list[int],
        *,
        d_model: int = 64,
        tcn_kernel: int = 5,
        tcn_dilations: tuple[int, ...] = (1, 2, 4, 8),
        causal: bool = False,
        dropout: float = 0.2,
        heads: int = 4,
        head_hidden: int = 64,
        attn_distance_bias: bool = True,
    ) -> None:
        super().__init__()
        self.dims = checked_dims(dims, d_model, dropout, head_hidden)
        D, n_audio = d_model, len(self.dims) - 1
        directions = 2 if self.bidirectional else 1
        self.project, self.missing = stream_inputs(self.dims, D)
        self.tcns = nn.ModuleList(TCN(D, D, tcn_kernel, tcn_dilations, dropout, causal) for _ in self.dims)
        self.cross = nn.ModuleList(
            CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in range(n_audio)
        )
        self.head = regression_head(D * (1 + directions * n_audio) + directions * n_audio, head_hidden, dropout)
        if self.bidirectional:
            self.to_visual = nn.ModuleList(
                CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in range(n_audio)
            )

    def encode(self, i: int, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        """Stream ``i``: (B, W, d_i) -> (B, W, D) after projection, missing-frame substitution, TCN."""
        return encode_tcn(self.tcns[i], embed_stream(self.project[i], self.missing[i], x, present, valid), valid)


class Interactive(IMF):
    """Bidirectional attention: visual queries each audio stream and each audio stream queries the visual one."""

    bidirectional = True
