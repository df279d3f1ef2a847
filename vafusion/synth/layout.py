"""Where a generated corpus puts each file (the Aff-Wild2 layout) and the ground truth that points there.

Why one module: the folder names and file formats are the contract that the extractors'
discovery reads. The corpus renderer, the alignment corpus and :class:`SynthCorpus` all
take their paths from the helpers here, so they cannot disagree about where a crop or an
annotation file lives.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vafusion import affwild2
from vafusion.errors import VafusionError

ANNOTATION_DIR = Path(affwild2.ANNOTATION_DIR_CANDIDATES[0])
"""Annotation root relative to ROOT, as in Aff-Wild2 (the first place discovery looks)."""

PARTITION_DIRS: dict[str, str] = {partition: folder for folder, partition in affwild2.SPLIT_DIRS}
"""Annotation sub-folder per labelled partition."""

TEST_LIST_NAME = affwild2.TEST_LIST_NAMES[1]
"""File name (under ROOT) of the list of unlabelled test ids (test_set.txt, one discovery detects)."""

MISSING_LABEL = affwild2.NO_LABEL
"""Value written on both columns of an annotation row without a valid label."""

VIDEOS_DIR, FACES_DIR = affwild2.VIDEO_DIR_NAMES[0], affwild2.FACES_DIR_NAMES[0]

OUTPUTS = (VIDEOS_DIR, FACES_DIR, ANNOTATION_DIR.parts[0], TEST_LIST_NAME)
"""The entries of ROOT that a corpus owns (and ``overwrite`` deletes)."""


def video_path(root: Path, video_name: str) -> Path:
    """The mp4 of ``video_name`` (one file may hold two ids)."""
    return root / VIDEOS_DIR / f"{video_name}.mp4"


def crop_dir(root: Path, video_id: str) -> Path:
    """The folder of the face crops of ``video_id``."""
    return root / FACES_DIR / video_id


crop_name = affwild2.crop_name


def annotation_path(root: Path, partition: str, video_id: str) -> Path:
    """The annotation file of ``video_id`` in a labelled ``partition``."""
    return root / ANNOTATION_DIR / PARTITION_DIRS[partition] / f"{video_id}.txt"


@dataclass
class SynthVideo:
    """Ground truth of one video id of a generated corpus.

    ``valence``/``arousal`` are the values before ``-5`` masking (exactly the numbers
    written in the annotation file where ``label_missing`` is False; test ids have
    no file but keep their ground truth here for evaluation).
    """

    id: str
    video_name: str
    fps: float
    n_frames: int
    partition: str  # 'train' | 'validation' | 'test'
    valence: np.ndarray  # (n_frames,) float32
    arousal: np.ndarray  # (n_frames,) float32
    label_missing: np.ndarray  # (n_frames,) bool: rows written as -5
    crop_missing: np.ndarray  # (n_frames,) bool: frames without a crop image
    has_audio: bool
    speaks: bool = True
    """True when this id's arousal drives the video's sound track (False for ``_right``
    of the two-person video, and for a video without audio)."""

    @property
    def labelled(self) -> bool:
        """Whether an annotation file exists for this id."""
        return self.partition in PARTITION_DIRS


@dataclass
class SynthCorpus:
    """A generated corpus: its ROOT, one :class:`SynthVideo` per id (sorted by id), the test list."""

    root: Path
    videos: list[SynthVideo]
    test_list: Path

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.videos]

    def __getitem__(self, video_id: str) -> SynthVideo:
        for v in self.videos:
            if v.id == video_id:
                return v
        raise KeyError(video_id)

    def by_partition(self, partition: str) -> list[SynthVideo]:
        return [v for v in self.videos if v.partition == partition]

    def video_path(self, video: SynthVideo | str) -> Path:
        """The mp4 holding ``video`` (shared by ``_left``/``_right``)."""
        v = self[video] if isinstance(video, str) else video
        return video_path(self.root, v.video_name)

    def crop_dir(self, video: SynthVideo | str) -> Path:
        vid = video if isinstance(video, str) else video.id
        return crop_dir(self.root, vid)

    def annotation_path(self, video: SynthVideo | str) -> Path | None:
        """The annotation file of ``video``, or None for unlabelled (test) ids."""
        v = self[video] if isinstance(video, str) else video
        if not v.labelled:
            return None
        return annotation_path(self.root, v.partition, v.id)


def prepare_root(root: str | Path, overwrite: bool) -> Path:
    """Make ROOT ready for a new corpus; with ``overwrite``, delete exactly the entries a
    corpus owns first, so stale crops of an earlier run can never pose as this run's frames."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise VafusionError(f"{root}: exists and is not a directory; choose another output directory")
    present = [name for name in OUTPUTS if (root / name).exists()]
    if present:
        if not overwrite:
            raise VafusionError(
                f"{root}: already holds a corpus ({', '.join(present)}); choose an empty directory or pass "
                "overwrite=True"
            )
        for name in present:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "cropped_aligned").mkdir(exist_ok=True)
    for sub in PARTITION_DIRS.values():
        (root / ANNOTATION_DIR / sub).mkdir(parents=True, exist_ok=True)
    return root


def write_annotation(path: Path, valence: np.ndarray, arousal: np.ndarray, missing: np.ndarray) -> None:
    """Write the ``valence,arousal`` file: 4 decimals (what :func:`~vafusion.synth.plan.quantise`
    keeps, so ground truth equals the file), ``-5,-5`` on rows without a valid label."""
    no_label = f"{MISSING_LABEL:g},{MISSING_LABEL:g}"
    lines = [",".join(affwild2.ANNOTATION_HEADER)]
    for v, a, m in zip(valence.tolist(), arousal.tolist(), missing.tolist()):
        lines.append(no_label if m else f"{v:.4f},{a:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def write_test_list(root: Path, test_ids: list[str]) -> Path:
    """Write the list of unlabelled ids (one a line; empty when there are none)."""
    test_list = root / TEST_LIST_NAME
    test_list.write_text("".join(f"{vid}\n" for vid in test_ids), encoding="ascii")
    return test_list
