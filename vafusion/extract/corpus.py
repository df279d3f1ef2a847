"""Corpus discovery: which video ids exist, where their video, crops and labels live, and T.

The input is the Aff-Wild2 layout (names in :mod:`vafusion.extract.affwild2`, folders found
or given as in :mod:`vafusion.extract.layout`, label files read by
:mod:`vafusion.extract.annotations`).

Ids and partitions:

* every ``<id>.txt`` under ``Train_Set``/``Validation_Set`` -> ``train``/``validation``;
* every line of the test list -> ``test`` (an annotated id keeps its annotation; warning);
* crop folders, and video files no id refers to, that have neither -> ``unlabelled``
  (features are still extracted, so a user can predict on them).

``<name>_left`` / ``<name>_right`` use the video ``<name>`` (unless a file named after the id
itself exists); the video's name is the id's group, so both persons of one video stay in the
same fold. T is the annotation row count when annotated, else the container's frame count.
Row k is frame k; a variable-frame-rate video's frame instants (from its timestamps, see
:mod:`vafusion.extract.media`) are recorded with each of its ids, and a container whose
declared rate disagrees with its timestamps is warned about.

Nothing here prints: a file that makes one id unusable is a :class:`Problem` (the id is
skipped, discovery goes on); a suspicious but usable fact is a warning string. Only a
layout that cannot be used at all raises :class:`~vafusion.errors.VafusionError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vafusion.affwild2 import (  # noqa: F401  (re-exported: importable from here as before)
    ANNOTATION_DIR_CANDIDATES,
    ANNOTATION_HEADER,
    AUDIO_EXTENSIONS,
    CROP_EXTENSIONS,
    FACES_DIR_NAMES,
    NO_LABEL,
    PERSON_SUFFIXES,
    SPLIT_DIRS,
    TEST_LIST_NAMES,
    VIDEO_DIR_NAMES,
    VIDEO_EXTENSIONS,
    video_name_of,
    video_names_for,
)
from vafusion.cache.corpus_index import CorpusIndex, VideoEntry
from vafusion.errors import VafusionError
from vafusion.extract.annotations import AnnotationFormatError, read_annotation, read_test_list
from vafusion.extract.layout import (
    OPTION_NAMES,
    CorpusFolders,
    audio_files_in,
    find_folders,
    index_videos,
    list_names,
    split_dirs_of,
)
from vafusion.extract.media import VideoInfo, probe_video
from vafusion.fs import list_folder

FRAME_MISMATCH_TOLERANCE = 5
"""Aff-Wild2 annotation row counts differ from container frame counts by a frame or two;
beyond this many frames a warning is recorded (the annotation still defines T)."""

_PROBE_THREADS = 8  # probing is I/O-bound (header reads); threads hide network-FS latency


@dataclass(frozen=True)
class Problem:
    """One id that discovery had to skip, with the file (and line) at fault."""

    id: str
    path: Path | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else self.id
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message} (id {self.id} skipped)"


@dataclass(frozen=True)
class DiscoveredVideo:
    """Where one id's inputs live; ``entry`` is what goes into the cache's corpus index."""

    entry: VideoEntry
    video_path: Path
    crops_dir: Path | None  # None: no crop folder, every frame's visual feature is masked
    audio_path: Path | None  # the audio_dir file when given, else None (audio from video_path)
    info: VideoInfo | None = None  # the container probe (shared by _left/_right of one file)


@dataclass
class Corpus:
    """The discovered ids (sorted), the skipped ones (``problems``) and ``warnings``."""

    videos: list[DiscoveredVideo]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    root: Path | None = None  # the corpus folder, when one was given (recorded in corpus.h5)

    def index(self) -> CorpusIndex:
        return CorpusIndex(tuple(v.entry for v in self.videos))

    def __len__(self) -> int:
        return len(self.videos)


# ---- face crops ---------------------------------------------------------------------------


def crop_paths(crops_dir: str | Path | None, n_frames: int, warnings: list[str] | None = None) -> list[Path | None]:
    """Index k-1 -> the crop image of frame k, or None where there is no face.

    One directory listing (not ``n_frames`` stat calls). Images numbered beyond ``n_frames``
    (or 0) are ignored and reported in ``warnings`` when a list is given. Non-image files
    and names that are not frame numbers are ignored.
    """
    paths: list[Path | None] = [None] * n_frames
    if crops_dir is None:
        return paths
    crops_dir = Path(crops_dir)
    rank = {ext: i for i, ext in enumerate(CROP_EXTENSIONS)}
    chosen_rank = [len(CROP_EXTENSIONS)] * n_frames
    outside: list[str] = []
    for name in (e.name for e in list_folder(crops_dir, "face crops")):
        stem, ext = os.path.splitext(name)
        ext = ext.lower()
        if ext not in rank or not stem.isdigit():
            continue
        k = int(stem)
        if not 1 <= k <= n_frames:
            outside.append(name)
            continue
        if rank[ext] < chosen_rank[k - 1]:
            paths[k - 1] = crops_dir / name
            chosen_rank[k - 1] = rank[ext]
    if outside and warnings is not None:
        outside.sort()
        warnings.append(
            f"{crops_dir}: {len(outside)} crop images numbered beyond the {n_frames} frames of the id "
            f"(e.g. {outside[0]}) are ignored"
        )
    return paths


# ---- discovery ----------------------------------------------------------------------------


def fit_frame_times(times: np.ndarray, n_frames: int) -> np.ndarray:
    """A video's frame instants for an id of ``n_frames`` rows (the annotation may count a frame or two
    more or fewer than the container): cut, or continued at the median interval of the last frames."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) >= n_frames:
        return times[:n_frames].copy()
    step = float(np.median(np.diff(times[-32:]))) if len(times) > 1 else 1.0
    return np.concatenate([times, times[-1] + step * np.arange(1, n_frames - len(times) + 1)])


def _probe_all(paths: Iterable[Path], progress: bool) -> dict[Path, VideoInfo | str]:
    """Probe every distinct file once (threads: latency-bound); errors become messages."""
    unique = sorted(set(paths))

    def probe(path: Path) -> VideoInfo | str:
        try:
            return probe_video(path)
        except VafusionError as e:
            text = str(e)
            prefix = f"{path}: "
            return text[len(prefix) :] if text.startswith(prefix) else text

    results: dict[Path, VideoInfo | str] = {}
    if not unique:
        return results
    with ThreadPoolExecutor(max_workers=min(_PROBE_THREADS, len(unique))) as pool:
        it = pool.map(probe, unique)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(unique), desc="probing videos", unit="video", disable=None)
        for path, result in zip(unique, it):
            results[path] = result
    return results


class _IdSource(NamedTuple):
    """How an id entered the corpus: its partition, labels (annotated ids) and the file that named it."""

    partition: str
    labels: np.ndarray | None
    path: Path | None


def _annotated_ids(annotations: Path | None, problems: list[Problem]) -> tuple[dict[str, _IdSource], dict[str, Path]]:
    """The ids of the Train_Set/Validation_Set files, and the first file of each name.

    An id annotated in both splits, or in a malformed file, is a problem and left out; it
    still counts as annotated (its video is not offered as 'unlabelled').
    """
    ids: dict[str, _IdSource] = {}
    annotated_in: dict[str, Path] = {}
    ambiguous: set[str] = set()
    for split_dir, partition in split_dirs_of(annotations) if annotations is not None else []:
        for name in sorted(e.name for e in list_folder(split_dir, "annotation files")):
            stem, ext = os.path.splitext(name)
            if ext.lower() != ".txt" or name.startswith("."):
                continue
            path = split_dir / name
            if stem in annotated_in:
                problems.append(
                    Problem(stem, path, None, f"also annotated in {annotated_in[stem]}; keep the id in one split only")
                )
                ambiguous.add(stem)
                continue
            annotated_in[stem] = path
            try:
                labels = read_annotation(path)
            except AnnotationFormatError as e:
                problems.append(Problem(stem, e.path, e.line, e.reason))
                continue
            ids[stem] = _IdSource(partition, labels, path)
    for stem in ambiguous:
        ids.pop(stem, None)
    return ids, annotated_in


def _add_test_ids(
    ids: dict[str, _IdSource], annotated_in: dict[str, Path], test_list: Path | None, warnings: list[str]
) -> None:
    """Every id of the test list becomes 'test', unless annotated (the annotation wins; warned)."""
    if test_list is None:
        return
    for video_id in read_test_list(test_list):
        if video_id in annotated_in:
            warnings.append(
                f"{test_list}: {video_id} is in the test list and annotated in "
                f"{annotated_in[video_id]}; keeping the annotation"
            )
            continue
        ids[video_id] = _IdSource("test", None, test_list)


def _add_unlabelled_ids(
    ids: dict[str, _IdSource],
    annotated_in: dict[str, Path],
    videos: dict[str, Path],
    crop_dirs: set[str],
    faces: Path | None,
    warnings: list[str],
) -> None:
    """Unlabelled: crop folders with a video, then videos no id refers to (a user may still
    predict on them). Crop folders without a video are ignored with one warning."""
    unmatched_crops = []
    for name in sorted(crop_dirs):
        if name in ids or name in annotated_in:
            continue
        if video_name_of(name, videos) is None:
            unmatched_crops.append(name)
            continue
        ids[name] = _IdSource("unlabelled", None, None)
    if unmatched_crops:
        warnings.append(
            f"{faces}: {len(unmatched_crops)} crop folders have no video and no annotation "
            f"(e.g. {unmatched_crops[0]}); ignored"
        )
    used_videos = {video_name_of(i, videos) for i in ids} | {video_name_of(i, videos) for i in annotated_in}
    for name in sorted(videos):
        if name not in used_videos and name not in ids:
            ids[name] = _IdSource("unlabelled", None, None)


def _video_names(
    ids: dict[str, _IdSource], videos: dict[str, Path], video_dirs: list[Path], problems: list[Problem]
) -> dict[str, str]:
    """Id -> the name of its video file, in id order; an id without one is a problem."""
    resolved: dict[str, str] = {}
    for video_id, source in sorted(ids.items()):
        name = video_name_of(video_id, videos)
        if name is None:
            candidates = " or ".join(f"{n}.*" for n in video_names_for(video_id)) + f" ({'/'.join(VIDEO_EXTENSIONS)})"
            problems.append(
                Problem(
                    video_id,
                    source.path,
                    None,
                    f"no video file {candidates} in "
                    f"{', '.join(str(d) for d in video_dirs)}; add it or point {OPTION_NAMES['videos_dirs']} at its "
                    "folder",
                )
            )
            continue
        resolved[video_id] = name
    return resolved


def _frame_count(
    video_id: str, labels: np.ndarray | None, video_path: Path, info: VideoInfo, warnings: list[str]
) -> int:
    """T: the annotation's row count (warned when far from the container's), else the container's."""
    if labels is None:
        return info.n_frames
    n_frames = len(labels)
    if abs(n_frames - info.n_frames) > FRAME_MISMATCH_TOLERANCE:
        warnings.append(
            f"{video_id}: annotation has {n_frames} rows, {video_path.name} has {info.n_frames} "
            f"frames; using {n_frames} (the annotation defines the frame grid)"
        )
    return n_frames


def _audio_path(
    video_id: str,
    name: str,
    video_path: Path,
    info: VideoInfo,
    audio: Path | None,
    audio_files: dict[str, Path],
    warnings: list[str],
) -> Path | None:
    """The id's (else its video's) file in the audio folder; warns when audio comes from nowhere
    expected (no file there, or a container without sound)."""
    audio_path = audio_files.get(video_id) or audio_files.get(name)
    if audio is not None and audio_path is None:
        warnings.append(f"{video_id}: no {name}.wav in {audio}; using the sound track of {video_path.name}")
    if audio_path is None and not info.has_audio:
        warnings.append(f"{video_id}: {video_path.name} has no audio stream; audio features will be masked")
    return audio_path


@dataclass(frozen=True)
class _Listings:
    """What discovery listed once and every id looks up: video files by name, crop folder and
    audio file names."""

    videos: dict[str, Path]
    crop_dirs: set[str]
    audio_files: dict[str, Path]


def _discovered(
    video_id: str,
    name: str,
    source: _IdSource,
    info: VideoInfo,
    folders: CorpusFolders,
    listings: _Listings,
    warnings: list[str],
) -> DiscoveredVideo:
    """One id's inputs and corpus-index entry, with the warnings its files deserve."""
    video_path = listings.videos[name]
    n_frames = _frame_count(video_id, source.labels, video_path, info, warnings)
    faces = folders.faces
    crops = faces / video_id if faces is not None and video_id in listings.crop_dirs else None
    if crops is None and faces is not None:
        warnings.append(f"{video_id}: no crop folder {faces / video_id}; visual features will be masked")
    audio_path = _audio_path(video_id, name, video_path, info, folders.audio, listings.audio_files, warnings)
    entry = VideoEntry(
        id=video_id,
        fps=info.fps,
        n_frames=n_frames,
        partition=source.partition,
        group=name,
        labels=source.labels,
        frame_times=None if info.frame_times is None else fit_frame_times(info.frame_times, n_frames),
    )
    return DiscoveredVideo(entry, video_path, crops, audio_path, info)


def _discover_all(
    ids: dict[str, _IdSource],
    resolved: dict[str, str],
    infos: dict[Path, VideoInfo | str],
    folders: CorpusFolders,
    listings: _Listings,
    problems: list[Problem],
    warnings: list[str],
) -> list[DiscoveredVideo]:
    """Every resolved id whose video probed well, sorted by id; a failed probe is a problem of
    each id of that video, a timing note a warning once per video file."""
    found: list[DiscoveredVideo] = []
    timing_told: set[Path] = set()
    for video_id, name in sorted(resolved.items()):
        video_path = listings.videos[name]
        info = infos[video_path]
        if isinstance(info, str):
            problems.append(Problem(video_id, video_path, None, info))
            continue
        if info.timing_note and video_path not in timing_told:
            timing_told.add(video_path)
            warnings.append(f"{video_path}: {info.timing_note}")
        found.append(_discovered(video_id, name, ids[video_id], info, folders, listings, warnings))
    found.sort(key=lambda v: v.entry.id)
    return found


def discover_corpus(
    root: str | Path | None = None,
    *,
    videos_dirs: str | Path | Sequence[str | Path] | None = None,
    faces_dir: str | Path | None = None,
    annotations_dir: str | Path | None = None,
    audio_dir: str | Path | None = None,
    test_list: str | Path | None = None,
    progress: bool = False,
) -> Corpus:
    """Find every usable id of an Aff-Wild2-style corpus (see the module docstring).

    Raises VafusionError only when nothing usable can be found (missing root, no videos
    folder, an explicit path that does not exist); per-id trouble goes to
    ``Corpus.problems`` and the id is skipped. ``progress`` shows a bar while probing.
    """
    warnings: list[str] = []
    problems: list[Problem] = []
    folders = find_folders(
        root,
        videos_dirs=videos_dirs,
        faces_dir=faces_dir,
        annotations_dir=annotations_dir,
        audio_dir=audio_dir,
        test_list=test_list,
        warnings=warnings,
    )
    videos = index_videos(folders.video_dirs, warnings)
    crop_dirs = list_names(folders.faces, dirs=True, what="face crop folders")

    ids, annotated_in = _annotated_ids(folders.annotations, problems)
    _add_test_ids(ids, annotated_in, folders.test_list, warnings)
    _add_unlabelled_ids(ids, annotated_in, videos, crop_dirs, folders.faces, warnings)

    resolved = _video_names(ids, videos, folders.video_dirs, problems)
    infos = _probe_all((videos[n] for n in resolved.values()), progress)
    listings = _Listings(videos, crop_dirs, audio_files_in(folders.audio))
    found = _discover_all(ids, resolved, infos, folders, listings, problems, warnings)
    return Corpus(videos=found, problems=problems, warnings=warnings, root=folders.root)
