"""The stage-2 network: per-modality TCNs, visual-to-audio cross attention, a regression head.

Data flow for streams ``x_0`` (visual, the query stream) and ``x_1 .. x_n`` (audio)::

    x_i (B, W, d_i) ─ Linear ─ absent frames -> learned "missing" vector ─ TCN_i ─> h_i (B, W, D)
    a_i = LayerNorm(h_0 + Attention_i(query=h_0, key=value=h_i))          i = 1..n
    [h_0, a_1 .. a_n, has_key_1 .. has_key_n] ─ MLP ─ Linear(., 2) ─ tanh ─> (B, W, 2)

Missing data is explicit at every step, so values where ``present`` is False never reach
the output:

- Before the TCN, an absent frame's input is discarded (not multiplied by zero: replaced)
  and its projection is replaced by a learned per-stream ``missing`` vector, so the TCN
  can tell "no face" from "a face whose features happen to be zero".
- Frames outside the video (``valid`` False: padding of short videos) are zeroed after
  every convolution, exactly like the convolution's own zero padding at a window edge;
  the prediction for a frame therefore does not depend on how much padding follows it.
- Attention keys where the audio stream is absent are masked (``key_padding_mask``
  semantics). A query with no key left (a video without audio, or in causal mode a frame
  before the first audio) gets an attention output of exactly zero instead of NaN, and
  the head receives a per-frame ``has_key`` flag for every audio stream so it knows.

The attention adds a distance bias ``-slope_h * |t - s|`` per head (ALiBi-style, fixed
slopes 1, 1/4, 1/16 ... from local to nearly global): without any positional
signal a visual query could not find the audio frame at its own instant (on the synthetic
task of the tests, arousal = tanh(audio feature), CCC is 0.98 with it and about 0 without).
The slopes are fixed, not learned: a mask that needs no gradient keeps attention on the
fused kernel. Switch it off
with ``FusionConfig.attn_distance_bias = False``. In causal mode the attention also
masks future keys, so the whole model never looks ahead.

Tensor layout: the public :class:`FusionModel` takes and returns batch-first, time-major
tensors ``(B, W, C)`` like the data loader; :class:`TCN` and :class:`TemporalBlock` take
the convolution layout ``(B, C, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vafusion.fusion.config import FusionConfig

__all__ = ["TemporalBlock", "TCN", "CrossModalAttention", "FusionModel", "build_model", "count_parameters"]


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU: a uniform draw compared in place.

    ``F.dropout`` on CPU costs as much as one of the TCN's convolutions (its Bernoulli
    sampling is slow), and the TCN applies it after each of them; this version is about
    2x cheaper forward and backward, with the same semantics (inverted dropout, drawn from
    the global generator, so seeding makes it reproducible).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1.0:
            return torch.zeros_like(x)
        return x * torch.rand_like(x).ge_(self.p).div_(1.0 - self.p)


def _conv_padding(kernel: int, dilation: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding that keeps the length: all on the left when causal."""
    total = (kernel - 1) * dilation
    if causal:
        return total, 0
    return total // 2, total - total // 2


class TemporalBlock(nn.Module):
    """Two weight-normalised dilated convolutions with a residual connection.

    Input and output are ``(B, C, W)``. ``mask`` (``(B, 1, W)`` float, 1 inside the video)
    zeroes frames outside the video after each convolution, so padding of short videos
    behaves like the convolution's own zero padding.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, dilation: int, dropout: float, causal: bool
    ) -> None:
        super().__init__()
        self.pad = _conv_padding(kernel, dilation, causal)
        # symmetric padding can be done by the convolution itself (no copy); otherwise F.pad
        self._conv_pad = self.pad[0] if self.pad[0] == self.pad[1] else 0
        self.conv1 = weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel, dilation=dilation, padding=self._conv_pad)
        )
        self.conv2 = weight_norm(
            nn.Conv1d(out_channels, out_channels, kernel, dilation=dilation, padding=self._conv_pad)
        )
        self.dropout = Dropout(dropout)
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _conv(self, conv: nn.Module, x: Tensor) -> Tensor:
        if not self._conv_pad and self.pad != (0, 0):
            x = F.pad(x, self.pad)
        return conv(x)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        y = self.dropout(F.relu(self._conv(self.conv1, x)))
        if mask is not None:
            y = y * mask
        y = self.dropout(F.relu(self._conv(self.conv2, y)))
        res = x if self.residual is None else self.residual(x)
        out = F.relu(y + res)
        if mask is not None:
            out = out * mask
        return out


class TCN(nn.Module):
    """A stack of :class:`TemporalBlock` with growing dilation; ``(B, C_in, W) -> (B, C_out, W)``.

    Receptive field: ``1 + 2 * (kernel - 1) * sum(dilations)`` frames (121 with the defaults
    5 and 1,2,4,8), centred unless ``causal``, in which case it covers only past frames.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: int = 5,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        blocks = []
        c = in_channels
        for d in dilations:
            blocks.append(TemporalBlock(c, channels, kernel, d, dropout, causal))
            c = channels
        self.blocks = nn.ModuleList(blocks)
        self.receptive_field = 1 + 2 * (kernel - 1) * sum(dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None and bool(mask.all()):
            mask = None  # no padding in this batch: skip the multiplications
        for block in self.blocks:
            x = block(x, mask)
        return x


class CrossModalAttention(nn.Module):
    """Each query frame attends over the whole window of one key/value stream.

    Returns ``(LayerNorm(query + attention), has_key)`` where ``has_key`` (B, W) bool says
    whether the query frame had any unmasked key; where it had none the attention term is
    exactly zero (not NaN). The additive mask holds ``B * heads * W * S`` numbers (23 MB for
    16 x 4 x 300 x 300): run it on windows of hundreds of frames, not on whole videos.
    """

    def __init__(self, d_model: int, heads: int, dropout: float, causal: bool, distance_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        if distance_bias:
            # fixed slopes 1, 1/4, 1/16 ... : head 0 looks a few frames around its own instant, the
            # last ones nearly the whole window. Fixed, not learned: a mask that needs no gradient
            # lets scaled_dot_product_attention use its fused kernel (3x faster on CPU).
            self.register_buffer("slopes", torch.tensor([4.0 ** (-h) for h in range(heads)]), persistent=False)
        else:
            self.slopes = None

    def forward(self, query: Tensor, keys: Tensor, key_present: Tensor) -> tuple[Tensor, Tensor]:
        B, W, _ = query.shape
        S = keys.shape[1]
        allowed = key_present[:, None, :].expand(B, W, S)  # (B, W, S): query t may use key s
        t = torch.arange(W, device=query.device)
        s = torch.arange(S, device=query.device)
        if self.causal:
            allowed = allowed & (s[None, :] <= t[:, None])[None]
        has_key = allowed.any(dim=-1)  # (B, W)
        # rows without any key: unmask them (finite softmax), the output is zeroed below
        allowed = allowed | ~has_key[..., None]
        # the mask must match the dtype attention computes in (autocast on CUDA: half precision)
        device = query.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
        if self.slopes is not None:
            dist = (t[:, None] - s[None, :]).abs().to(dtype)  # (W, S)
            bias = -self.slopes.to(dtype)[:, None, None] * dist  # (H, W, S)
            mask = torch.where(allowed[:, None], bias[None], float("-inf"))  # (B, H, W, S)
        else:
            mask = ~allowed[:, None].expand(B, self.heads, W, S)  # True = ignore
        mask = mask.reshape(B * self.heads, W, S)
        out, _ = self.attn(query, keys, keys, attn_mask=mask, need_weights=False)
        out = out * has_key[..., None].to(out.dtype)
        return self.norm(query + self.dropout(out)), has_key


class FusionModel(nn.Module):
    """Visual TCN queries audio TCNs; regresses (valence, arousal) in [-1, 1] per frame.

    ``dims[i]`` is the width of feature set ``config.features[i]``; the first is the
    visual query stream. With one stream the model is a TCN plus head (no attention).
    """

    def __init__(self, config: FusionConfig, dims: list[int]) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"dims must be a non-empty list of positive widths, got {dims}")
        self.dims = dims
        self.causal = bool(config.causal)
        D = config.d_model
        self.project = nn.ModuleList(nn.Linear(d, D) for d in dims)
        self.missing = nn.Parameter(torch.randn(len(dims), D) * 0.02)  # one learned vector per stream
        self.tcns = nn.ModuleList(
            TCN(D, D, config.tcn_kernel, config.tcn_dilations, config.dropout, config.causal) for _ in dims
        )
        self.cross = nn.ModuleList(
            CrossModalAttention(D, config.heads, config.dropout, config.causal, config.attn_distance_bias)
            for _ in dims[1:]
        )
        n_audio = len(dims) - 1
        head_in = D * len(dims) + n_audio
        self.head = nn.Sequential(
            nn.Linear(head_in, config.head_hidden),
            nn.GELU(),
            Dropout(config.dropout),
            nn.Linear(config.head_hidden, 2),
        )

    def encode(self, i: int, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        """Stream ``i``: (B, W, d_i) -> (B, W, D) after projection, missing-frame substitution, TCN."""
        present = present & valid
        # discard absent inputs entirely (also NaN/inf there): the output cannot depend on them
        x = torch.where(present[..., None], x, x.new_zeros(()))
        h = self.project[i](x)
        h = torch.where(present[..., None], h, self.missing[i].to(h.dtype))
        h = h * valid[..., None].to(h.dtype)  # outside the video: zero, like conv padding
        mask = valid[:, None, :].to(h.dtype)
        return self.tcns[i](h.transpose(1, 2), mask).transpose(1, 2)

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        """``streams[i]`` (B, W, d_i) float, ``present[i]`` (B, W) bool, ``valid`` (B, W) bool -> (B, W, 2)."""
        if len(streams) != len(self.dims) or len(present) != len(self.dims):
            raise ValueError(
                f"model built for {len(self.dims)} streams, got {len(streams)} streams / {len(present)} masks"
            )
        for i, (x, d) in enumerate(zip(streams, self.dims)):
            if x.shape[-1] != d:
                raise ValueError(f"stream {i}: width {x.shape[-1]}, model built for {d}")
        valid = valid.bool()
        hs = [self.encode(i, x, p.bool(), valid) for i, (x, p) in enumerate(zip(streams, present))]
        parts = [hs[0]]
        flags = []
        for j, cross in enumerate(self.cross, start=1):
            attended, has_key = cross(hs[0], hs[j], present[j].bool() & valid)
            parts.append(attended)
            flags.append(has_key[..., None].to(attended.dtype))
        return torch.tanh(self.head(torch.cat(parts + flags, dim=-1)))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (weight-norm counts g and v)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(config: FusionConfig, dims: list[int]) -> FusionModel:
    """A :class:`FusionModel` whose initial weights depend only on ``config.seed``.

    The global RNG is left untouched (forked), so building a model does not shift the
    random stream the trainer uses for shuffling and dropout.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return FusionModel(config, dims)
