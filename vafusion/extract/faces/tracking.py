"""Faces over time: detections linked into tracks, tracks gathered into persons, every frame's face.

Why offline: ``vafusion faces`` sees a whole video before it writes a crop, so a person can be chosen
by how long they are on screen (the main person = the longest track), a track broken by a cut or a
blank span can be joined to the person it continues, and frames between two detections of a track
(``--detect-every K``) take landmarks interpolated between them.

Rules, in order:

* **Linking.** A detection continues the track whose last box overlaps it most (IoU at least
  :data:`MIN_IOU`, or landmarks within :data:`MAX_POINT_DISTANCE` box sizes), among tracks last seen
  at most ``max_gap`` frames before; each track takes at most one detection per frame.
* **Persons.** Tracks, longest first, seed up to ``persons`` persons (a track that overlaps every
  person in time starts a new one); any other track of at least :data:`MIN_JOIN` detections joins
  the person it does not overlap in time whose frames are nearest horizontally; the rest are left
  out (bystanders, and the odd false detection of a frame or two).
* **Left and right.** With two persons, ``_left`` is the one whose faces lie further left on average.
* **In between.** A frame between two detections of one track, at most ``detect_every`` frames apart,
  takes the linear interpolation of their box and landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vafusion.extract.faces.contract import Faces

MIN_IOU = 0.3
MAX_POINT_DISTANCE = 0.25
MIN_JOIN = 3


@dataclass
class Track:
    """One face followed over keyframes: frame -> (box (4,), landmarks (5, 2), score)."""

    number: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, frame: int, box: np.ndarray, points: np.ndarray, score: float) -> None:
        self.frames.append(frame)
        self.boxes.append(box)
        self.points.append(points)
        self.scores.append(score)

    @property
    def span(self) -> tuple[int, int]:
        return self.frames[0], self.frames[-1]

    @property
    def centre_x(self) -> float:
        return float(np.mean([(b[0] + b[2]) / 2 for b in self.boxes]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _affinity(track: Track, box: np.ndarray, points: np.ndarray) -> float:
    """How well a detection continues a track (higher is better; below 0: not at all)."""
    overlap = iou(track.boxes[-1], box)
    size = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
    distance = float(np.linalg.norm(track.points[-1] - points, axis=1).mean()) / size
    if overlap < MIN_IOU and distance > MAX_POINT_DISTANCE:
        return -1.0
    return overlap + (1.0 - distance)


class Linker:
    """Online linking of keyframe detections into tracks (call :meth:`add` in frame order)."""

    def __init__(self, max_gap: int) -> None:
        self.max_gap = max_gap
        self.tracks: list[Track] = []

    def add(self, frame: int, faces: Faces) -> None:
        live = [t for t in self.tracks if frame - t.frames[-1] <= self.max_gap]
        pairs = sorted(
            (
                (_affinity(t, faces.boxes[i], faces.landmarks[i]), ti, i)
                for ti, t in enumerate(live)
                for i in range(len(faces))
            ),
            reverse=True,
        )
        taken_tracks: set[int] = set()
        taken_faces: set[int] = set()
        for value, ti, i in pairs:
            if value < 0 or ti in taken_tracks or i in taken_faces:
                continue
            taken_tracks.add(ti)
            taken_faces.add(i)
            live[ti].add(frame, faces.boxes[i], faces.landmarks[i], float(faces.scores[i]))
        for i in range(len(faces)):
            if i not in taken_faces:
                track = Track(len(self.tracks) + 1)
                track.add(frame, faces.boxes[i], faces.landmarks[i], float(faces.scores[i]))
                self.tracks.append(track)


def _overlaps(a: list[Track], b: Track) -> bool:
    return any(t.span[0] <= b.span[1] and b.span[0] <= t.span[1] for t in a)


def _mean_x(person: list[Track]) -> float:
    return float(np.mean([t.centre_x for t in person]))


def persons_of(tracks: list[Track], n_persons: int) -> list[list[Track]]:
    """Tracks gathered into at most ``n_persons`` persons (module rules), ordered left to right."""
    persons: list[list[Track]] = []
    for track in sorted(tracks, key=lambda t: (-len(t.frames), t.number)):
        free = [p for p in persons if not _overlaps(p, track)]
        if len(persons) < n_persons and not free:
            persons.append([track])
        elif free and len(track.frames) >= MIN_JOIN:
            min(free, key=lambda p: abs(_mean_x(p) - track.centre_x)).append(track)
    return sorted(persons, key=_mean_x)


@dataclass(frozen=True)
class FrameFace:
    """The face of one person in one frame: box, landmarks, score, track, and whether it was detected there."""

    box: np.ndarray
    points: np.ndarray
    score: float
    track: int
    detected: bool


def frames_of(person: list[Track], detect_every: int) -> dict[int, FrameFace]:
    """Frame -> the person's face: detected frames, and frames between two detections of one track."""
    out: dict[int, FrameFace] = {}
    for t in person:
        for j, frame in enumerate(t.frames):
            out[frame] = FrameFace(t.boxes[j], t.points[j], t.scores[j], t.number, True)
            if j == 0 or frame - t.frames[j - 1] > detect_every:
                continue
            before = t.frames[j - 1]
            for k in range(before + 1, frame):
                w = (k - before) / (frame - before)
                box = (1 - w) * t.boxes[j - 1] + w * t.boxes[j]
                points = (1 - w) * t.points[j - 1] + w * t.points[j]
                out[k] = FrameFace(box, points, min(t.scores[j - 1], t.scores[j]), t.number, False)
    return out
