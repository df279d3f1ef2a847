"""The Aff-Wild2 naming rules: folder and file names of the input layout, and which video an id uses.

The layout (see DESIGN.md)::

    ROOT/videos/ | raw_videos/ | batch1/ | batch2/      <name>.mp4|.avi|.mkv|.mov (searched recursively)
    ROOT/cropped_aligned/<video_id>/00001.jpg ...       5-digit 1-based frame numbers; gaps = no face
    ROOT/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video_id>.txt
    optional test list: one video_id per line

``<name>_left`` / ``<name>_right`` are the two persons of the video ``<name>``. The names live
here, apart from the code that reads folders, so that discovery and anything that writes the
layout (the generated corpora of :mod:`vafusion.synth`) follow one set of rules. Nothing here
touches the file system or imports more than the standard library, so both stages may use it.
"""

from __future__ import annotations

from collections.abc import Container

VIDEO_DIR_NAMES = ("videos", "raw_videos", "batch1", "batch2")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")  # preference order when a name has several
FACES_DIR_NAMES = ("cropped_aligned",)
ANNOTATION_DIR_CANDIDATES = (
    "annotations/VA_Estimation_Challenge",
    "annotations/VA_Set",
    "VA_Estimation_Challenge",
)
ANNOTATION_SUBDIRS = ("VA_Estimation_Challenge", "VA_Set")
"""Looked for inside a given annotations folder that has no split folders (its parent was given)."""
SPLIT_DIRS = (("Train_Set", "train"), ("Validation_Set", "validation"))
# Test lists auto-detected in ROOT and in the annotations folder (first found wins).
TEST_LIST_NAMES = (
    "test_list.txt",
    "test_set.txt",
    "Test_Set.txt",
    "Valence_Arousal_Estimation_Challenge_test_set_release.txt",
)
CROP_EXTENSIONS = (".jpg", ".jpeg", ".png")  # preference order when one frame has several
AUDIO_EXTENSIONS = (".wav", ".flac")
PERSON_SUFFIXES = ("_left", "_right")

ANNOTATION_HEADER = ("valence", "arousal")
NO_LABEL = -5.0
"""The Aff-Wild2 mark for a frame without a valid label; such a row becomes (NaN, NaN)."""


def crop_name(frame: int, extension: str = CROP_EXTENSIONS[0]) -> str:
    """The crop file of 1-based ``frame``: 5 digits, as Aff-Wild2 numbers them."""
    return f"{frame:05d}{extension}"


def video_names_for(video_id: str) -> list[str]:
    """The video names an id may use, in order: itself, then itself without ``_left``/``_right``."""
    return [video_id] + [video_id[: -len(s)] for s in PERSON_SUFFIXES if video_id.endswith(s)]


def video_name_of(video_id: str, videos: Container[str]) -> str | None:
    """The video name of an id among ``videos``: itself if such a file exists, else without
    _left/_right (a file named after the id itself wins over the shared video)."""
    return next((name for name in video_names_for(video_id) if name in videos), None)
