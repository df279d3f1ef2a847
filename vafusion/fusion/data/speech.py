"""``--audio-where-speech P``: audio streams treated as absent where nobody speaks.

Why: an audio feature of silence, music or another person's noise says nothing about the
affect of the face on screen, yet a model sees it as if it did. The cache's ``vad`` feature
(Silero VAD's speech probability per frame: ``vafusion extract --features vad``) says where
speech is. With a threshold P, every audio stream (a feature file of kind ``track``) gets mask
False where the probability is below P, or where the ``vad`` feature has no audio: the models
already treat such frames as absent (as frames without audio), and the standardisation
statistics then come from speech frames only. Visual streams are left as they are.

The threshold is a data setting (``DataConfig.audio_where_speech``), recorded in the run's
configuration; evaluation and prediction of a run apply the run's own threshold, and the
``vad`` feature's fingerprint is recorded beside the streams' so that another ``vad`` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vafusion.cache import schema
from vafusion.errors import VafusionError

SPEECH_FEATURE = "vad"
"""The feature of the cache that holds the speech probability (one column in [0, 1])."""


def speech_frames(probability: np.ndarray, present: np.ndarray, threshold: float) -> np.ndarray:
    """``(sum T,)`` bool: the frames with audio whose speech probability is at least ``threshold``."""
    return present & (probability.astype(np.float32) >= np.float32(threshold))


def audio_streams(features: Sequence[str], kinds: Mapping[str, str | None], threshold: float) -> list[int]:
    """Positions of the audio streams among ``features``; a feature that does not say is an error."""
    unknown = [f for f in features if kinds.get(f) not in schema.KINDS]
    if unknown:
        raise VafusionError(
            f"--audio-where-speech {threshold:g}: {unknown[0]}.h5 does not say whether its rows come from the audio "
            f"track (an imported, derived or plug-in feature written before vafusion recorded it); write it again "
            f"(extract or cache derive with --overwrite, cache import with --kind track|frame)"
        )
    return [k for k, f in enumerate(features) if kinds[f] == "track"]


def gate(masks: list[np.ndarray], streams: Sequence[int], speech: np.ndarray) -> None:
    """``masks[k] &= speech`` for the audio streams, in place (streamed sources share these arrays)."""
    for k in streams:
        np.logical_and(masks[k], speech, out=masks[k])
