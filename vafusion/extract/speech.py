"""Self-supervised speech models (torchaudio's wav2vec 2.0, HuBERT, WavLM) as track extractors.

Each model turns 16 kHz audio into one vector per 20 ms step: its convolutional frontend
has a 400-sample receptive field and a 320-sample stride (read from the model, not
assumed), so step j covers samples [320 j, 320 j + 400) and is centred at
(320 j + 200) / 16000 s. The chosen transformer layer's steps (option ``layer``: a number
1..L, ``A-B`` for the mean of layers A..B, or ``mean`` for all L, the default) go onto the
frame grid through the shared aligner (mean over each frame's span).

Long tracks run in chunks (option ``chunk``, seconds, default 30) so memory stays bounded:
self-attention over a whole 30-minute track would be one 90000 x 90000 matrix per head.
Chunks start on the 320-sample step grid and overlap by ``context`` seconds (default 3) on
each side; every step is taken from the chunk in which it sits farthest from a cut, so it
has at least ``context`` seconds of audio on both sides (except at the track's own ends),
and its row is exactly the model's row for that chunk. A track that fits in one chunk is
one call: exactly the whole-track result. (No chunking reproduces whole-track rows of a
model with global attention; the overlap bounds what a cut changes.)

Weights: ``default`` (torchaudio's published file, downloaded once into the torch hub
cache), a local state_dict PATH in torchaudio's layout, or ``random`` (the architecture
from torchaudio's factory with a seeded initialisation, nothing downloaded).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vafusion.device import autocast
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.audio import SAMPLE_RATE
from vafusion.extract.registry import BuildRequest, Family
from vafusion.extract.weights import assign_state_dict, read_state_dict
from vafusion.hashing import sha256_file

if TYPE_CHECKING:
    from torchaudio.models import Wav2Vec2Model

WEIGHTS_URL = "https://download.pytorch.org/torchaudio/models/"
RANDOM_SEED = 0
DEFAULT_CHUNK_S = 30.0
DEFAULT_CONTEXT_S = 3.0


@dataclass(frozen=True)
class SpeechModel:
    """One built-in: torchaudio's architecture factory, its published weights, its input norm."""

    factory: str  # torchaudio.models.<factory>()
    weights_file: str  # WEIGHTS_URL + this (the torchaudio.pipelines bundle's file)
    normalize_waveform: bool  # the bundle layer-normalises each input waveform


MODELS: dict[str, SpeechModel] = {
    "wav2vec2_base": SpeechModel("wav2vec2_base", "wav2vec2_fairseq_base_ls960.pth", False),
    "wav2vec2_large": SpeechModel("wav2vec2_large", "wav2vec2_fairseq_large_ls960.pth", False),
    "wav2vec2_large_lv60k": SpeechModel("wav2vec2_large_lv60k", "wav2vec2_fairseq_large_lv60k.pth", True),
    "wav2vec2_xlsr53": SpeechModel("wav2vec2_large_lv60k", "wav2vec2_fairseq_large_xlsr53.pth", True),
    "hubert_base": SpeechModel("hubert_base", "hubert_fairseq_base_ls960.pth", False),
    "hubert_large": SpeechModel("hubert_large", "hubert_fairseq_large_ll60k.pth", True),
    "hubert_xlarge": SpeechModel("hubert_xlarge", "hubert_fairseq_xlarge_ll60k.pth", True),
    "wavlm_base": SpeechModel("wavlm_base", "wavlm_base.pth", False),
    "wavlm_base_plus": SpeechModel("wavlm_base", "wavlm_base_plus.pth", False),
    "wavlm_large": SpeechModel("wavlm_large", "wavlm_large.pth", True),
}
"""The built-in names; the tests check each row against torchaudio.pipelines' bundle."""

OPTIONS = ("layer", "chunk", "context")


def architecture(name: str, device: str = "cpu") -> Wav2Vec2Model:
    """The untrained model of built-in ``name`` (``device="meta"``: shapes only)."""
    import torchaudio.models

    with torch.device(device):
        return getattr(torchaudio.models, MODELS[name].factory)()


@dataclass(frozen=True)
class StepGeometry:
    """Where a model's steps sit in the samples: receptive field and stride of its conv frontend."""

    receptive_field: int
    stride: int

    @classmethod
    def of(cls, model: Wav2Vec2Model) -> StepGeometry:
        """Of a torchaudio model (its feature extractor's conv layers)."""
        frontend: Any = model.feature_extractor  # torchaudio types the model's parts as nn.Module only
        convs = [block.conv for block in frontend.conv_layers]
        return cls.of_convs([c.kernel_size[0] for c in convs], [c.stride[0] for c in convs])

    @classmethod
    def of_convs(cls, kernels: Sequence[int], strides: Sequence[int]) -> StepGeometry:
        """Of a stack of unpadded 1-D convolutions (kernel sizes and strides, first layer first)."""
        field, jump = 1, 1
        for kernel, stride in zip(kernels, strides, strict=True):
            field += (kernel - 1) * jump
            jump *= stride
        return cls(field, jump)

    def n_steps(self, n_samples: int) -> int:
        return 0 if n_samples < self.receptive_field else 1 + (n_samples - self.receptive_field) // self.stride

    def steps(self, n: int, sample_rate: int = SAMPLE_RATE) -> align.Steps:
        """``n`` steps centred at (stride j + field / 2) / sample_rate."""
        return align.Steps.regular(self.receptive_field / 2 / sample_rate, self.stride / sample_rate, n)


def chunk_sizes(
    entry: str, chunk_s: float, context_s: float, rate: int, stride: int, n_steps: Callable[[int], int]
) -> tuple[int, int]:
    """``(steps of a chunk, steps of context on each side)`` for the ``chunk``/``context`` options in seconds
    (``n_steps``: how many steps that many samples give). A chunk must own at least one step: else the
    option of ``entry`` is named."""
    chunk_steps = max(1, n_steps(int(round(chunk_s * rate))))
    context_steps = int(round(context_s * rate / stride))
    if chunk_steps - 2 * context_steps < 1:
        raise VafusionError(
            f"--extractor-option {entry}.chunk={chunk_s:g}: a chunk must be longer than twice "
            f"the context ({context_s:g} s)"
        )
    return chunk_steps, context_steps


def chunk_plan(n_steps: int, chunk_steps: int, context_steps: int) -> list[tuple[int, int, int]]:
    """``[(first step of the chunk, first owned step, end of owned steps)]`` covering all steps.

    Chunks hold ``chunk_steps`` steps (the last is moved back to end at the track's end);
    each owns the steps at least ``context_steps`` from its cuts.
    """
    if n_steps <= chunk_steps:
        return [(0, 0, n_steps)]
    hop = chunk_steps - 2 * context_steps
    plan: list[tuple[int, int, int]] = []
    start = 0
    while start + chunk_steps < n_steps:
        own_lo = plan[-1][2] if plan else 0
        plan.append((start, own_lo, start + context_steps + hop))
        start += hop
    plan.append((n_steps - chunk_steps, plan[-1][2], n_steps))
    return plan


def run_chunks(
    x: Tensor, plan: list[tuple[int, int, int]], chunk_samples: int, stride: int, run: Callable[[Tensor], Tensor]
) -> Tensor:
    """The rows of a track by :func:`chunk_plan`: ``run`` (samples -> step rows) on each chunk of
    ``chunk_samples`` samples starting at step ``start`` (sample ``start * stride``), each chunk's
    owned rows kept. One chunk: ``run`` on the whole track (its trailing samples included, as a
    whole-track call would)."""
    if len(plan) == 1:
        return run(x)
    parts = []
    for start, lo, hi in plan:
        rows = run(x[start * stride : start * stride + chunk_samples])
        parts.append(rows[lo - start : hi - start])
    return torch.cat(parts)


def parse_layers(text: str, n_layers: int, name: str) -> tuple[int, int]:
    """``"mean"`` -> all layers, ``"6"`` -> (6, 6), ``"4-9"`` -> (4, 9); 1-based, inclusive."""
    try:
        if text == "mean":
            first, last = 1, n_layers
        elif "-" in text:
            first, last = (int(x) for x in text.split("-"))
        else:
            first = last = int(text)
    except ValueError:
        first = last = -1
    if not 1 <= first <= last <= n_layers:
        raise VafusionError(
            f"--extractor-option {name}.layer={text}: use a layer 1..{n_layers}, A-B (the mean of "
            f"layers A..B) or mean (all {n_layers})"
        )
    return first, last


def parse_seconds(options: dict, key: str, default: float, name: str) -> float:
    try:
        value = float(options.get(key, default))
    except ValueError:
        value = math.nan
    if not value > 0:
        raise VafusionError(f"--extractor-option {name}.{key}={options[key]}: give a positive number of seconds")
    return value


def encoder_shape(model: Wav2Vec2Model) -> tuple[int, int]:
    """``(transformer layers, output width)`` of a model (torchaudio types its parts as nn.Module only)."""
    encoder: Any = model.encoder
    return len(encoder.transformer.layers), int(encoder.feature_projection.projection.out_features)


class SpeechExtractor:
    """A track extractor around a torchaudio wav2vec 2.0 / HuBERT / WavLM model."""

    kind: Literal["track"] = "track"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        name: str,
        model: Wav2Vec2Model,
        weights_provenance: dict[str, Any],
        normalize_waveform: bool,
        layer: str = "mean",
        chunk_s: float = DEFAULT_CHUNK_S,
        context_s: float = DEFAULT_CONTEXT_S,
    ) -> None:
        self.name = name
        self.model = model.eval()
        self.normalize_waveform = normalize_waveform
        self.geometry = StepGeometry.of(model)
        n_layers, self.dim = encoder_shape(model)
        self.layers = parse_layers(layer, n_layers, name)
        g = self.geometry
        self.chunk_steps, self.context_steps = chunk_sizes(name, chunk_s, context_s, SAMPLE_RATE, g.stride, g.n_steps)
        self.device = torch.device("cpu")
        first, last = self.layers
        self._provenance = dict(
            weights_provenance,
            dim=self.dim,
            sample_rate=SAMPLE_RATE,
            normalize_waveform=normalize_waveform,
            layer=str(first) if first == last else f"mean of {first}-{last} (of {n_layers})",
            step=f"{1000 * g.stride / SAMPLE_RATE:g} ms ({g.stride} samples), window {g.receptive_field} samples",
            chunk=f"{self.chunk_steps} steps, {self.context_steps} steps of context each side",
            pooling=align.SPAN_MEAN,
            timing=align.GRID_TIMING,
        )

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> SpeechExtractor:
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        return self

    def _run(self, x: Tensor) -> Tensor:
        """One chunk ``(n,)`` -> its ``(steps, dim)`` rows (the chosen layers' mean), float32 CPU."""
        if self.normalize_waveform:
            x = F.layer_norm(x, x.shape)
        first, last = self.layers
        with autocast(self.device):
            outputs, _ = self.model.extract_features(x[None], num_layers=last)
        picked = outputs[first - 1 : last]
        return (picked[0] if len(picked) == 1 else torch.stack(picked).mean(0))[0].float().cpu()

    def step_features(self, wave: Tensor) -> Tensor:
        """``(n,)`` samples -> ``(S, dim)`` step rows, chunk by chunk (memory bounded by the chunk)."""
        g = self.geometry
        x = torch.as_tensor(wave, dtype=torch.float32).to(self.device)
        if x.numel() < g.receptive_field:  # shorter than one step: pad with silence to one step
            x = F.pad(x, (0, g.receptive_field - x.numel()))
        total = g.n_steps(x.numel())
        chunk_samples = (self.chunk_steps - 1) * g.stride + g.receptive_field
        return run_chunks(
            x, chunk_plan(total, self.chunk_steps, self.context_steps), chunk_samples, g.stride, self._run
        )

    def __call__(self, wave: Tensor, frame_times: np.ndarray) -> Tensor:
        rows = self.step_features(wave)
        return align.span_mean(rows, self.geometry.steps(len(rows)), frame_times)


def _load_weights(name: str, spec: str) -> tuple[Wav2Vec2Model, dict[str, Any]]:
    if spec == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = architecture(name)
        return model, {"model": name, "weights": "random", "sha256": None}
    model = architecture(name, "meta")
    if spec == "default":
        url = WEIGHTS_URL + MODELS[name].weights_file
        cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
        except Exception as e:  # URLError, HTTPError, truncated file ...
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VafusionError(
                f"{url}: could not get {name} weights ({reason}); on a machine with network download "
                f"the file into {cache_dir}, or pass a local state_dict path as weights"
            ) from e
        assign_state_dict(model, state, url, name, "delete the cached file to download it again")
        cached = cache_dir / os.path.basename(urlparse(url).path)
        return model, {
            "model": name,
            "weights": "torchaudio:default",
            "url": url,
            "sha256": sha256_file(cached) if cached.is_file() else None,
        }
    path = Path(spec)
    fix = (
        f"pass a state_dict of torchaudio's {MODELS[name].factory} (torch.save(model.state_dict(), PATH)), "
        "default or random"
    )
    assign_state_dict(model, read_state_dict(path, fix), path, name, fix)
    return model, {"model": name, "weights": f"file:{path.name}", "sha256": sha256_file(path)}


def _check(request: BuildRequest) -> None:
    options = dict(request.options)
    parse_seconds(options, "chunk", DEFAULT_CHUNK_S, request.name)
    parse_seconds(options, "context", DEFAULT_CONTEXT_S, request.name)
    n_layers, _ = encoder_shape(architecture(request.name, "meta"))
    parse_layers(options.get("layer", "mean"), n_layers, request.name)


def _build(request: BuildRequest) -> SpeechExtractor:
    _check(request)
    options = dict(request.options)
    model, prov = _load_weights(request.name, request.weights or "default")
    return SpeechExtractor(
        request.name,
        model,
        prov,
        MODELS[request.name].normalize_waveform,
        layer=options.get("layer", "mean"),
        chunk_s=parse_seconds(options, "chunk", DEFAULT_CHUNK_S, request.name),
        context_s=parse_seconds(options, "context", DEFAULT_CONTEXT_S, request.name),
    )


FAMILY = Family(
    key="speech",
    names=lambda: tuple(MODELS),
    build=_build,
    check=_check,
    options=OPTIONS,
    default_weights="default",
)
