"""``vafusion faces`` on clips of a real face: crops where the face is, aligned on the template, named as
Aff-Wild2 names them; two persons apart; bad videos reported; the detector contract and registry."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FACE_OPTIONS, astronaut_face
from vafusion.errors import VafusionError
from vafusion.extract.corpus import discover_corpus
from vafusion.extract.faces import registry
from vafusion.extract.faces.align import TEMPLATE_112, align, similarity, template
from vafusion.extract.faces.contract import DetectorError, guarded_detect
from vafusion.extract.faces.mtcnn import MTCNN, read_arrays
from vafusion.extract.faces.options import FacesOptions
from vafusion.extract.faces.run import faces
from vafusion.extract.faces.tracking import Track, frames_of, persons_of
from vafusion.synth.face_video import face_clip

CROP_NAME = re.compile(r"^\d{5}\.jpg$")
EYE_TOLERANCE = 4.0  # pixels of a 112 px crop
MOUTH_TOLERANCE = 10.0  # her broad smile lifts and widens the mouth corners 6-8 px off the average template
SPREAD_TOLERANCE = 3.0  # how far any point of a crop may lie from where it lies in the other crops


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(min_face=40)


def _crop_frames(folder: Path) -> list[int]:
    names = sorted(p.name for p in folder.iterdir())
    assert all(CROP_NAME.match(n) for n in names), names
    return [int(n[:5]) for n in names]


def test_a_crop_for_every_face_frame_and_none_in_the_blank_span(face_corpus):
    clip = face_corpus.one
    frames = _crop_frames(face_corpus.root / "cropped_aligned" / "one")
    assert frames == [k for k in range(1, clip.n_frames + 1) if clip.shown[k - 1]]
    crop = Image.open(face_corpus.root / "cropped_aligned" / "one" / "00001.jpg")
    assert crop.size == (112, 112) and crop.mode == "RGB"


def test_eyes_and_mouth_of_every_crop_sit_on_the_template(face_corpus, detector):
    """The detector, run again on each crop (padded onto a larger canvas), finds the points where the
    template puts them, and in the same place in every crop, whatever the face's position, size and roll
    in the frame. (On the full-resolution photo, too, her mouth corners lie 6-8 px from the template.)"""
    folder = face_corpus.root / "cropped_aligned" / "one"
    crops = np.stack([np.asarray(Image.open(p)) for p in sorted(folder.iterdir())])
    canvas = np.full((len(crops), 224, 224, 3), 120, dtype=np.uint8)
    canvas[:, 56:168, 56:168] = crops
    found = detector(torch.from_numpy(canvas).permute(0, 3, 1, 2))
    assert [len(scores) for _, _, scores in found] == [1] * len(crops)
    points = np.stack([p[0].numpy() - 56 for _, p, _ in found])  # (crops, 5, 2)
    error = np.linalg.norm(points - TEMPLATE_112.numpy(), axis=2)
    assert error[:, :2].max() < EYE_TOLERANCE, error
    assert error[:, 3:].max() < MOUTH_TOLERANCE, error
    spread = np.linalg.norm(points - np.median(points, axis=0), axis=2)
    assert spread.max() < SPREAD_TOLERANCE, spread


def test_the_corpus_reads_as_an_aff_wild2_corpus(face_corpus):
    corpus = discover_corpus(face_corpus.root)
    ids = {v.entry.id: v for v in corpus.videos}
    assert set(ids) == {"one", "two_left", "two_right"}
    assert ids["one"].entry.n_frames == face_corpus.one.n_frames
    assert ids["two_left"].video_path.name == "two.mp4" and ids["two_left"].entry.group == "two"
    assert not corpus.problems


def test_the_table_and_the_record_describe_the_crops(face_corpus):
    rows = list(csv.DictReader(open(face_corpus.root / "faces" / "one.csv")))
    mine = [r for r in rows if r["id"] == "one"]
    assert [int(r["frame"]) for r in mine] == _crop_frames(face_corpus.root / "cropped_aligned" / "one")
    record = json.loads((face_corpus.root / "faces" / "one.json").read_text())
    assert record["ids"] == ["one"] and record["frames"] == face_corpus.one.n_frames
    assert record["settings"]["detector"]["weights"].keys() == {"pnet.lz4", "rnet.lz4", "onet.lz4"}
    sheet = Image.open(face_corpus.root / "faces" / "one.png")
    assert sheet.width == 8 * 112 and sheet.height >= 112


def test_two_persons_side_by_side_are_left_and_right_throughout(face_corpus):
    clip = face_corpus.two
    rows = list(csv.DictReader(open(face_corpus.root / "faces" / "two.csv")))
    for side, person in (("two_left", 0), ("two_right", 1)):
        assert _crop_frames(face_corpus.root / "cropped_aligned" / side) == list(range(1, clip.n_frames + 1))
        mine = sorted((r for r in rows if r["id"] == side), key=lambda r: int(r["frame"]))
        assert len({r["track"] for r in mine}) == 1
        for r in mine:  # each crop is of the face drawn on that side, in every frame
            centre = np.array([float(r["x1"]) + float(r["x2"]), float(r["y1"]) + float(r["y2"])]) / 2
            drawn = clip.centres[int(r["frame"]) - 1]
            assert np.argmin(np.linalg.norm(drawn - centre, axis=1)) == person


def test_corrupt_and_audio_only_files_are_reported_and_the_rest_written(face_corpus):
    failures = face_corpus.report.failures
    assert len(failures) == 2, failures
    corrupt, audio_only = face_corpus.bad
    assert any(str(corrupt) in f and "cannot read" in f for f in failures)
    assert any(str(audio_only) in f and "no video stream" in f for f in failures)
    assert face_corpus.report.written == ["one"]


def test_rerun_skips_and_other_settings_are_refused(face_corpus, tmp_path):
    report = faces([face_corpus.one.path], face_corpus.root, FacesOptions(**FACE_OPTIONS))
    assert report.skipped == ["one"] and report.ok
    report = faces([face_corpus.one.path], face_corpus.root, FacesOptions(size=64, **FACE_OPTIONS))
    assert len(report.failures) == 1 and "other settings" in report.failures[0]


def test_detect_every_interpolates_between_detections(tmp_path):
    clip = face_clip(tmp_path / "k.mp4", astronaut_face(), n_frames=9, size=(160, 120), width=72)
    faces([clip.path], tmp_path / "c", FacesOptions(detect_every=4, **FACE_OPTIONS))
    rows = list(csv.DictReader(open(tmp_path / "c" / "faces" / "k.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(1, 10))
    assert [r["detected"] for r in rows] == ["1", "0", "0", "0", "1", "0", "0", "0", "1"]


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, torch.tensor([5.0, -3.0])
    rot = scale * torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE_112 - shift.double()) @ torch.linalg.inv(rot.double()).T
    m = similarity(src[None], TEMPLATE_112)
    assert torch.allclose(m[0, :, :2], rot.double(), atol=1e-9)
    frame = torch.zeros((1, 3, 40, 40), dtype=torch.uint8)
    assert align(frame, src[None].float()).shape == (1, 3, 112, 112)
    assert torch.allclose(template(224), (TEMPLATE_112 + 0.5) * 2 - 0.5)


def test_the_weight_reader_refuses_anything_but_arrays(tmp_path):
    import pickle

    import lz4.frame

    path = tmp_path / "pnet.lz4"
    with lz4.frame.open(path, "wb") as f:
        pickle.dump([np.zeros(3), print], f)  # a callable: what a malicious file would smuggle in
    with pytest.raises(VafusionError, match="not an MTCNN weight file"):
        read_arrays(path)


class ThreeFaces:
    """A plug-in detector that always finds the same face (and one that breaks the contract)."""

    kind = "detector"
    name = "fixed"

    def __init__(self, score: float = 0.9, broken: bool = False) -> None:
        self.score, self.broken = score, broken

    def provenance(self) -> dict:
        return {"score": self.score}

    def to(self, device):
        return self

    def __call__(self, images):
        box = torch.tensor([[10.0, 10.0, 60.0, 70.0]])
        points = torch.tensor([[[25.0, 30.0], [45.0, 30.0], [35.0, 42.0], [27.0, 55.0], [43.0, 55.0]]])
        if self.broken:
            return [(box, points[:, :4], torch.tensor([self.score]))]
        return [(box, points, torch.tensor([self.score])) for _ in images]


def test_a_plugin_detector_by_module_attribute_with_typed_options(tmp_path):
    clip = face_clip(tmp_path / "p.mp4", astronaut_face(), n_frames=3, size=(96, 96), width=60)
    opts = FacesOptions(
        detector="tests.extract.test_faces:ThreeFaces", detector_options={"score": "0.5"}, device="cpu", progress=False
    )
    report = faces([clip.path], tmp_path / "c", opts)
    assert report.ok and report.written == ["p"]
    record = json.loads((tmp_path / "c" / "faces" / "p.json").read_text())
    assert record["settings"]["detector"] == {"name": "tests.extract.test_faces:ThreeFaces", "score": 0.5}


def test_detector_mistakes_are_one_line(tmp_path):
    with pytest.raises(VafusionError, match=r"unknown face detector.*did you mean mtcnn"):
        registry.build("mtcn")
    with pytest.raises(VafusionError, match="has no such option"):
        registry.build("mtcnn", {"size": "3"})
    with pytest.raises(VafusionError, match="expected float"):
        registry.build("mtcnn", {"min_face": "big"})
    _, broken = registry.build("tests.extract.test_faces:ThreeFaces", {"broken": "true"})
    with pytest.raises(DetectorError, match=r"returned 1 results for 2 images|landmarks has shape"):
        guarded_detect(broken, torch.zeros((2, 3, 8, 8), dtype=torch.uint8), "x")


def _track(number: int, frames: range, x: float) -> Track:
    t = Track(number)
    for k in frames:
        box = np.array([x, 10.0, x + 40, 60.0])
        t.add(k, box, np.tile([x + 20, 30.0], (5, 1)), 0.9)
    return t


def test_persons_are_the_longest_tracks_and_their_continuations():
    main, later, blip, other = (
        _track(1, range(1, 40), 10),
        _track(2, range(50, 60), 12),
        _track(3, range(45, 47), 90),
        _track(4, range(5, 30), 200),
    )
    (one,) = persons_of([main, later, blip, other], 1)
    assert [t.number for t in one] == [1, 2]  # the bystander overlaps, the two-frame blip is too short to join
    left, right = persons_of([other, main, later], 2)
    assert [t.number for t in left] == [1, 2] and [t.number for t in right] == [4]
    faces_of = frames_of([_track(5, range(1, 10, 4), 10)], detect_every=4)
    assert sorted(faces_of) == list(range(1, 10)) and not faces_of[2].detected


def test_shards_split_the_videos_by_frames_the_same_way_everywhere():
    from vafusion.extract.faces.run import _my_share
    from vafusion.extract.media import VideoInfo

    infos = {Path(f"v{i}.mp4"): VideoInfo(25.0, n, False, n / 25) for i, n in enumerate([900, 100, 400, 500])}
    parts = [_my_share(infos, (k, 2)) for k in (1, 2)]
    assert sorted(p.stem for part in parts for p in part) == ["v0", "v1", "v2", "v3"]
    assert [sum(infos[p].n_frames for p in part) for part in parts] == [1000, 900]
    with pytest.raises(VafusionError, match="1 <= K <= N"):
        _my_share(infos, (3, 2))
