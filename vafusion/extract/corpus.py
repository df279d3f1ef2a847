"""Corpus discovery: which video ids exist, where their video, crops and labels live, and T.

The input is the Aff-Wild2 layout (see DESIGN.md)::

    ROOT/videos/ | raw_videos/ | batch1/ | batch2/      <name>.mp4|.avi|.mkv|.mov (searched recursively)
    ROOT/cropped_aligned/<video_id>/00001.jpg ...       5-digit 1-based frame numbers; gaps = no face
    ROOT/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video_id>.txt
    optional test list: one video_id per line

Every folder can be given explicitly instead (``videos_dirs``, ``faces_dir``,
``annotations_dir``, ``audio_dir``, ``test_list``); then ``root`` may be None. The audio
folder is never auto-detected: a WAV there replaces the container's sound track, which must
be a deliberate choice.

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

import numpy as np

from vafusion.cache.corpus_index import CorpusIndex, VideoEntry
from vafusion.errors import VafusionError
from vafusion.extract.media import VideoInfo, probe_video

# How the CLI spells each override; error messages name these so users know what to pass.
OPTION_NAMES = {
    "root": "CORPUS",
    "videos_dirs": "--videos",
    "faces_dir": "--faces",
    "annotations_dir": "--annotations",
    "audio_dir": "--audio",
    "test_list": "--test-list",
}

VIDEO_DIR_NAMES = ("videos", "raw_videos", "batch1", "batch2")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")  # preference order when a name has several
FACES_DIR_NAMES = ("cropped_aligned",)
ANNOTATION_DIR_CANDIDATES = (
    "annotations/VA_Estimation_Challenge",
    "annotations/VA_Set",
    "VA_Estimation_Challenge",
)
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


class AnnotationFormatError(VafusionError):
    """A malformed annotation file; ``line`` is 1-based (the header is line 1)."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(
            f"{path}:{line}: {reason}; expected the header 'valence,arousal' then one "
            f"'valence,arousal' row per frame with values in [-1, 1] or -5 (no label)"
        )


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


# ---- annotation files ---------------------------------------------------------------------


def _parse_rows(path: Path, rows: list[str]) -> np.ndarray:
    """(len(rows), 2) float64; the first bad row raises AnnotationFormatError with its line."""
    try:  # fast path: numpy's C parser; any surprise falls back to the exact slow path
        values = np.loadtxt(rows, delimiter=",", comments=None, dtype=np.float64, ndmin=2)
        if values.shape == (len(rows), 2):
            return values
    except ValueError:
        pass
    values = np.empty((len(rows), 2), dtype=np.float64)
    for i, row in enumerate(rows):
        line = i + 2
        parts = row.split(",")
        if not row.strip():
            raise AnnotationFormatError(path, line, "empty row")
        if len(parts) != 2:
            raise AnnotationFormatError(
                path, line, f"{len(parts)} values in {row.strip()[:40]!r}, expected 2 (valence,arousal)"
            )
        try:
            values[i, 0] = float(parts[0])
            values[i, 1] = float(parts[1])
        except ValueError:
            raise AnnotationFormatError(path, line, f"non-numeric value in {row.strip()[:40]!r}") from None
    return values


def read_annotation(path: str | Path) -> np.ndarray:
    """Read an Aff-Wild2 VA annotation file as (T, 2) float32 labels, NaN = no label.

    Tolerates a UTF-8 BOM, CRLF line ends, whitespace around values and trailing blank
    lines. A row with -5 in either column becomes NaN in both: Aff-Wild2 marks frames
    without a valid annotation that way, and half a label is not a label. Anything else
    malformed raises :class:`AnnotationFormatError` naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AnnotationFormatError(path, 1, "not a UTF-8 text file") from None
    except OSError as e:
        raise AnnotationFormatError(path, 1, f"cannot read the file ({e.strerror or e})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AnnotationFormatError(path, 1, "empty file")
    header = tuple(part.strip().lower() for part in lines[0].strip().split(","))
    if header != ANNOTATION_HEADER:
        raise AnnotationFormatError(path, 1, f"header {lines[0].strip()[:40]!r} is not 'valence,arousal'")
    rows = lines[1:]
    if not rows:
        raise AnnotationFormatError(path, 2, "no label rows after the header")
    values = _parse_rows(path, rows)
    ok = ((values >= -1.0) & (values <= 1.0)) | (values == NO_LABEL)
    if not ok.all():
        r, c = np.argwhere(~ok)[0]
        value = values[r, c]
        what = "not a finite number" if not np.isfinite(value) else "outside [-1, 1] and not -5"
        raise AnnotationFormatError(path, int(r) + 2, f"{ANNOTATION_HEADER[c]} {value:g} is {what}")
    labels = values.astype(np.float32)
    labels[(values == NO_LABEL).any(axis=1)] = np.nan
    return labels


def read_test_list(path: str | Path) -> list[str]:
    """Ids of a test list: one per line; blank lines and ``#`` comments skipped; a video
    extension (``name.mp4``) is dropped so a list of file names also works."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise VafusionError(f"{path}: cannot read the test list ({e}); pass a UTF-8 text file with one id per line") from None
    ids: list[str] = []
    for line in text.splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS:
            name = stem
        if name not in ids:
            ids.append(name)
    return ids


# ---- face crops ---------------------------------------------------------------------------


def crop_paths(
    crops_dir: str | Path | None, n_frames: int, warnings: list[str] | None = None
) -> list[Path | None]:
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
    try:
        with os.scandir(crops_dir) as it:
            entries = [e.name for e in it]
    except OSError as e:
        raise VafusionError(f"{crops_dir}: cannot list the face crops ({e.strerror or e}); check the folder") from None
    for name in entries:
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


def _as_paths(value: str | Path | Sequence[str | Path] | None) -> list[Path] | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def _explicit_dir(path: str | Path, option: str, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise VafusionError(f"{path}: {what} folder not found; check {OPTION_NAMES[option]}")
    return path


def _split_dirs_of(folder: Path) -> list[tuple[Path, str]]:
    return [(folder / name, part) for name, part in SPLIT_DIRS if (folder / name).is_dir()]


def _resolve_annotations_dir(root: Path | None, annotations_dir: str | Path | None) -> Path | None:
    """The folder holding Train_Set/Validation_Set: explicit (must be valid) or auto-detected."""
    if annotations_dir is not None:
        folder = _explicit_dir(annotations_dir, "annotations_dir", "annotations")
        if _split_dirs_of(folder):
            return folder
        for sub in ("VA_Estimation_Challenge", "VA_Set"):  # the parent folder was given
            if _split_dirs_of(folder / sub):
                return folder / sub
        raise VafusionError(
            f"{folder}: no Train_Set/ or Validation_Set/ folder inside; pass the folder that "
            f"contains them with {OPTION_NAMES['annotations_dir']}"
        )
    if root is None:
        return None
    for candidate in ANNOTATION_DIR_CANDIDATES:
        if _split_dirs_of(root / candidate):
            return root / candidate
    return None


def fit_frame_times(times: np.ndarray, n_frames: int) -> np.ndarray:
    """A video's frame instants for an id of ``n_frames`` rows (the annotation may count a frame or two
    more or fewer than the container): cut, or continued at the median interval of the last frames."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) >= n_frames:
        return times[:n_frames].copy()
    step = float(np.median(np.diff(times[-32:]))) if len(times) > 1 else 1.0
    return np.concatenate([times, times[-1] + step * np.arange(1, n_frames - len(times) + 1)])


def _walk_once(tops: list[Path]) -> Iterable[tuple[str, list[str]]]:
    """``(folder, file names)`` of every folder below ``tops``, following symlinks but entering each
    folder once (by device and inode): a link back up the tree (a loop) or two links to one folder
    cannot make discovery run forever or see a video twice. Hidden folders are skipped."""
    seen: set[tuple[int, int]] = set()
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            yield dirpath, filenames


def _index_videos(dirs: list[Path], warnings: list[str]) -> dict[str, Path]:
    """Video name (file stem) -> file, over all folders recursively.

    The same name twice: in one folder the extension order of VIDEO_EXTENSIONS decides,
    across folders the first folder (in the order given, then sorted) wins; both warn.
    """
    found: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
    for dirpath, filenames in _walk_once(dirs):
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext not in rank or name.startswith("."):
                continue
            path = Path(dirpath) / name
            other = found.get(stem)
            if other is None:
                found[stem] = path
            elif other.parent == path.parent:
                keep = path if rank[ext] < rank[other.suffix.lower()] else other
                found[stem] = keep
                warnings.append(f"{path.parent}: video {stem} exists as several files; using {keep.name}")
            else:
                warnings.append(f"video {stem} found in {other.parent} and {path.parent}; using {other}")
    return found


def _resolve_video(video_id: str, videos: dict[str, Path]) -> str | None:
    """The video name of an id: itself if such a file exists, else without _left/_right."""
    if video_id in videos:
        return video_id
    for suffix in PERSON_SUFFIXES:
        if video_id.endswith(suffix) and video_id[: -len(suffix)] in videos:
            return video_id[: -len(suffix)]
    return None


def _list_names(folder: Path | None, *, dirs: bool) -> set[str]:
    """Names of the sub-folders (dirs=True) or files in ``folder``, one listing."""
    if folder is None:
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_dir() == dirs and not e.name.startswith(".")}


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

    # -- folders --------------------------------------------------------------------------
    root_path = Path(root) if root is not None else None
    if root_path is not None and not root_path.is_dir():
        raise VafusionError(
            f"{root_path}: corpus folder not found; pass the folder holding videos/, "
            f"cropped_aligned/ and annotations/ (or give each with {OPTION_NAMES['videos_dirs']}, "
            f"{OPTION_NAMES['faces_dir']}, {OPTION_NAMES['annotations_dir']})"
        )
    explicit_videos = _as_paths(videos_dirs)
    if explicit_videos is not None:
        video_dirs = [_explicit_dir(d, "videos_dirs", "videos") for d in explicit_videos]
    elif root_path is not None:
        video_dirs = [root_path / n for n in VIDEO_DIR_NAMES if (root_path / n).is_dir()]
    else:
        video_dirs = []
    if not video_dirs and root_path is None:
        raise VafusionError(
            f"no corpus folder and no videos folder given; pass {OPTION_NAMES['root']} or "
            f"{OPTION_NAMES['videos_dirs']} (plus {OPTION_NAMES['faces_dir']}, {OPTION_NAMES['annotations_dir']})"
        )
    if not video_dirs:
        where = f"{root_path}"
        looked = ", ".join(f"{n}/" for n in VIDEO_DIR_NAMES)
        raise VafusionError(
            f"{where}: not an Aff-Wild2-style corpus: no videos folder (looked for {looked}; set with "
            f"{OPTION_NAMES['videos_dirs']}), face crops in {FACES_DIR_NAMES[0]}/ (set with "
            f"{OPTION_NAMES['faces_dir']}), annotations in {ANNOTATION_DIR_CANDIDATES[0]}/ (set with "
            f"{OPTION_NAMES['annotations_dir']})"
        )

    if faces_dir is not None:
        faces = _explicit_dir(faces_dir, "faces_dir", "face crops")
    else:
        faces = None
        if root_path is not None:
            faces = next((root_path / n for n in FACES_DIR_NAMES if (root_path / n).is_dir()), None)
        if faces is None:
            warnings.append(
                f"no face crops folder (looked for {FACES_DIR_NAMES[0]}/; set with "
                f"{OPTION_NAMES['faces_dir']}): visual features will be masked for every frame"
            )
    annotations = _resolve_annotations_dir(root_path, annotations_dir)
    audio = _explicit_dir(audio_dir, "audio_dir", "audio") if audio_dir is not None else None

    test_list_path: Path | None = None
    if test_list is not None:
        test_list_path = Path(test_list)
        if not test_list_path.is_file():
            raise VafusionError(f"{test_list_path}: test list not found; check {OPTION_NAMES['test_list']}")
    else:
        for folder in (root_path, annotations):
            if folder is None:
                continue
            hit = next((folder / n for n in TEST_LIST_NAMES if (folder / n).is_file()), None)
            if hit is not None:
                test_list_path = hit
                break
    if annotations is None and test_list_path is None:
        warnings.append(
            f"no annotations found (looked for {ANNOTATION_DIR_CANDIDATES[0]}/Train_Set and Validation_Set; "
            f"set with {OPTION_NAMES['annotations_dir']}) and no test list: every id is 'unlabelled'"
        )

    # -- ids --------------------------------------------------------------------------------
    videos = _index_videos(video_dirs, warnings)
    crop_dirs = _list_names(faces, dirs=True)

    # id -> (partition, labels, the file that defines it)
    ids: dict[str, tuple[str, np.ndarray | None, Path | None]] = {}
    annotated_in: dict[str, Path] = {}
    ambiguous: set[str] = set()
    for split_dir, partition in _split_dirs_of(annotations) if annotations is not None else []:
        for name in sorted(os.listdir(split_dir)):
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
            ids[stem] = (partition, labels, path)
    for stem in ambiguous:
        ids.pop(stem, None)

    if test_list_path is not None:
        for video_id in read_test_list(test_list_path):
            if video_id in annotated_in:
                warnings.append(
                    f"{test_list_path}: {video_id} is in the test list and annotated in "
                    f"{annotated_in[video_id]}; keeping the annotation"
                )
                continue
            ids[video_id] = ("test", None, test_list_path)

    # Unlabelled: crop folders with a video, then videos no id refers to.
    unmatched_crops = []
    for name in sorted(crop_dirs):
        if name in ids or name in annotated_in:
            continue
        if _resolve_video(name, videos) is None:
            unmatched_crops.append(name)
            continue
        ids[name] = ("unlabelled", None, None)
    if unmatched_crops:
        warnings.append(
            f"{faces}: {len(unmatched_crops)} crop folders have no video and no annotation "
            f"(e.g. {unmatched_crops[0]}); ignored"
        )
    used_videos = {_resolve_video(i, videos) for i in ids} | {_resolve_video(i, videos) for i in annotated_in}
    for name in sorted(videos):
        if name not in used_videos and name not in ids:
            ids[name] = ("unlabelled", None, None)

    # -- videos, probing ----------------------------------------------------------------
    resolved: dict[str, str] = {}
    for video_id, (partition, _labels, source) in sorted(ids.items()):
        name = _resolve_video(video_id, videos)
        if name is None:
            names = [video_id] + [video_id[: -len(x)] for x in PERSON_SUFFIXES if video_id.endswith(x)]
            candidates = " or ".join(f"{n}.*" for n in names) + f" ({'/'.join(VIDEO_EXTENSIONS)})"
            problems.append(
                Problem(
                    video_id,
                    source,
                    None,
                    f"no video file {candidates} in "
                    f"{', '.join(str(d) for d in video_dirs)}; add it or point {OPTION_NAMES['videos_dirs']} at its folder",
                )
            )
            continue
        resolved[video_id] = name
    infos = _probe_all((videos[n] for n in resolved.values()), progress)

    audio_files: dict[str, Path] = {}
    if audio is not None:
        for name in _list_names(audio, dirs=False):
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in AUDIO_EXTENSIONS and (stem not in audio_files or ext == AUDIO_EXTENSIONS[0]):
                audio_files[stem] = audio / name

    found: list[DiscoveredVideo] = []
    timing_told: set[Path] = set()
    for video_id, name in sorted(resolved.items()):
        partition, labels, _source = ids[video_id]
        video_path = videos[name]
        info = infos[video_path]
        if isinstance(info, str):
            problems.append(Problem(video_id, video_path, None, info))
            continue
        if info.timing_note and video_path not in timing_told:
            timing_told.add(video_path)
            warnings.append(f"{video_path}: {info.timing_note}")
        if labels is not None:
            n_frames = len(labels)
            if abs(n_frames - info.n_frames) > FRAME_MISMATCH_TOLERANCE:
                warnings.append(
                    f"{video_id}: annotation has {n_frames} rows, {video_path.name} has {info.n_frames} "
                    f"frames; using {n_frames} (the annotation defines the frame grid)"
                )
        else:
            n_frames = info.n_frames
        crops = faces / video_id if faces is not None and video_id in crop_dirs else None
        if crops is None and faces is not None:
            warnings.append(f"{video_id}: no crop folder {faces / video_id}; visual features will be masked")
        audio_path = audio_files.get(video_id) or audio_files.get(name)
        if audio is not None and audio_path is None:
            warnings.append(
                f"{video_id}: no {name}.wav in {audio}; using the sound track of {video_path.name}"
            )
        if audio_path is None and not info.has_audio:
            warnings.append(f"{video_id}: {video_path.name} has no audio stream; audio features will be masked")
        entry = VideoEntry(
            id=video_id, fps=info.fps, n_frames=n_frames, partition=partition, group=name, labels=labels,
            frame_times=None if info.frame_times is None else fit_frame_times(info.frame_times, n_frames),
        )
        found.append(DiscoveredVideo(entry, video_path, crops, audio_path, info))
    found.sort(key=lambda v: v.entry.id)
    return Corpus(videos=found, problems=problems, warnings=warnings, root=root_path)
