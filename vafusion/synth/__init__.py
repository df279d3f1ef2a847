"""Seeded synthetic corpora in the Aff-Wild2 layout, for tests, ``vafusion demo`` and benchmarks.

Why this exists: the real corpus is licensed and huge, yet every stage needs a corpus
with the real layout and the real quirks (mixed frame rates, a two-person video with
``_left``/``_right`` ids sharing one sound track, gaps in the face crops, ``-5`` label
rows, a video without audio, an unlabelled test list) and with valence/arousal (VA)
signals a model can actually learn, so that "fusion helps" is measurable end to end.

Where the signals live (only in pixels and waveform; nothing in names or metadata):

- Valence is drawn boldly on the face: mouth curvature (smile / frown), frowning
  brows, and a large warm/cool colour tint plus brightness of the skin. Big,
  low-frequency colour changes survive random-weight conv nets with global average
  pooling (the face-centre red-minus-blue follows valence with r ~ 0.95).
- Arousal is audible: a synthetic voice (harmonic tone, amplitude-modulated syllables,
  a little noise) whose loudness (+-16 dB), pitch (+-0.6 octave) and syllable rate
  (2-5 Hz) rise with arousal (log RMS over 0.5 s follows arousal with r ~ 0.9). On
  the face it is only faint: eye openness and a small brightness change.
- Valence and arousal are independent smooth curves (tanh of a sum of three slow
  sinusoids with random frequencies, amplitudes and phases), different per id.

Nuisances unrelated to the labels make the task non-trivial: per-person skin tone,
hair and voice, per-video background and microphone gain, slow illumination drift,
head motion, sensor noise, breathing pauses in speech and background noise.

Media and codecs (see :data:`VIDEO_CODEC`, :data:`AUDIO_CODEC`):

- ``ROOT/videos/<name>.mp4``: H.264 (libx264, ``ultrafast``, no B-frames, yuv420p)
  at the video's exact frame rate, first frame at pts 0, exactly ``n_frames`` frames;
  mono AAC at ``sample_rate`` (16 kHz by default). FFmpeg's mp4 muxer records the
  AAC encoder's 1024 priming samples in an edit list; PyAV's decoder drops them, so
  the first decoded audio frame has pts 0 and decoded sample ``n`` is the instant
  ``n / sample_rate`` (checked with :func:`make_alignment_corpus`: decoded beep centres
  land within 0.3 ms of their intended instants). The decoded track is at least
  ``n_frames / fps`` seconds long (AAC pads the last 1024-sample frame, so it may run
  up to 1023 samples longer). If this PyAV build lacks an encoder, libx264 falls back
  to mpeg4 and AAC to ALAC (lossless, no priming; decodes to integer samples).
- ``ROOT/cropped_aligned/<id>/00001.jpg``: JPEG (quality 90) face crops,
  ``crop_size`` square, 1-based 5-digit frame numbers, missing numbers = no face.
- ``ROOT/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<id>.txt``:
  ``valence,arousal`` header and one row per video frame, 4 decimals, ``-5,-5`` rows
  for frames without a valid label.
- ``ROOT/test_set.txt``: one unlabelled id per line (they still have video and crops).

The two-person video's sound track carries the ``_left`` person's voice (arousal);
the ``_right`` person is a silent listener, so ``_right`` has only the faint visual
arousal evidence, as with a real listener. :attr:`SynthVideo.speaks` says which.

Determinism: the same arguments give the same VA curves, annotation files and JPEG
bytes (crops are encoded by PIL from arrays computed in a fixed order from seeded
generators). mp4 bytes are not promised, only their decoded content.

The package has one module per job: :mod:`~vafusion.synth.plan` draws every random
choice up front, :mod:`~vafusion.synth.faces` draws faces, :mod:`~vafusion.synth.voice`
synthesises the voice, :mod:`~vafusion.synth.render` composes one video's frames and
crops, :mod:`~vafusion.synth.media` encodes JPEG and mp4, :mod:`~vafusion.synth.layout`
holds the Aff-Wild2 paths, file formats and ground-truth types,
:mod:`~vafusion.synth.corpus` and :mod:`~vafusion.synth.alignment` are the entry points.
"""

from __future__ import annotations

from vafusion.synth.alignment import BEEP_HZ, BEEP_SECONDS, make_alignment_corpus
from vafusion.synth.corpus import SIZES, make_corpus
from vafusion.synth.layout import (
    ANNOTATION_DIR,
    MISSING_LABEL,
    PARTITION_DIRS,
    TEST_LIST_NAME,
    SynthCorpus,
    SynthVideo,
)
from vafusion.synth.media import JPEG_QUALITY, audio_codec, video_codec

__all__ = [
    "ANNOTATION_DIR",
    "AUDIO_CODEC",
    "BEEP_HZ",
    "BEEP_SECONDS",
    "JPEG_QUALITY",
    "MISSING_LABEL",
    "PARTITION_DIRS",
    "SIZES",
    "TEST_LIST_NAME",
    "VIDEO_CODEC",
    "SynthCorpus",
    "SynthVideo",
    "make_alignment_corpus",
    "make_corpus",
]


def __getattr__(name: str) -> str:
    """VIDEO_CODEC / AUDIO_CODEC, resolved lazily so that importing this package never needs av."""
    if name == "VIDEO_CODEC":
        return video_codec()
    if name == "AUDIO_CODEC":
        return audio_codec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
