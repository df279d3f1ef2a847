"""Building blocks the built-in models share: stream embedding, TCN, masked attention, head.

Conventions every block follows, so that a model assembled from them keeps the contract
(values where ``present`` is False never reach the output; padding never changes a valid
frame; ``causal`` never looks ahead):

- :func:`embed_stream` replaces an absent frame's input (not multiplied by zero: replaced,
  so NaN there is harmless too) and its projection by a learned per-stream ``missing``
  vector, so a temporal model can tell "no face" from "a face whose features are zero";
  frames outside the video (``valid`` False) are zero, like a convolution's own padding.
- :class:`TCN` zeroes frames outside the video after every convolution, so the prediction
  for a frame does not depend on how much padding follows it; causal padding sits on the
  left only.
- :func:`masked_attention` masks keys where the key stream is absent (and, causally, future
  keys; :func:`key_mask`), adds the distance bias ``-slope_h * |t - s|`` per head (fixed
  ALiBi-style slopes 1, 1/4, 1/16 ...: without a positional signal a query cannot find its own
  instant; on the synthetic task CCC is 0.98 with it and about 0 without), and reports which
  queries had no key at all: their attention term is made exactly zero instead of NaN.
  :func:`attention_mask` is the same masking as one ``(B * heads, W, S)`` mask for
  ``nn.MultiheadAttention``: the reference computation, and what a plug-in may still use.

Tensor layout: models take and return ``(B, W, C)``; :class:`TCN` and :class:`TemporalBlock`
take the convolution layout ``(B, C, W)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "OPTION_HELP",
    "TCN",
    "CrossModalAttention",
    "Dropout",
    "TemporalBlock",
    "VisualQueriesAudio",
    "attention_mask",
    "check_streams",
    "checked_dims",
    "compute_dtype",
    "cross_attend",
    "distance_bias",
    "distance_slopes",
    "embed_stream",
    "encode_tcn",
    "key_mask",
    "masked_attention",
    "option_help",
    "regression_head",
    "stream_inputs",
]

OPTION_HELP = {
    "d_model": "width of every stream after its linear projection",
    "tcn_kernel": "kernel size of the TCN convolutions",
    "tcn_dilations": "dilation of each TCN block (comma-separated); receptive field 1 + 2 (kernel - 1) sum(dilations)",
    "causal": "look only at past and present frames (for online use)",
    "dropout": "dropout probability",
    "heads": "attention heads (must divide d_model)",
    "head_hidden": "hidden width of the regression head",
    "attn_distance_bias": "attention bias -slope_h |t - s|, so a query finds its own instant",
    "layers": "transformer encoder layers per stream",
    "ff_hidden": "hidden width of each transformer layer's feed-forward block",
}


def option_help(*names: str) -> dict[str, str]:
    """The shared help lines of the named options (a built-in's ``option_help``)."""
    return {n: OPTION_HELP[n] for n in names}


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
        dilations: Sequence[int] = (1, 2, 4, 8),
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if kernel < 1 or not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"tcn_kernel must be >= 1 and tcn_dilations positive, got {kernel} and {tuple(dilations)}")
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


def encode_tcn(tcn: nn.Module, h: Tensor, valid: Tensor) -> Tensor:
    """``(B, W, C) -> (B, W, C_out)`` through ``tcn``, frames outside the video masked."""
    mask = valid[:, None, :].to(h.dtype)
    return tcn(h.transpose(1, 2), mask).transpose(1, 2)


def distance_slopes(heads: int) -> Tensor:
    """Fixed slopes 1, 1/4, 1/16 ... : head 0 looks a few frames around its own instant, the last
    ones nearly the whole window. Fixed, not learned: a mask that needs no gradient lets
    scaled_dot_product_attention use its fused kernel (3x faster on CPU)."""
    return torch.tensor([4.0 ** (-h) for h in range(heads)])


def attention_mask(
    query: Tensor, key_present: Tensor, heads: int, causal: bool, slopes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(mask (B * heads, W, S), has_key (B, W))`` for ``nn.MultiheadAttention``.

    ``query`` (B, W, D) fixes W, the device and the compute dtype; ``key_present`` (B, S)
    bool marks the usable keys. A query row without any usable key is unmasked (a finite
    softmax); the caller multiplies its output by ``has_key``. The additive mask holds
    ``B * heads * W * S`` numbers (23 MB for 16 x 4 x 300 x 300): use it on windows of
    hundreds of frames, not on whole videos.
    """
    B, W = query.shape[:2]
    S = key_present.shape[1]
    allowed = key_present[:, None, :].expand(B, W, S)  # (B, W, S): query t may use key s
    t = torch.arange(W, device=query.device)
    s = torch.arange(S, device=query.device)
    if causal:
        allowed = allowed & (s[None, :] <= t[:, None])[None]
    has_key = allowed.any(dim=-1)
    allowed = allowed | ~has_key[..., None]
    # the mask must match the dtype attention computes in (autocast on CUDA: half precision)
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    if slopes is not None:
        dist = (t[:, None] - s[None, :]).abs().to(dtype)  # (W, S)
        bias = -slopes.to(dtype)[:, None, None] * dist  # (H, W, S)
        mask = torch.where(allowed[:, None], bias[None], float("-inf"))  # (B, H, W, S)
    else:
        mask = ~allowed[:, None].expand(B, heads, W, S)  # True = ignore
    return mask.reshape(B * heads, W, S), has_key


_BIASES: dict[tuple, Tensor] = {}
"""Distance biases already built, by (slopes, W, S, dtype, device): the same for every batch of a run."""


def distance_bias(slopes: Tensor, queries: int, keys: int, dtype: torch.dtype) -> Tensor:
    """``(H, W, S)`` additive bias ``-slope_h * |t - s|``, the same for every batch row and every batch.

    Built once per shape and kept (a few windows' sizes per run; 1.4 MB for 4 x 300 x 300 fp32),
    so no step pays for it again.
    """
    key = (tuple(slopes.tolist()), queries, keys, dtype, slopes.device)
    bias = _BIASES.get(key)
    if bias is None:
        t = torch.arange(queries, device=slopes.device)
        s = torch.arange(keys, device=slopes.device)
        dist = (t[:, None] - s[None, :]).abs().to(dtype)
        bias = _BIASES.setdefault(key, -slopes.to(dtype)[:, None, None] * dist)
    return bias


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype attention computes in for input ``x``: autocast's where it is on (bf16 on a CPU under
    ``--precision bf16``, half precision on CUDA), else ``x``'s. Masks are built in it, never converted."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def key_mask(
    key_allowed: Tensor, queries: int, causal: bool, dtype: torch.dtype, slopes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(additive mask, has_key (B, W))`` for :func:`masked_attention`: built once per key stream and batch.

    The mask is 0 where a query may use a key and ``-inf`` elsewhere, plus the distance bias
    (:func:`distance_bias`) when ``slopes`` is given: ``(B, H, W, S)`` then, else ``(B, 1, 1, S)``
    (``(B, 1, W, S)`` when ``causal``), broadcast over heads. A layer stack over one stream (the
    transformer's) builds it once for all its layers. A query without any usable key gets every
    key unmasked (a finite softmax); its output is multiplied by ``has_key`` (False there).
    """
    B, S = key_allowed.shape
    if causal:
        before = torch.ones(queries, S, dtype=torch.bool, device=key_allowed.device).tril_()  # s <= t
        allowed = key_allowed[:, None, :] & before  # (B, W, S)
        has_key = allowed.any(dim=-1)
        blocked = ~(allowed | ~has_key[..., None])[:, None]  # (B, 1, W, S)
    else:
        any_key = key_allowed.any(dim=-1)  # (B,)
        blocked = ~(key_allowed | ~any_key[:, None])[:, None, None]  # (B, 1, 1, S)
        has_key = any_key[:, None].expand(B, queries)
    mask = torch.zeros(blocked.shape, dtype=dtype, device=key_allowed.device).masked_fill_(blocked, float("-inf"))
    if slopes is not None:
        mask = distance_bias(slopes, queries, S, dtype)[None] + mask
    return mask, has_key


def masked_attention(attn: nn.MultiheadAttention, query: Tensor, key: Tensor, masks: tuple[Tensor, Tensor]) -> Tensor:
    """``attn``'s weights applied by ``scaled_dot_product_attention`` with ``masks`` (:func:`key_mask`);
    ``(B, W, D)``, exactly zero where a query had no key. Key and value are the same stream.

    Why not ``attn(query, key, key, attn_mask=...)``: it needs a ``(B * heads, W, S)`` mask made per
    layer with a ``where`` over it, and goes through checks and copies of its own; the mask made
    once (distance bias cached, key mask broadcast) and the kernel called directly cost 0.83x the
    CPU time for forward + backward (batch 16 x 300 frames, 4 heads, d_model 128; BENCHMARKS.md).
    The result equals the module's with the mask of :func:`attention_mask`
    (tests/fusion/models/test_layers.py).
    """
    B, W, D = query.shape
    S, H = key.shape[1], attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(query, w[:D], None if b is None else b[:D]).view(B, W, H, D // H).transpose(1, 2)  # (B, H, W, dh)
    k, v = F.linear(key, w[D:], None if b is None else b[D:]).view(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4)
    mask, has_key = masks
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=dropout)
    # laid out (W, B, D) in memory as nn.MultiheadAttention lays it out: Dropout's random draw follows the
    # strides, so a run resumed from a checkpoint of the module's time draws the same dropout masks
    out = F.linear(out.permute(2, 0, 1, 3).reshape(W * B, D), attn.out_proj.weight, attn.out_proj.bias)
    return out.view(W, B, D).transpose(0, 1) * has_key[..., None].to(out.dtype)


class CrossModalAttention(nn.Module):
    """Each query frame attends over the whole window of one key/value stream.

    Returns ``(LayerNorm(query + attention), has_key)`` where ``has_key`` (B, W) bool says
    whether the query frame had any unmasked key; where it had none the attention term is
    exactly zero (not NaN).
    """

    def __init__(self, d_model: int, heads: int, dropout: float, causal: bool, distance_bias: bool) -> None:
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.heads = heads
        self.causal = causal
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        if distance_bias:
            self.register_buffer("slopes", distance_slopes(heads), persistent=False)
        else:
            self.slopes = None

    def forward(self, query: Tensor, keys: Tensor, key_present: Tensor) -> tuple[Tensor, Tensor]:
        masks = key_mask(key_present, query.shape[1], self.causal, compute_dtype(query), self.slopes)
        out = masked_attention(self.attn, query, keys, masks)
        return self.norm(query + self.dropout(out)), masks[1]


def cross_attend(
    attentions: Iterable[nn.Module],
    queries: Sequence[Tensor],
    keys: Sequence[Tensor],
    key_present: Sequence[Tensor],
    valid: Tensor,
) -> tuple[list[Tensor], list[Tensor]]:
    """``queries[j]`` attends over ``keys[j]`` through ``attentions[j]`` (:class:`CrossModalAttention`).

    Returns the attended streams and their ``(B, W, 1)`` has-key flags (float), in order.
    """
    attended, flags = [], []
    for attn, q, k, p in zip(attentions, queries, keys, key_present):
        out, has_key = attn(q, k, p.bool() & valid)
        attended.append(out)
        flags.append(has_key[..., None].to(out.dtype))
    return attended, flags


class VisualQueriesAudio(nn.Module):
    """The fusion of imf, interactive and transformer: the encoded visual stream queries each audio stream.

    ``[h_0, a_1 .. a_n, has_key flags] -> head -> tanh`` with ``a_i`` from ``self.cross[i - 1]``
    (and, when ``bidirectional``, ``u_i`` from ``self.to_visual[i - 1]``: audio stream i queries
    the visual one). A subclass builds ``dims``, ``cross``, ``head`` (and ``to_visual``) and
    says how a stream is encoded (:meth:`encode`).
    """

    bidirectional = False
    dims: list[int]
    cross: nn.ModuleList  # one attention per audio stream, the visual one querying
    to_visual: nn.ModuleList  # bidirectional only: each audio stream querying the visual one
    head: nn.Module

    def encode(self, i: int, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
        """Stream ``i``: (B, W, d_i) -> (B, W, D)."""
        raise NotImplementedError

    def forward(self, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
        """``streams[i]`` (B, W, d_i) float, ``present[i]`` (B, W) bool, ``valid`` (B, W) bool -> (B, W, 2)."""
        check_streams(self.dims, streams, present)
        valid = valid.bool()
        hs = [self.encode(i, x, p.bool(), valid) for i, (x, p) in enumerate(zip(streams, present))]
        n_audio = len(hs) - 1
        attended, flags = cross_attend(self.cross, [hs[0]] * n_audio, hs[1:], present[1:], valid)
        if self.bidirectional:
            back, back_flags = cross_attend(self.to_visual, hs[1:], [hs[0]] * n_audio, [present[0]] * n_audio, valid)
            attended, flags = attended + back, flags + back_flags
        return torch.tanh(self.head(torch.cat([hs[0], *attended, *flags], dim=-1)))


def embed_stream(project: nn.Module, missing: Tensor, x: Tensor, present: Tensor, valid: Tensor) -> Tensor:
    """``(B, W, d) -> (B, W, D)``: projection, ``missing`` where absent, zero outside the video."""
    present = present & valid
    # discard absent inputs entirely (also NaN/inf there): the output cannot depend on them
    x = torch.where(present[..., None], x, x.new_zeros(()))
    h = project(x)
    h = torch.where(present[..., None], h, missing.to(h.dtype))
    return h * valid[..., None].to(h.dtype)


def regression_head(in_features: int, hidden: int, dropout: float, outputs: int = 2) -> nn.Sequential:
    """MLP ``in -> hidden -> outputs`` (GELU, dropout); callers apply tanh for [-1, 1]."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, outputs))


def check_streams(dims: Sequence[int], streams: Sequence[Tensor], present: Sequence[Tensor]) -> None:
    """The batch has one stream and one mask per ``dims`` entry, of those widths."""
    if len(streams) != len(dims) or len(present) != len(dims):
        raise ValueError(f"model built for {len(dims)} streams, got {len(streams)} streams / {len(present)} masks")
    for i, (x, d) in enumerate(zip(streams, dims)):
        if x.shape[-1] != d:
            raise ValueError(f"stream {i}: width {x.shape[-1]}, model built for {d}")


def checked_dims(dims: Sequence[int], d_model: int, dropout: float, head_hidden: int) -> list[int]:
    """``dims`` as a list of positive ints; ValueError for option values no built-in can work with."""
    dims = [int(d) for d in dims]
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty list of positive widths, got {dims}")
    if d_model < 1 or head_hidden < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"need d_model >= 1, head_hidden >= 1 and 0 <= dropout < 1, got "
            f"d_model={d_model} head_hidden={head_hidden} dropout={dropout}"
        )
    return dims


def stream_inputs(dims: Sequence[int], d_model: int) -> tuple[nn.ModuleList, nn.Parameter]:
    """Per stream a projection to ``d_model`` and a learned "missing" vector, for :func:`embed_stream`.

    Created in this order (projections, then the (n, d_model) vectors), so that a model's
    initial weights for a seed stay what they were.
    """
    project = nn.ModuleList(nn.Linear(d, d_model) for d in dims)
    return project, nn.Parameter(torch.randn(len(dims), d_model) * 0.02)
