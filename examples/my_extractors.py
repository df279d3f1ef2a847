"""Two extractors of your own, written against vafusion's public contract (README,
"Writing your own extractor"); a test extracts, verifies and trains on them.

    vafusion extract CORPUS --cache CACHE \
        --features resnet50,examples.my_extractors:ColourHistogram,examples.my_extractors:loudness \
        --extractor-option examples.my_extractors:ColourHistogram.bins=16

vafusion decodes crops and audio, batches, aligns, masks (no crop, no audio), writes and
resumes; an extractor only maps its input to numbers and says what it computed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vafusion.extract import align


class ColourHistogram:
    """A frame extractor (the class form): per-channel intensity histograms of the face crop.

    Its options are its constructor's keyword arguments, typed as annotated:
    `--extractor-option ...ColourHistogram.bins=16` arrives as bins=16 (an int).
    """

    kind = "frame"
    name = "colour_hist"  # the cache file: colour_hist.h5
    image_size = 64  # crops arrive resized to 64 x 64

    def __init__(self, bins: int = 8) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")  # -> one line naming this extractor
        self.bins = bins
        self.dim = 3 * self.bins

    def provenance(self) -> dict:
        """Everything that changes the numbers: it is hashed into the cache's fingerprint."""
        return {"model": "colour_hist", "bins": self.bins, "image_size": self.image_size, "version": 1}

    def to(self, device: torch.device) -> ColourHistogram:
        return self  # no parameters to move

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) uint8 RGB on the device -> (B, 3 * bins) fractions of pixels per bin."""
        index = (crops.long() * self.bins) // 256  # (B, 3, S, S), values 0 .. bins - 1
        return F.one_hot(index, self.bins).float().mean(dim=(2, 3)).flatten(1)


class Loudness:
    """A track extractor: level (dB) and zero-crossing rate in 25 ms windows every 10 ms,
    averaged over each video frame's span by vafusion's aligner."""

    kind = "track"
    name = "loudness"
    dim = 2
    sample_rate = 16000  # the track arrives mono float32 in [-1, 1] at this rate
    window = 400  # samples (25 ms)
    hop = 160  # samples (10 ms)

    def provenance(self) -> dict:
        return {
            "model": "loudness",
            "window": self.window,
            "hop": self.hop,
            "features": ["rms dB", "zcr"],
            "pooling": align.SPAN_MEAN,
            "version": 1,
        }

    def to(self, device: torch.device) -> Loudness:
        return self

    def __call__(self, wave: torch.Tensor, frame_times: np.ndarray) -> torch.Tensor:
        """wave (n,) on the device; frame_times (T,) seconds -> (T, 2): row k describes instant k."""
        x = F.pad(wave.float(), (0, max(0, self.window - len(wave))))  # at least one window
        frames = x.unfold(0, self.window, self.hop)  # (steps, window), step j starts at sample hop * j
        level = 20 * torch.log10(frames.pow(2).mean(dim=1).sqrt() + 1e-5)
        zcr = (frames[:, 1:].sign() != frames[:, :-1].sign()).float().mean(dim=1)
        steps = align.Steps.regular(self.window / 2 / self.sample_rate, self.hop / self.sample_rate, len(frames))
        return align.span_mean(torch.stack([level, zcr], dim=1).cpu(), steps, frame_times)


def loudness() -> Loudness:
    """The factory form: any zero-argument callable returning an extractor works too."""
    return Loudness()
