"""Faults of stage-1 inputs: time bases, damaged face crops, folder trees with symlink loops.

Each case asserts what the README's Reliability table promises: the right row for every frame or
a warning naming the file, never a silently wrong result, and discovery that always ends.
"""

from __future__ import annotations

import os
import shutil
import threading
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
from PIL import Image

from tests.faults.conftest import invoke, one_line_error
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.inspect import verify_cache
from vafusion.extract.corpus import discover_corpus
from vafusion.synth import make_alignment_corpus

BEEP = 45
VFR_TIMES = np.concatenate([np.arange(30) / 15, 2 + np.arange(45) / 30])  # 15 fps for 2 s, then 30 fps
LOGMEL = ["--features", "logmel", "--workers", "0", "--device", "cpu"]


def _loudest_row(cache: Path) -> int:
    with h5py.File(cache / "logmel.h5") as f:
        rows = f["videos/align/features"][()].astype(np.float32)
    return int(np.argmax(rows.mean(axis=1))) + 1


def test_variable_frame_rate_audio_lands_on_its_frame(tmp_path):
    corpus = make_alignment_corpus(
        tmp_path / "corpus", fps=30, n_frames=75, beep_frames=[BEEP], marker_frames=[], frame_times=VFR_TIMES
    )
    result = invoke("extract", corpus.root, "--cache", tmp_path / "cache", *LOGMEL)
    assert result.exit_code == 0, result.output
    video = corpus.root / "videos" / "align.mp4"
    assert f"warning: {video}: variable frame rate" in result.output
    entry = read_corpus_index(tmp_path / "cache")["align"]
    np.testing.assert_allclose(entry.frame_times, VFR_TIMES, atol=1e-4)
    constant_rate_row = 1 + round(VFR_TIMES[BEEP - 1] * entry.fps)
    assert constant_rate_row != BEEP  # where reading it as constant-rate would put the beep (row 54)
    assert _loudest_row(tmp_path / "cache") == BEEP
    assert verify_cache(tmp_path / "cache") == []
    assert (
        "variable frame rate (rows at each frame's timestamp): align"
        in invoke("cache", "info", tmp_path / "cache").output
    )


def test_constant_rate_video_keeps_the_grid(tmp_path):
    corpus = make_alignment_corpus(tmp_path / "corpus", fps=25, n_frames=60, beep_frames=[BEEP], marker_frames=[])
    found = discover_corpus(corpus.root)
    entry = found.videos[0].entry
    assert entry.frame_times is None and entry.fps == 25.0 and not found.warnings


def _mkv_declaring(path: Path, declared: int, actual: int, n: int = 40) -> None:
    """A Matroska file whose stream declares ``declared`` fps while its frames are ``actual`` fps apart."""
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=declared)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = k * 1000 // actual, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_declared_rate_that_disagrees_with_the_timestamps_is_warned_and_corrected(tmp_path):
    videos = tmp_path / "corpus" / "videos"
    videos.mkdir(parents=True)
    _mkv_declaring(videos / "clip.mkv", declared=30, actual=25)
    found = discover_corpus(tmp_path / "corpus")
    entry = found.videos[0].entry
    assert entry.fps == 25.0 and entry.n_frames == 40 and entry.frame_times is None
    assert any(
        w.startswith(f"{videos / 'clip.mkv'}: the container declares 30 fps, but its frames are 25 fps apart")
        for w in found.warnings
    ), found.warnings


def test_a_damaged_but_decodable_crop_is_named_and_counts_as_no_face(tmp_path):
    corpus = make_alignment_corpus(tmp_path / "corpus", fps=25, n_frames=30, beep_frames=[], marker_frames=[])
    crop = corpus.root / "cropped_aligned" / "align" / "00010.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(crop, quality=90)
    data = crop.read_bytes()
    crop.write_bytes(data[: int(len(data) * 0.7)] + b"\xff\xd9")  # the scan cut short: libjpeg fills in grey
    result = invoke(
        "extract",
        corpus.root,
        "--cache",
        tmp_path / "cache",
        "--features",
        "resnet18",
        "--visual-weights",
        "random",
        "--image-size",
        "32",
        "--workers",
        "0",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if str(crop) in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "Corrupt JPEG data" in warnings[0]
    assert "used as no face" in warnings[0] and "Traceback" not in result.output
    with h5py.File(tmp_path / "cache" / "resnet18.h5") as f:
        mask, rows = f["videos/align/mask"][()], f["videos/align/features"][()]
    assert not mask[9] and mask.sum() == 29 and not rows[9].any()


def _discover_within(root: Path, seconds: float = 60.0):
    found: list = []
    worker = threading.Thread(target=lambda: found.append(discover_corpus(root)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert found, f"discovery of {root} did not end within {seconds} s"
    return found[0]


def test_symlink_loops_in_the_videos_tree_end(tmp_path):
    corpus = make_alignment_corpus(tmp_path / "corpus", fps=25, n_frames=20, beep_frames=[], marker_frames=[])
    videos = corpus.root / "videos"
    (videos / "sub").mkdir()
    shutil.move(videos / "align.mp4", videos / "sub" / "align.mp4")
    os.symlink("..", videos / "sub" / "up")  # a loop back to videos/
    os.symlink(".", videos / "sub" / "here")  # a loop onto itself
    os.symlink(videos / "sub", videos / "again")  # the same folder twice
    found = _discover_within(corpus.root)
    assert [v.entry.id for v in found.videos] == ["align"] and not found.problems
    assert not [w for w in found.warnings if "found in" in w]  # one folder seen once, not as a duplicate


def test_a_folder_that_cannot_be_listed_is_one_line_naming_it(tmp_path, monkeypatch):
    """Permissions cannot be taken from root (the tests' user), so the listing itself is made to fail."""
    corpus = make_alignment_corpus(tmp_path / "corpus", fps=30, n_frames=30, beep_frames=[], marker_frames=[])
    audio = tmp_path / "audio"
    audio.mkdir()
    real_scandir = os.scandir
    for folder, what in (
        (corpus.root / "cropped_aligned", "face crop folders"),
        (corpus.root / "annotations" / "VA_Estimation_Challenge" / "Train_Set", "annotation files"),
        (audio, "audio files"),
    ):

        def scandir(path, _folder=folder):
            if Path(path) == _folder:
                raise PermissionError(13, "Permission denied")
            return real_scandir(path)

        monkeypatch.setattr("vafusion.fs.os.scandir", scandir)
        result = invoke("extract", corpus.root, "--cache", tmp_path / "cache", "--audio", audio, *LOGMEL)
        line = one_line_error(result, str(folder), what, "Permission denied")
        assert line.endswith("check the folder and its permissions")
        assert not (tmp_path / "cache").exists()  # refused before anything was written
