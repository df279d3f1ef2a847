"""Corpus discovery over hand-built Aff-Wild2-style folders with tiny real video files."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from vafusion.cache.corpus_index import read_corpus_index, write_corpus_index
from vafusion.errors import VafusionError
from vafusion.extract import corpus as corpus_mod
from vafusion.extract.corpus import crop_paths, discover_corpus, read_annotation
from vafusion.extract.media import probe_video

NTSC = Fraction(30000, 1001)


def write_video(path: Path, fps: Fraction | int, n_frames: int, audio: bool = False) -> Path:
    """A 16x16 MPEG-4 video of ``n_frames`` frames, optionally with an AAC sound track."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), i * 8, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = np.sin(np.arange(int(16000 * n_frames / float(fps))) / 5.0).astype(np.float32) * 0.1
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate = 16000
            for packet in sound.encode(frame):
                container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_annotation(path: Path, rows: list[tuple[float, float]] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, str):
        path.write_text(rows, newline="")
    else:
        path.write_text("valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in rows))
    return path


def write_crops(folder: Path, frames: list[int], ext: str = ".jpg") -> Path:
    """Crop files are only listed by discovery, so empty files stand in for images."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in frames:
        (folder / f"{k:05d}{ext}").write_bytes(b"")
    return folder


def rows(n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(round(float(v), 3), round(float(a), 3)) for v, a in rng.uniform(-1, 1, (n, 2))]


ANN = Path("annotations/VA_Estimation_Challenge")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small corpus exercising every partition and the usual Aff-Wild2 quirks.

    alpha.mp4   25 fps, 20 frames, audio   -> alpha_left (train, 20 rows), alpha_right (train, 19 rows)
    beta.avi    30 fps, 30 frames, silent  -> beta (validation, 12 rows: mismatch warning)
    gamma.mp4   29.97 fps, 13 frames       -> gamma (test list)
    delta.mkv   30 fps, 17 frames          -> delta (crops, no labels: unlabelled; counted by demuxing)
    epsilon.mp4 copy of alpha              -> epsilon (no crops, no labels: unlabelled)
    """
    root = tmp_path / "affwild"
    alpha = write_video(root / "videos" / "alpha.mp4", 25, 20, audio=True)
    write_video(root / "batch1" / "beta.avi", 30, 30)
    write_video(root / "batch2" / "gamma.mp4", NTSC, 13)
    write_video(root / "videos" / "delta.mkv", 30, 17)
    shutil.copy(alpha, root / "videos" / "epsilon.mp4")

    left = rows(20, 1)
    left[3] = (-5, -5)
    left[7] = (0.25, -5)  # half a label is no label
    write_annotation(root / ANN / "Train_Set" / "alpha_left.txt", left)
    write_annotation(root / ANN / "Train_Set" / "alpha_right.txt", rows(19, 2))
    write_annotation(root / ANN / "Validation_Set" / "beta.txt", rows(12, 3))
    (root / "test_list.txt").write_text("gamma\n\n")

    faces = root / "cropped_aligned"
    write_crops(faces / "alpha_left", [1, 2, 4])
    write_crops(faces / "alpha_right", [1, 2, 3])
    write_crops(faces / "beta", list(range(1, 13)))
    write_crops(faces / "delta", [1, 5])
    write_crops(faces / "orphan", [1])  # no video: ignored with a warning
    return root


def by_id(corpus) -> dict:
    return {v.entry.id: v for v in corpus.videos}


def test_discovery_ids_partitions_groups_and_frame_grid(root: Path):
    corpus = discover_corpus(root)
    assert corpus.problems == []
    videos = by_id(corpus)
    assert list(videos) == ["alpha_left", "alpha_right", "beta", "delta", "epsilon", "gamma"]
    part = {i: v.entry.partition for i, v in videos.items()}
    assert part == {
        "alpha_left": "train",
        "alpha_right": "train",
        "beta": "validation",
        "delta": "unlabelled",
        "epsilon": "unlabelled",
        "gamma": "test",
    }
    # _left/_right share their video's file and group
    left, right = videos["alpha_left"], videos["alpha_right"]
    assert left.entry.group == right.entry.group == "alpha"
    assert left.video_path == right.video_path == root / "videos" / "alpha.mp4"
    assert left.info is right.info and left.info.has_audio
    assert videos["beta"].video_path == root / "batch1" / "beta.avi"
    assert videos["gamma"].video_path == root / "batch2" / "gamma.mp4"
    assert {i: v.entry.group for i, v in videos.items() if not i.startswith("alpha")} == {
        "beta": "beta",
        "delta": "delta",
        "epsilon": "epsilon",
        "gamma": "gamma",
    }

    # T: annotation rows when annotated (even when the container differs), else the container
    T = {i: v.entry.n_frames for i, v in videos.items()}
    assert T == {"alpha_left": 20, "alpha_right": 19, "beta": 12, "delta": 17, "epsilon": 20, "gamma": 13}
    fps = {i: v.entry.fps for i, v in videos.items()}
    assert fps == {
        "alpha_left": 25.0,
        "alpha_right": 25.0,
        "beta": 30.0,
        "delta": 30.0,
        "epsilon": 25.0,
        "gamma": float(NTSC),
    }

    # crops, audio
    assert left.crops_dir == root / "cropped_aligned" / "alpha_left"
    assert videos["epsilon"].crops_dir is None and videos["gamma"].crops_dir is None
    assert all(v.audio_path is None for v in corpus.videos)

    # warnings: frame-count mismatch (beta: 12 rows vs 30 frames, alpha_right: 19 vs 20 is tolerated),
    # crop folder without video, ids without crops, silent videos
    text = "\n".join(corpus.warnings)
    assert "beta: annotation has 12 rows, beta.avi has 30 frames" in text
    assert "alpha_right: annotation" not in text
    assert "orphan" in text
    assert "gamma: no crop folder" in text
    assert "beta: beta.avi has no audio stream" in text


def test_labels_and_no_label_marks(root: Path):
    videos = by_id(discover_corpus(root))
    labels = videos["alpha_left"].entry.labels
    assert labels.dtype == np.float32 and labels.shape == (20, 2)
    expected = np.array(rows(20, 1), dtype=np.float32)
    nan_rows = np.isnan(labels).any(axis=1)
    assert np.flatnonzero(nan_rows).tolist() == [3, 7]
    assert np.isnan(labels[[3, 7]]).all()  # -5 in one column blanks both
    np.testing.assert_array_equal(labels[~nan_rows], expected[~nan_rows])
    for vid in ("delta", "epsilon", "gamma"):
        assert videos[vid].entry.labels is None


def test_index_round_trips_through_the_cache(root: Path, tmp_path: Path):
    corpus = discover_corpus(root)
    index = corpus.index()
    assert index.ids == [v.entry.id for v in corpus.videos]
    assert [e.id for e in index.by_partition("unlabelled")] == ["delta", "epsilon"]
    write_corpus_index(tmp_path / "cache", index)
    assert read_corpus_index(tmp_path / "cache").fingerprint == index.fingerprint


def test_each_video_file_is_probed_once(root: Path, monkeypatch):
    calls: list[Path] = []

    def counting_probe(path):
        calls.append(Path(path))
        return probe_video(path)

    monkeypatch.setattr(corpus_mod, "probe_video", counting_probe)
    discover_corpus(root)
    assert sorted(p.name for p in calls) == ["alpha.mp4", "beta.avi", "delta.mkv", "epsilon.mp4", "gamma.mp4"]


def test_probe_video_counts_and_rates(root: Path):
    info = probe_video(root / "videos" / "alpha.mp4")
    assert (info.fps, info.n_frames, info.has_audio) == (25.0, 20, True)
    assert info.duration_s == pytest.approx(0.8, abs=0.1)
    mkv = probe_video(root / "videos" / "delta.mkv")  # no frame count in the header: demuxed
    assert (mkv.fps, mkv.n_frames, mkv.has_audio) == (30.0, 17, False)
    assert probe_video(root / "batch2" / "gamma.mp4").fps == pytest.approx(29.97002997)
    bad = root / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VafusionError, match=r"broken.mp4: cannot read the video"):
        probe_video(bad)


def test_test_list_wins_only_for_unannotated_ids(root: Path, tmp_path: Path):
    listing = tmp_path / "my_tests.txt"
    listing.write_text("\ufeff# ABAW test ids\r\ngamma\r\ndelta.mp4\r\nbeta\r\n")
    corpus = discover_corpus(root, test_list=listing)
    part = {v.entry.id: v.entry.partition for v in corpus.videos}
    assert part["gamma"] == part["delta"] == "test"
    assert part["beta"] == "validation"  # annotated: the annotation is kept, with a warning
    assert any("beta is in the test list and annotated" in w for w in corpus.warnings)
    with pytest.raises(VafusionError, match=r"nope.txt: test list not found; check --test-list"):
        discover_corpus(root, test_list=tmp_path / "nope.txt")


def test_explicit_folders_without_root(root: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(root / "videos", elsewhere / "vids_a")
    shutil.move(root / "batch1", elsewhere / "vids_b")
    shutil.move(root / "batch2", elsewhere / "vids_b" / "nested")  # folders are searched recursively
    shutil.move(root / "cropped_aligned", elsewhere / "faces")
    shutil.move(root / "annotations", elsewhere / "labels")
    audio = elsewhere / "wav"
    audio.mkdir()
    sf.write(audio / "alpha.wav", np.zeros(1600, np.float32), 16000)
    sf.write(audio / "beta.wav", np.zeros(1600, np.float32), 16000)
    (elsewhere / "tests.txt").write_text("gamma\n")

    corpus = discover_corpus(
        None,
        videos_dirs=[elsewhere / "vids_a", str(elsewhere / "vids_b")],
        faces_dir=elsewhere / "faces",
        annotations_dir=elsewhere / "labels",  # the parent of VA_Estimation_Challenge also works
        audio_dir=audio,
        test_list=elsewhere / "tests.txt",
    )
    assert corpus.problems == []
    videos = by_id(corpus)
    assert sorted(videos) == ["alpha_left", "alpha_right", "beta", "delta", "epsilon", "gamma"]
    assert videos["alpha_left"].audio_path == videos["alpha_right"].audio_path == audio / "alpha.wav"
    assert videos["beta"].audio_path == audio / "beta.wav"
    assert videos["gamma"].audio_path is None
    assert videos["gamma"].video_path == elsewhere / "vids_b" / "nested" / "gamma.mp4"
    assert videos["beta"].crops_dir == elsewhere / "faces" / "beta"
    assert videos["gamma"].entry.partition == "test"
    assert any("gamma: no gamma.wav in" in w for w in corpus.warnings)
    # a WAV replaces the container audio, so a silent container is no longer worth a warning
    assert not any("beta.avi has no audio stream" in w for w in corpus.warnings)

    same = discover_corpus(
        None,
        videos_dirs=[elsewhere / "vids_a", elsewhere / "vids_b"],
        faces_dir=elsewhere / "faces",
        annotations_dir=elsewhere / "labels" / "VA_Estimation_Challenge",
        audio_dir=audio,
        test_list=elsewhere / "tests.txt",
    )
    assert same.index().fingerprint == corpus.index().fingerprint


@pytest.mark.parametrize(
    "option, message",
    [
        ("faces_dir", "face crops folder not found; check --faces"),
        ("annotations_dir", "annotations folder not found; check --annotations"),
        ("audio_dir", "audio folder not found; check --audio"),
        ("videos_dirs", "videos folder not found; check --videos"),
    ],
)
def test_explicit_folder_that_does_not_exist(root: Path, tmp_path: Path, option: str, message: str):
    with pytest.raises(VafusionError, match=f"missing: {message}"):
        discover_corpus(root, **{option: tmp_path / "missing"})


def test_annotations_folder_without_splits(root: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VafusionError, match="empty: no Train_Set/ or Validation_Set/ folder inside"):
        discover_corpus(root, annotations_dir=tmp_path / "empty")


MALFORMED = [
    ("wrong_header", "val,aro\n0.1,0.2\n", 1, "header 'val,aro' is not 'valence,arousal'"),
    ("non_numeric", "valence,arousal\n0.1,0.2\n0.1,abc\n", 3, "non-numeric value in '0.1,abc'"),
    ("three_columns", "valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n", 3, "3 values in '0.1,0.2,0.3', expected 2"),
    ("one_column", "valence,arousal\n0.5\n", 2, "1 values in '0.5', expected 2"),
    ("out_of_range", "valence,arousal\n0.1,0.2\n0.3,0.4\n1.5,0.0\n", 4, "valence 1.5 is outside [-1, 1] and not -5"),
    ("minus_four", "valence,arousal\n0.1,-4\n", 2, "arousal -4 is outside [-1, 1] and not -5"),
    ("nan", "valence,arousal\n0.1,nan\n", 2, "arousal nan is not a finite number"),
    ("blank_row", "valence,arousal\n0.1,0.2\n\n0.3,0.4\n", 3, "empty row"),
    ("empty", "", 1, "empty file"),
    ("header_only", "valence,arousal\n", 2, "no label rows after the header"),
]


@pytest.mark.parametrize("name, content, line, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_annotation_is_reported_and_skipped(root: Path, name, content, line, message):
    write_video(root / "videos" / f"{name}.mp4", 25, 4)
    path = write_annotation(root / ANN / "Train_Set" / f"{name}.txt", content)
    corpus = discover_corpus(root)
    assert [(p.id, p.path, p.line) for p in corpus.problems] == [(name, path, line)]
    assert message in corpus.problems[0].message
    assert str(corpus.problems[0]).startswith(f"{path}:{line}: ")
    ids = [v.entry.id for v in corpus.videos]
    assert name not in ids  # skipped, and not re-added as 'unlabelled' either
    assert "alpha_left" in ids and "beta" in ids  # discovery went on


def test_annotation_tolerates_bom_crlf_and_spaces(tmp_path: Path):
    path = tmp_path / "x.txt"
    path.write_bytes("\ufeff Valence , Arousal \r\n0.5, -0.25\r\n -5,-5\r\n1,-1\r\n\r\n".encode("utf-8"))
    labels = read_annotation(path)
    assert labels.shape == (3, 2)
    np.testing.assert_array_equal(labels[[0, 2]], [[0.5, -0.25], [1.0, -1.0]])
    assert np.isnan(labels[1]).all()


def test_missing_video_and_broken_video_are_problems(root: Path):
    ghost = write_annotation(root / ANN / "Validation_Set" / "ghost_left.txt", rows(5))
    write_annotation(root / ANN / "Validation_Set" / "broken.txt", rows(5))
    (root / "videos" / "broken.mp4").write_bytes(b"\x00" * 64)
    corpus = discover_corpus(root)
    problems = {p.id: p for p in corpus.problems}
    assert set(problems) == {"ghost_left", "broken"}
    assert problems["ghost_left"].path == ghost
    assert "no video file ghost_left.* or ghost.*" in problems["ghost_left"].message
    assert "--videos" in problems["ghost_left"].message
    assert problems["broken"].path == root / "videos" / "broken.mp4"
    assert "cannot read the video" in problems["broken"].message
    assert "ghost_left" not in [v.entry.id for v in corpus.videos]
    assert len(corpus.videos) == 6


def test_id_in_both_splits_is_a_problem(root: Path):
    write_annotation(root / ANN / "Validation_Set" / "alpha_right.txt", rows(19, 2))
    corpus = discover_corpus(root)
    assert [p.id for p in corpus.problems] == ["alpha_right"]
    assert "also annotated in" in corpus.problems[0].message
    assert "alpha_right" not in [v.entry.id for v in corpus.videos]


def test_bad_root_errors_name_what_was_looked_for(tmp_path: Path):
    with pytest.raises(VafusionError, match="nowhere: corpus folder not found"):
        discover_corpus(tmp_path / "nowhere")
    (tmp_path / "junk" / "stuff").mkdir(parents=True)
    with pytest.raises(VafusionError) as err:
        discover_corpus(tmp_path / "junk")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'junk'}: not an Aff-Wild2-style corpus")
    for needle in (
        "videos/",
        "raw_videos/",
        "batch1/",
        "batch2/",
        "--videos",
        "cropped_aligned/",
        "--faces",
        "--annotations",
    ):
        assert needle in message
    with pytest.raises(VafusionError, match="no corpus folder and no videos folder given"):
        discover_corpus(None)


def test_crop_paths_with_gaps_and_extras(tmp_path: Path):
    crops = write_crops(tmp_path / "vid", [1, 4, 7, 0])
    write_crops(crops, [2, 4], ext=".png")  # frame 4 as both: the JPEG is used
    (crops / "notes.txt").write_text("x")
    (crops / "thumb.jpg").write_bytes(b"")
    warnings: list[str] = []
    paths = crop_paths(crops, 5, warnings)
    assert paths == [crops / "00001.jpg", crops / "00002.png", None, crops / "00004.jpg", None]
    assert len(warnings) == 1 and "2 crop images numbered beyond the 5 frames" in warnings[0]
    assert crop_paths(None, 3) == [None, None, None]
    assert crop_paths(crops, 7)[6] == crops / "00007.jpg"
