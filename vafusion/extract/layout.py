"""Where a corpus's inputs are on disk: its folders (given or found) and their listings.

Every folder can be given explicitly (``videos_dirs``, ``faces_dir``, ``annotations_dir``,
``audio_dir``, ``test_list``); then ``root`` may be None. Otherwise each is looked for under
``root`` by the names in :mod:`vafusion.extract.affwild2`. The audio folder is never
auto-detected: a WAV there replaces the container's sound track, which must be a deliberate
choice. A folder that is given but does not exist, or a layout with no videos at all, raises
:class:`~vafusion.errors.VafusionError` naming the option to fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vafusion.affwild2 import (
    ANNOTATION_DIR_CANDIDATES,
    ANNOTATION_SUBDIRS,
    AUDIO_EXTENSIONS,
    FACES_DIR_NAMES,
    SPLIT_DIRS,
    TEST_LIST_NAMES,
    VIDEO_DIR_NAMES,
    VIDEO_EXTENSIONS,
)
from vafusion.errors import VafusionError
from vafusion.fs import list_folder

# How the CLI spells each override; error messages name these so users know what to pass.
OPTION_NAMES = {
    "root": "CORPUS",
    "videos_dirs": "--videos",
    "faces_dir": "--faces",
    "annotations_dir": "--annotations",
    "audio_dir": "--audio",
    "test_list": "--test-list",
}


@dataclass(frozen=True)
class CorpusFolders:
    """The folders discovery reads; None where the corpus has none (or ``root`` was not given)."""

    root: Path | None
    video_dirs: list[Path]
    faces: Path | None
    annotations: Path | None  # the folder holding Train_Set/ and Validation_Set/
    audio: Path | None
    test_list: Path | None


# ---- the folders ----------------------------------------------------------------------------


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


def split_dirs_of(folder: Path) -> list[tuple[Path, str]]:
    """``(Train_Set or Validation_Set folder, partition)`` for each that exists in ``folder``."""
    return [(folder / name, part) for name, part in SPLIT_DIRS if (folder / name).is_dir()]


def _root_dir(root: str | Path | None) -> Path | None:
    root_path = Path(root) if root is not None else None
    if root_path is not None and not root_path.is_dir():
        raise VafusionError(
            f"{root_path}: corpus folder not found; pass the folder holding videos/, "
            f"cropped_aligned/ and annotations/ (or give each with {OPTION_NAMES['videos_dirs']}, "
            f"{OPTION_NAMES['faces_dir']}, {OPTION_NAMES['annotations_dir']})"
        )
    return root_path


def _video_dirs(root_path: Path | None, videos_dirs: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """The given videos folders, else those of VIDEO_DIR_NAMES in the root; none at all raises."""
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
    return video_dirs


def _faces_dir(root_path: Path | None, faces_dir: str | Path | None, warnings: list[str]) -> Path | None:
    """The given crops folder, else the root's; without one every visual feature is masked (warned)."""
    if faces_dir is not None:
        return _explicit_dir(faces_dir, "faces_dir", "face crops")
    faces = None
    if root_path is not None:
        faces = next((root_path / n for n in FACES_DIR_NAMES if (root_path / n).is_dir()), None)
    if faces is None:
        warnings.append(
            f"no face crops folder (looked for {FACES_DIR_NAMES[0]}/; set with "
            f"{OPTION_NAMES['faces_dir']}): visual features will be masked for every frame"
        )
    return faces


def _annotations_dir(root: Path | None, annotations_dir: str | Path | None) -> Path | None:
    """The folder holding Train_Set/Validation_Set: explicit (must be valid) or auto-detected."""
    if annotations_dir is not None:
        folder = _explicit_dir(annotations_dir, "annotations_dir", "annotations")
        if split_dirs_of(folder):
            return folder
        for sub in ANNOTATION_SUBDIRS:  # the parent folder was given
            if split_dirs_of(folder / sub):
                return folder / sub
        raise VafusionError(
            f"{folder}: no Train_Set/ or Validation_Set/ folder inside; pass the folder that "
            f"contains them with {OPTION_NAMES['annotations_dir']}"
        )
    if root is None:
        return None
    for candidate in ANNOTATION_DIR_CANDIDATES:
        if split_dirs_of(root / candidate):
            return root / candidate
    return None


def _test_list(root_path: Path | None, annotations: Path | None, test_list: str | Path | None) -> Path | None:
    """The given test list (must exist), else the first of TEST_LIST_NAMES in the root, then in
    the annotations folder."""
    if test_list is not None:
        test_list_path = Path(test_list)
        if not test_list_path.is_file():
            raise VafusionError(f"{test_list_path}: test list not found; check {OPTION_NAMES['test_list']}")
        return test_list_path
    for folder in (root_path, annotations):
        if folder is None:
            continue
        hit = next((folder / n for n in TEST_LIST_NAMES if (folder / n).is_file()), None)
        if hit is not None:
            return hit
    return None


def find_folders(
    root: str | Path | None,
    *,
    videos_dirs: str | Path | Sequence[str | Path] | None,
    faces_dir: str | Path | None,
    annotations_dir: str | Path | None,
    audio_dir: str | Path | None,
    test_list: str | Path | None,
    warnings: list[str],
) -> CorpusFolders:
    """Every folder of the corpus (arguments as :func:`~vafusion.extract.corpus.discover_corpus`).

    Checked in the order of the arguments, so the first bad one is the one named; a missing
    crops folder, or neither annotations nor a test list, is a warning appended to ``warnings``.
    """
    root_path = _root_dir(root)
    video_dirs = _video_dirs(root_path, videos_dirs)
    faces = _faces_dir(root_path, faces_dir, warnings)
    annotations = _annotations_dir(root_path, annotations_dir)
    audio = _explicit_dir(audio_dir, "audio_dir", "audio") if audio_dir is not None else None
    test_list_path = _test_list(root_path, annotations, test_list)
    if annotations is None and test_list_path is None:
        warnings.append(
            f"no annotations found (looked for {ANNOTATION_DIR_CANDIDATES[0]}/Train_Set and Validation_Set; "
            f"set with {OPTION_NAMES['annotations_dir']}) and no test list: every id is 'unlabelled'"
        )
    return CorpusFolders(root_path, video_dirs, faces, annotations, audio, test_list_path)


# ---- their listings -------------------------------------------------------------------------


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


def index_videos(dirs: list[Path], warnings: list[str]) -> dict[str, Path]:
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


def list_names(folder: Path | None, *, dirs: bool, what: str) -> set[str]:
    """Names of the sub-folders (dirs=True) or files in ``folder``, one listing (``what`` names it in errors)."""
    if folder is None:
        return set()
    return {e.name for e in list_folder(folder, what) if e.is_dir() == dirs and not e.name.startswith(".")}


def audio_files_in(audio: Path | None) -> dict[str, Path]:
    """Name -> audio file of the audio folder (``.wav`` preferred over ``.flac``); empty without one."""
    audio_files: dict[str, Path] = {}
    if audio is not None:
        for name in list_names(audio, dirs=False, what="audio files"):
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in AUDIO_EXTENSIONS and (stem not in audio_files or ext == AUDIO_EXTENSIONS[0]):
                audio_files[stem] = audio / name
    return audio_files
