"""``transformer``: a temporal transformer encoder per stream in place of the TCN, then imf's fusion.

Each stream is embedded like imf's (absent frames -> learned ``missing`` vector) and run
through ``layers`` pre-norm encoder layers of self-attention over the window with the same
masking as imf's cross attention: keys where the stream is absent or outside the video are
masked, the distance bias ``-slope_h * |t - s|`` gives each head a sense of position, and in
causal mode future keys are masked too. Frames outside the video are zeroed after every
layer, so padding never changes a valid frame. The visual encoding then queries each audio
encoding exactly as in ``imf``.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from vafusion.fusion.models.layers import (
    CrossModalAttention,
    Dropout,
    VisualQueriesAudio,
    checked_dims,
    compute_dtype,
    distance_slopes,
    embed_stream,
    key_mask,
    masked_attention,
    option_help,
    regression_head,
    stream_inputs,
)
from vafusion.fusion.models.spaces import option_space


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + feed-forward over a window ``(B, W, D)``, masked as the module says."""

    def __init__(
        self, d_model: int, heads: int, ff_hidden: int, dropout: float, causal: bool, distance_bias: bool
    ) -> None:
        super().__init__()
        if heads < 1 or d_model % heads or ff_hidden < 1:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads}), ff_hidden >= 1 ({ff_hidden})")
        self.heads, self.causal = heads, causal
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_hidden), nn.GELU(), Dropout(dropout), nn.Linear(ff_hidden, d_model)
        )
        self.dropout = Dropout(dropout)
        if distance_bias:
            self.register_buffer("slopes", distance_slopes(heads), persistent=False)
        else:
            self.slopes = None

    def forward(
        self, x: Tensor, key_present: Tensor, valid: Tensor, masks: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """``masks``: :func:`key_mask` of ``key_present``, built once for a stack of layers (else here)."""
        q = self.norm1(x)
        masks = masks or key_mask(key_present, x.shape[1], self.causal, compute_dtype(q), self.slopes)
        x = x + self.dropout(masked_attention(self.attn, q, q, masks))
        x = x + self.dropout(self.ff(self.norm2(x)))
        return x * valid[..., None].to(x.dtype)


class TemporalTransformer(VisualQueriesAudio):
    """A transformer encoder per stream (masked, distance-biased) instead of the TCN; fusion as imf."""

    option_help = option_help(
        "d_model", "layers", "heads", "ff_hidden", "causal", "dropout", "head_hidden", "attn_distance_bias"
    )
    option_space = option_space("d_model", "layers", "heads", "ff_hidden", "dropout", "head_hidden")

    def __init__(
        self,
        dims: list[int],
        *,
        d_model: int = 128,
        layers: int = 2,
        heads: int = 4,
        ff_hidden: int = 256,
        causal: bool = False,
        dropout: float = 0.2,
        head_hidden: int = 64,
        attn_distance_bias: bool = True,
    ) -> None:
        super().__init__()
        self.dims = checked_dims(dims, d_model, dropout, head_hidden)
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        D = d_model
        self.project, self.missing = stream_inputs(self.dims, D)
        self.encoders = nn.ModuleList(
            nn.ModuleList(
                TransformerLayer(D, heads, ff_hidden, dropout, causal, attn_distance_bias) for _ in range(layers)
            )
            for _ in self.dims
        )
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in self.dims)
        self.cross = nn.ModuleList(
            CrossModalAttention(D, heads, dropout, causal, attn_distance_bias) for _ in self.dims[1:]
        )
        self.head = regression_head(D * len(self.dims) + len(self.dims) - 1, head_hidden, dropout)

    def encode(self, i: int, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        h = embed_stream(self.project[i], self.missing[i], x, present, valid)
        usable = present & valid
        layers = cast(nn.ModuleList, self.encoders[i])  # a ModuleList of layers per stream
        first = cast(TransformerLayer, layers[0])
        masks = key_mask(usable, h.shape[1], first.causal, compute_dtype(h), first.slopes)  # once for all layers
        for layer in layers:
            h = layer(h, usable, valid, masks)
        return self.norms[i](h) * valid[..., None].to(h.dtype)
