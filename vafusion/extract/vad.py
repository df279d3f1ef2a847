"""Speech activity as a track feature: ``--features vad``, Silero VAD's speech probability per frame.

The ``silero-vad`` package (MIT; ``vafusion[vad]``) ships its weights; vafusion loads the
TorchScript file it ships (``silero_vad/data/silero_vad.jit``) offline, without importing the
package (whose import sets torch's thread count to 1 for the whole process), and never needs
onnxruntime. The model reads 16 kHz audio in windows of 512 samples (32 ms) with the 64
samples before each as context, and carries its recurrent state through the whole track, so a
window's probability hears everything before it (it is causal: a burst of speech raises the
windows after it for a moment, not those before). Window j covers samples [512 j, 512 j + 512)
and is placed at its centre, (512 j + 256) / 16000 s; the last window is padded with silence.
The windows go onto the frame grid through the shared aligner (mean over each frame's span,
the nearest window for frame rates above 31.25 fps). One column, in [0, 1].

Stage 2 reads it to treat audio as absent where nobody speaks: ``--audio-where-speech P``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.extras import package_dir
from vafusion.extract.registry import BuildRequest, Family
from vafusion.hashing import sha256_file

NAME = "vad"
SAMPLE_RATE = 16000
WINDOW = 512  # samples per probability at 16 kHz, as Silero takes them
MODEL_FILE = Path("data") / "silero_vad.jit"


def model_file() -> Path:
    """The TorchScript file that silero-vad ships; missing package or file: one line."""
    path = package_dir("silero_vad", NAME) / MODEL_FILE
    if not path.is_file():
        raise VafusionError(f"{path}: missing from the silero-vad package; reinstall it: pip install 'vafusion[vad]'")
    return path


def window_steps(n: int) -> align.Steps:
    """``n`` windows of 512 samples, each at its centre."""
    return align.Steps.regular(WINDOW / 2 / SAMPLE_RATE, WINDOW / SAMPLE_RATE, n)


class VadExtractor:
    """Silero VAD: a track -> one speech probability per 32 ms window -> one per video frame."""

    kind: Literal["track"] = "track"
    name = NAME
    dim = 1
    sample_rate = SAMPLE_RATE

    def __init__(self, model: Any, provenance: dict[str, Any]) -> None:
        self.model = model
        self.device = torch.device("cpu")
        self._provenance = provenance

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> VadExtractor:
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        return self

    def probabilities(self, wave: Tensor) -> Tensor:
        """``(n,)`` samples -> ``(ceil(n / 512),)`` speech probabilities, float32 on the CPU.

        On a CPU with one torch thread, restored after: each window's work is a few microseconds,
        so more threads only wait on each other (measured: 2 threads on a busy 2-core machine ran
        10-50x slower than 1; Silero's own package sets 1 thread for the whole process).
        """
        x = torch.as_tensor(wave, dtype=torch.float32).to(self.device)
        if x.numel() == 0:
            return torch.zeros(0)
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            # audio_forward: the model's own loop over windows (state reset first, last window zero-padded).
            return self.model.audio_forward(x[None], SAMPLE_RATE)[0].float().cpu()
        finally:
            torch.set_num_threads(threads)

    def __call__(self, wave: Tensor, frame_times: np.ndarray) -> Tensor:
        probs = self.probabilities(wave)
        return align.span_mean(probs[:, None], window_steps(len(probs)), frame_times).clamp(0.0, 1.0)


def _check(request: BuildRequest) -> None:
    model_file()
    if request.weights != "default":
        raise VafusionError(f"--weights vad={request.weights}: vad uses the weights silero-vad ships; drop --weights")


def _build(request: BuildRequest) -> VadExtractor:
    _check(request)
    path = model_file()
    try:
        model = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # a damaged install: one line
        raise VafusionError(f"{path}: cannot load Silero VAD ({e}); reinstall: pip install 'vafusion[vad]'") from e
    provenance = {
        "model": "silero-vad",
        "version": importlib.metadata.version("silero-vad"),
        "weights": "default",  # what --weights vad= takes (and --like reads back)
        "weights_file": f"{MODEL_FILE.name}, shipped with silero-vad",
        "weights_sha256": sha256_file(path),
        "dim": 1,
        "output": "speech probability in [0, 1]",
        "sample_rate": SAMPLE_RATE,
        "step": f"{1000 * WINDOW / SAMPLE_RATE:g} ms windows ({WINDOW} samples, 64 of context), "
        "state carried through the track, each at its centre",
        "pooling": align.SPAN_MEAN,
        "timing": align.GRID_TIMING,
    }
    return VadExtractor(model, provenance)


FAMILY = Family(
    key=NAME, names=lambda: (NAME,), build=_build, check=_check, default_weights="default", needs="silero_vad"
)
