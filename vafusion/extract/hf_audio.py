"""Hugging Face speech encoders as track extractors: ``--features hf:<repository or folder>``.

``hf:openai/whisper-base`` (a hub id: downloaded once into the Hugging Face cache) or
``hf:/models/wavlm-large`` (a local folder holding ``config.json``, the weights and
``preprocessor_config.json``, as ``save_pretrained`` writes them: read offline). An existing
folder wins over a hub id of the same spelling, as in transformers. The feature (file) is
``hf-<id>`` (``hf-openai-whisper-base``), or ``hf-<folder name>`` for a folder. The model is
loaded with ``AutoModel`` and its input made by ``AutoFeatureExtractor``, never with remote
code. Two kinds of encoder, told apart by the model's configuration:

* **conv frontend** (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, UniSpeech, SEW ...: a
  configuration with ``conv_kernel``/``conv_stride``): as the torchaudio speech family
  (:mod:`.speech`), step j covers samples [stride j, stride j + field) (320 and 400 at 16 kHz
  for all of these) and is centred at (stride j + field / 2) / rate; the feature extractor
  (zero mean, unit variance where its configuration says so) runs per chunk.
* **Whisper's encoder** (``model_type`` whisper; the decoder is dropped): 30 s windows of
  log-mel frames (10 ms hop) into two convolutions (the second of stride 2): step j is centred
  at 0.02 j s (mel frame 2 j). A window with less audio is padded by the feature extractor to
  30 s, as Whisper was trained; steps centred past the real audio are dropped (never averaged
  into a row).

Options (``--extractor-option hf:X.KEY=VALUE``), as for the speech family: ``layer`` (1..L:
transformers' ``hidden_states[k]``, the last with the encoder's final norm where it has one;
``A-B`` for the mean of layers A..B; ``mean``, the default, for all L; the layers after
the last one read, plus one, are dropped from the model: never computed), ``chunk`` (seconds, default
30; at most 30 for Whisper, whose windows it sets) and ``context`` (seconds, default 3): long
tracks run in chunks on the step grid overlapping by ``context`` on each side, each step taken
from the chunk where it sits farthest from a cut (:func:`.speech.chunk_plan`). The steps go
onto the frame grid through the shared aligner (mean over each frame's span).

Weights (``--weights hf:X=SPEC``): ``default`` (those of the repository or folder) or ``random``
(the architecture of its configuration, seeded: tests and benchmarks). The provenance holds
the id or folder, the hub revision, the sha256 of the configuration and of each weights file,
and the feature extractor's settings.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vafusion.device import autocast
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.contract import file_safe
from vafusion.extract.extras import need
from vafusion.extract.registry import BuildRequest, Family
from vafusion.extract.speech import (
    StepGeometry,
    chunk_plan,
    chunk_sizes,
    parse_layers,
    parse_seconds,
    run_chunks,
)
from vafusion.hashing import sha256_file

PREFIX = "hf"
OPTIONS = ("layer", "chunk", "context")
WEIGHTS = ("default", "random")
DEFAULT_CHUNK_S = 30.0
DEFAULT_CONTEXT_S = 3.0
RANDOM_SEED = 0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LAYER = re.compile(r"^(mean|\d+|\d+-\d+)$")


@dataclass(frozen=True)
class Source:
    """Where the model comes from: a local folder, or a hub id."""

    text: str
    folder: Path | None

    @classmethod
    def of(cls, entry: str) -> Source:
        text = entry.partition(":")[2]
        folder = Path(text).expanduser()
        if text and folder.is_dir():
            return cls(text, folder)
        if text.startswith(("/", ".", "~")) or not _HUB_ID.match(text):
            raise VafusionError(
                f"--features {entry}: {text!r} is neither a folder (config.json and weights, as save_pretrained "
                f"writes them) nor a Hugging Face hub id (org/name)"
            )
        return cls(text, None)

    @property
    def feature(self) -> str:
        return file_safe(PREFIX, self.folder.resolve().name if self.folder else self.text)

    @property
    def where(self) -> str:
        return str(self.folder) if self.folder else self.text


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' loading bars and notices off (vafusion has its own), restored after."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _load(entry: str, source: Source, weights: str) -> tuple[Any, nn.Module, Any]:
    """(config, model, feature extractor) of ``source``; any failure is one line."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    offline = source.folder is not None  # a folder never reaches for the network
    try:
        with _quiet():
            config = AutoConfig.from_pretrained(source.where, local_files_only=offline)
            features = AutoFeatureExtractor.from_pretrained(source.where, local_files_only=offline)
            if weights == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(RANDOM_SEED)
                    model = AutoModel.from_config(config)
            else:
                model = AutoModel.from_pretrained(source.where, local_files_only=offline)
    except Exception as e:  # OSError, ValueError, hub errors ...: one line
        reason = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        fix = (
            "the folder needs config.json, preprocessor_config.json and the weights (model.save_pretrained(DIR) "
            "and feature_extractor.save_pretrained(DIR))"
            if source.folder
            else "on a machine with network it downloads into the Hugging Face cache; or give a local folder"
        )
        raise VafusionError(f"{entry}: could not load it ({reason}); {fix}") from e
    return config, model.eval(), features


def _weights_record(source: Source, config: Any, weights: str) -> dict[str, Any]:
    """What identifies the numbers: the configuration's hash and each weights file's sha256."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    record: dict[str, Any] = {
        # a hub id is the --features entry (--like reads it back); a folder's path is this machine's alone
        "model": f"{PREFIX}:{source.text}" if not source.folder else f"folder {source.folder.resolve().name}",
        "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    if weights == "random":
        return {**record, "weights": "random", "sha256": None}
    folder = source.folder or _snapshot(source.text)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")) if folder else []
    revision = getattr(config, "_commit_hash", None)
    return {
        **record,
        "weights": "default",
        **({"revision": revision} if revision and not source.folder else {}),
        "files": {f.name: sha256_file(f) for f in files},
    }


def _snapshot(repo: str) -> Path | None:
    """The Hugging Face cache folder holding ``repo``'s downloaded files."""
    from transformers.utils import cached_file

    try:
        found = cached_file(repo, "config.json", local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (cannot happen after a load): no files recorded
        return None
    return Path(found).parent if found else None


def _settings(features: Any) -> dict[str, Any]:
    """The feature extractor's scalar settings (sample rate, normalisation, mel bins ...)."""
    out = {}
    for key, value in sorted(features.to_dict().items()):
        text = json.dumps(value, default=str)
        if not key.startswith("_") and len(text) <= 100:
            out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else text
    return out


class Encoder(abc.ABC):
    """What differs between encoder kinds: how samples become step rows, and where steps sit."""

    name: str
    model: nn.Module
    rate: int  # samples per second
    n_layers: int
    dim: int
    stride: int  # samples between steps

    @abc.abstractmethod
    def __init__(self, config: Any, model: nn.Module, features: Any) -> None: ...

    @abc.abstractmethod
    def n_steps(self, n_samples: int) -> int:
        """How many steps a chunk of ``n_samples`` gives."""

    @abc.abstractmethod
    def chunk_samples(self, chunk_steps: int) -> int:
        """The samples of a chunk of ``chunk_steps`` steps."""

    @abc.abstractmethod
    def steps(self, n: int) -> align.Steps:
        """Where ``n`` steps from the track's start sit."""

    @abc.abstractmethod
    def hidden_states(self, x: Tensor, device: torch.device) -> tuple[Tensor, ...]:
        """The encoder's hidden states ``(1, steps, dim)`` of one chunk (the embeddings, then each layer)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The step geometry in words, for the provenance."""


class ConvFrontend(Encoder):
    """wav2vec 2.0-style: a stack of 1-D convolutions, then transformer layers over its steps."""

    def __init__(self, config: Any, model: nn.Module, features: Any) -> None:
        self.model, self.features = model, features
        self.rate = int(features.sampling_rate)
        self.geometry = StepGeometry.of_convs(config.conv_kernel, config.conv_stride)
        self.stride = self.geometry.stride
        self.n_layers, self.dim = int(config.num_hidden_layers), int(config.hidden_size)
        self.name = config.model_type

    def n_steps(self, n_samples: int) -> int:
        return self.geometry.n_steps(max(n_samples, self.geometry.receptive_field))

    def chunk_samples(self, chunk_steps: int) -> int:
        return (chunk_steps - 1) * self.stride + self.geometry.receptive_field

    def steps(self, n: int) -> align.Steps:
        return self.geometry.steps(n, self.rate)

    def hidden_states(self, x: Tensor, device: torch.device) -> tuple[Tensor, ...]:
        if x.numel() < self.geometry.receptive_field:  # shorter than one step: pad with silence to one step
            x = F.pad(x, (0, self.geometry.receptive_field - x.numel()))
        inputs = self.features(x.cpu().numpy(), sampling_rate=self.rate, return_tensors="pt")["input_values"]
        return self.model(inputs.to(device), output_hidden_states=True).hidden_states

    def describe(self) -> str:
        g = self.geometry
        return f"{1000 * g.stride / self.rate:g} ms ({g.stride} samples), window {g.receptive_field} samples"


class WhisperEncoder(Encoder):
    """Whisper's encoder: 30 s windows of log-mel frames, a step every two frames."""

    def __init__(self, config: Any, model: nn.Module, features: Any) -> None:
        encoder: Any = model.get_encoder()  # type: ignore[operator]  # transformers' method, untyped here
        self.model, self.features = encoder, features
        self.rate = int(features.sampling_rate)
        convs = int(encoder.conv1.stride[0] * encoder.conv2.stride[0])
        self.stride = int(features.hop_length) * convs
        self.window_steps = int(config.max_source_positions)
        self.n_layers, self.dim = int(config.encoder_layers), int(config.d_model)
        self.name = "whisper"

    def n_steps(self, n_samples: int) -> int:
        return max(1, math.ceil(n_samples / self.stride))  # steps centred within the audio

    def chunk_samples(self, chunk_steps: int) -> int:
        return chunk_steps * self.stride

    def steps(self, n: int) -> align.Steps:
        return align.Steps.regular(0.0, self.stride / self.rate, n)

    def hidden_states(self, x: Tensor, device: torch.device) -> tuple[Tensor, ...]:
        inputs = self.features(x.cpu().numpy(), sampling_rate=self.rate, return_tensors="pt")["input_features"]
        states = self.model(inputs.to(device), output_hidden_states=True).hidden_states
        n = self.n_steps(x.numel())
        return tuple(h[:, :n] for h in states)  # the padding's steps are not used

    def describe(self) -> str:
        return f"{1000 * self.stride / self.rate:g} ms ({self.stride} samples), 30 s windows (padding dropped)"


ENCODERS: tuple[tuple[Callable[[Any], bool], type[Encoder]], ...] = (
    (lambda config: config.model_type == "whisper", WhisperEncoder),
    (lambda config: hasattr(config, "conv_kernel") and hasattr(config, "conv_stride"), ConvFrontend),
)
"""Which encoder kind a configuration is (the first that matches)."""


def _encoder(entry: str, config: Any, model: nn.Module, features: Any) -> Encoder:
    for matches, kind in ENCODERS:
        if matches(config):
            return kind(config, model, features)
    raise VafusionError(
        f"{entry}: a {config.model_type} model is not a speech encoder vafusion can align; use Whisper or an "
        "encoder with a wav2vec2-style convolutional frontend (wav2vec2, hubert, wavlm, data2vec-audio ...)"
    )


class HfSpeechExtractor:
    """A track extractor around a Hugging Face speech encoder (:class:`Encoder`)."""

    kind: Literal["track"] = "track"

    def __init__(
        self,
        entry: str,
        encoder: Encoder,
        record: dict[str, Any],
        layer: str = "mean",
        chunk_s: float = DEFAULT_CHUNK_S,
        context_s: float = DEFAULT_CONTEXT_S,
    ) -> None:
        """``entry`` as given (``hf:X``: options are named so in messages); the feature is ``hf-X``."""
        self.name, self.encoder = Source.of(entry).feature, encoder
        self.sample_rate = encoder.rate
        self.dim = encoder.dim
        self.layers = parse_layers(layer, encoder.n_layers, entry)
        self.chunk_steps, self.context_steps = chunk_sizes(
            entry, chunk_s, context_s, self.sample_rate, encoder.stride, encoder.n_steps
        )
        self.device = torch.device("cpu")
        first, last = self.layers
        _keep_layers(encoder.model, encoder.n_layers, last)
        self._provenance = dict(
            record,
            encoder=encoder.name,
            dim=self.dim,
            sample_rate=self.sample_rate,
            layer=str(first) if first == last else f"mean of {first}-{last} (of {encoder.n_layers})",
            step=encoder.describe(),
            chunk=f"{self.chunk_steps} steps, {self.context_steps} steps of context each side",
            pooling=align.SPAN_MEAN,
            timing=align.GRID_TIMING,
        )

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> HfSpeechExtractor:
        self.encoder.model = self.encoder.model.to(device).eval()
        self.device = torch.device(device)
        return self

    def _run(self, x: Tensor) -> Tensor:
        """One chunk ``(n,)`` -> its ``(steps, dim)`` rows (the chosen layers' mean), float32 CPU."""
        first, last = self.layers
        with autocast(self.device):
            states = self.encoder.hidden_states(x, self.device)
        picked = states[first : last + 1]
        return (picked[0] if len(picked) == 1 else torch.stack(picked).mean(0))[0].float().cpu()

    def step_features(self, wave: Tensor) -> Tensor:
        """``(n,)`` samples -> ``(S, dim)`` step rows, chunk by chunk (memory bounded by the chunk)."""
        x = torch.as_tensor(wave, dtype=torch.float32)
        plan = chunk_plan(self.encoder.n_steps(x.numel()), self.chunk_steps, self.context_steps)
        chunk = self.encoder.chunk_samples(self.chunk_steps)
        return run_chunks(x, plan, chunk, self.encoder.stride, self._run)

    def __call__(self, wave: Tensor, frame_times: np.ndarray) -> Tensor:
        rows = self.step_features(wave)
        return align.span_mean(rows, self.encoder.steps(len(rows)), frame_times)


def _keep_layers(model: nn.Module, n_layers: int, last: int) -> None:
    """Drop the transformer layers after ``last + 1``: they cost time and change no row we keep.

    Why ``last + 1`` and not ``last``: transformers reports the encoder's final norm in place of the
    last layer's raw output (``hidden_states[-1]`` is ``last_hidden_state``), so layer ``k < L`` is
    read back unchanged only while one layer follows it. The torchaudio speech family stops at
    ``num_layers=last`` in the same spirit.
    """
    owner, keep = _layer_owner(model, n_layers), last + 1
    if owner is not None and keep < n_layers:
        layers: nn.ModuleList = owner.layers  # type: ignore[assignment]  # checked by _layer_owner
        owner.layers = nn.ModuleList(list(layers)[:keep])


def _layer_owner(model: nn.Module, n_layers: int) -> nn.Module | None:
    """The module holding the ``n_layers`` transformer layers (Whisper's encoder; wav2vec2-style ``.encoder``)."""
    for owner in (model, getattr(model, "encoder", None)):
        layers = getattr(owner, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) == n_layers:
            return owner
    return None


def _options(entry: str, options: Mapping[str, str]) -> tuple[str, float, float]:
    layer = options.get("layer", "mean")
    if not _LAYER.match(layer):
        raise VafusionError(
            f"--extractor-option {entry}.layer={layer}: use a layer number, A-B (the mean of layers A..B) or mean"
        )
    chunk = parse_seconds(dict(options), "chunk", DEFAULT_CHUNK_S, entry)
    context = parse_seconds(dict(options), "context", DEFAULT_CONTEXT_S, entry)
    return layer, chunk, context


def _check(request: BuildRequest) -> None:
    need("transformers", request.name)
    Source.of(request.name)
    _options(request.name, request.options)
    if request.weights not in WEIGHTS:
        raise VafusionError(
            f"--weights {request.name}={request.weights}: use default (the weights of the repository or folder) "
            "or random; other weights: save them with the model into a folder and give hf:FOLDER"
        )


def _build(request: BuildRequest) -> HfSpeechExtractor:
    _check(request)
    entry, source, weights = request.name, Source.of(request.name), str(request.weights)
    layer, chunk, context = _options(entry, request.options)
    config, model, features = _load(entry, source, weights)
    encoder = _encoder(entry, config, model, features)
    if isinstance(encoder, WhisperEncoder) and chunk > DEFAULT_CHUNK_S:
        raise VafusionError(f"--extractor-option {entry}.chunk={chunk:g}: Whisper's windows are at most 30 s")
    record = dict(_weights_record(source, config, weights), preprocessing=_settings(features))
    return HfSpeechExtractor(entry, encoder, record, layer, chunk, context)


FAMILY = Family(
    key="hf",
    names=tuple,
    build=_build,
    check=_check,
    options=OPTIONS,
    default_weights="default",
    prefix=PREFIX,
    needs="transformers",
)
