"""The single-file ABAW valence/arousal submission: the organisers' sample, writing it, checking it.

Since its 5th edition the challenge takes one file whose header is
``image_location,valence,arousal`` and whose rows are exactly those of the organisers'
``*_ABAW_VA_test_set_sample.txt``, in the sample's order: first column
``<video_id>/<00001>.jpg`` (5-digit, 1-based frame number), one row per frame. The sample's
row count of a video can differ by a few from the frames in its container.

One parser reads both the sample and a submission (:func:`read_rows`: UTF-8 with or without a
byte-order mark, LF or CRLF line ends), so what :func:`write_submission` writes is judged by
:func:`check_submission` the same way it was built. Sample columns after the first are
ignored.

Mapping a video's predictions onto the sample: the row of frame k takes the prediction of
frame k; rows past the video's last frame repeat its last frame's prediction (padding), and
frames the sample does not list are left out (trimming). Every video whose count differs is
reported, with by how much.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, read_text
from vafusion.numbers import decimal

HEADER = ("image_location", "valence", "arousal")
_LOCATION = re.compile(r"(?P<video>.+)/(?P<frame>\d{5})\.jpg")
SHOWN_PER_KIND = 10  # problems of one kind listed by check_submission; the rest are counted


def read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, comma-separated fields)`` of every line of ``path`` (1-based; BOM and CRLF fine)."""
    lines = read_text(path, "CSV text file").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    for number, line in enumerate(lines, start=1):
        yield number, [f.strip() for f in line.rstrip("\r").split(",")]


def parse_location(text: str) -> tuple[str, int]:
    """``"<video_id>/00042.jpg"`` -> ``("<video_id>", 42)``; ValueError for anything else."""
    m = _LOCATION.fullmatch(text)
    if not m or int(m["frame"]) < 1:
        raise ValueError(f"{text!r} is not <video_id>/<5-digit frame number from 00001>.jpg")
    return m["video"], int(m["frame"])


@dataclass
class Sample:
    """The organisers' sample: its rows in order, each row's frame number, each video's rows."""

    path: Path
    locations: list[str]  # first column of every row, in the sample's order
    frames: np.ndarray  # frame number of every row
    lines: np.ndarray  # line number of every row in the sample file
    videos: dict[str, np.ndarray]  # video id -> positions of its rows, in order
    first_line: dict[str, int]  # video id -> line of its first row


def read_sample(path: str | Path) -> Sample:
    """Parse the sample; a malformed one is a one-line error naming the line."""
    path = Path(path)
    rows = read_rows(path)
    first = next(rows, None)
    if first is None or first[1][0] != HEADER[0]:
        found = ",".join(first[1]) if first else "an empty file"
        raise VafusionError(
            f"{path} line 1: header must start with {HEADER[0]!r} (the organisers' "
            f"*_ABAW_VA_test_set_sample.txt); found {found!r}"
        )
    locations: list[str] = []
    frames: list[int] = []
    lines: list[int] = []
    videos: dict[str, list[int]] = {}  # video -> its rows' positions
    first_line: dict[str, int] = {}
    seen: set[str] = set()
    for number, fields in rows:
        if fields == [""]:
            continue  # a blank line carries no row
        try:
            video, frame = parse_location(fields[0])
        except ValueError as e:
            raise VafusionError(f"{path} line {number}: {e}") from e
        if fields[0] in seen:
            raise VafusionError(f"{path} line {number}: {fields[0]} listed twice; is this the organisers' sample?")
        seen.add(fields[0])
        videos.setdefault(video, []).append(len(locations))
        first_line.setdefault(video, number)
        locations.append(fields[0])
        frames.append(frame)
        lines.append(number)
    if not locations:
        raise VafusionError(f"{path}: no rows after the header")
    return Sample(
        path,
        locations,
        np.array(frames, dtype=np.int64),
        np.array(lines, dtype=np.int64),
        {v: np.array(p, dtype=np.int64) for v, p in videos.items()},
        first_line,
    )


@dataclass(frozen=True)
class CountDifference:
    """A video whose sample rows (``rows``) differ from its predicted frames (``frames``)."""

    video: str
    rows: int
    frames: int
    padded: int  # rows past the last predicted frame: given the last frame's prediction
    left_out: int  # predicted frames that no row of the sample names

    def describe(self) -> str:
        how = [f"{self.padded} row(s) padded with the last frame's prediction"] if self.padded else []
        how += [f"{self.left_out} frame(s) not in the sample left out"] if self.left_out else []
        return (
            f"{self.video}: sample {self.rows} rows, cache {self.frames} frames ({self.rows - self.frames:+d}: "
            f"{'; '.join(how)})"
        )


def fit_to_sample(sample: Sample, predictions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[CountDifference]]:
    """``(N, 2)`` values for the sample's N rows, in its order, and every video whose count differs."""
    missing = [v for v in sample.videos if v not in predictions]
    if missing:
        others = f" (and {len(missing) - 1} other video(s))" if len(missing) > 1 else ""
        raise VafusionError(
            f"{sample.path} line {sample.first_line[missing[0]]}: video {missing[0]} has no predictions{others}"
        )
    values = np.empty((len(sample.locations), 2), dtype=np.float32)
    differences = []
    for video, rows in sample.videos.items():
        pred, frames = np.asarray(predictions[video], dtype=np.float32), sample.frames[rows]
        if len(pred) == 0:
            raise VafusionError(f"{sample.path}: video {video} has 0 predicted frames; check the cache")
        values[rows] = pred[np.minimum(frames, len(pred)) - 1]
        padded = int((frames > len(pred)).sum())
        left_out = len(pred) - len(np.unique(frames[frames <= len(pred)]))
        if padded or left_out or len(rows) != len(pred):
            differences.append(CountDifference(video, len(rows), len(pred), padded, left_out))
    if not np.isfinite(values).all():
        raise VafusionError("the predictions hold NaN or inf values: the runs are broken; retrain them")
    return np.clip(values, -1.0, 1.0), differences


def write_submission(path: str | Path, sample: Sample, predictions: Mapping[str, np.ndarray]) -> list[CountDifference]:
    """Write the submission for ``sample`` atomically (nothing is left behind on an error)."""
    values, differences = fit_to_sample(sample, predictions)
    path = Path(path)
    make_dir(path.parent, "folder of the submission file")
    with atomic_path(path) as tmp, open(tmp, "w", newline="\n") as f:
        f.write(",".join(HEADER) + "\n")
        f.writelines(f"{loc},{v:.6f},{a:.6f}\n" for loc, (v, a) in zip(sample.locations, values.tolist()))
    return differences


@dataclass
class CheckResult:
    """What :func:`check_submission` found: every problem counted by kind, the first few of each listed."""

    rows: int = 0  # data lines read
    shown: dict[str, list[str]] = field(default_factory=dict)  # kind -> its first SHOWN_PER_KIND messages
    counts: dict[str, int] = field(default_factory=dict)  # kind -> how many

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= SHOWN_PER_KIND:
            self.shown.setdefault(kind, []).append(message)

    def lines(self) -> list[str]:
        """Every listed problem, kind by kind, each kind closed by a count of the ones not listed."""
        out = []
        for kind, messages in self.shown.items():
            out += [f"{kind}: {m}" for m in messages]
            if self.counts[kind] > len(messages):
                out.append(f"{kind}: ... and {self.counts[kind] - len(messages)} more ({self.counts[kind]} in all)")
        return out


def _out_of_order(positions: list[int]) -> set[int]:
    """Indices into ``positions`` off one longest increasing run of them: the fewest rows to move."""
    if all(a < b for a, b in itertools.pairwise(positions)):
        return set()
    tails: list[int] = []  # tails[k]: index ending the best increasing subsequence of length k + 1
    before = [-1] * len(positions)
    for i, p in enumerate(positions):
        k = _first_not_below(tails, positions, p)
        before[i] = tails[k - 1] if k else -1
        tails[k : k + 1] = [i]
    keep, i = set(), tails[-1]
    while i >= 0:
        keep.add(i)
        i = before[i]
    return set(range(len(positions))) - keep


def _first_not_below(tails: list[int], positions: list[int], p: int) -> int:
    """The first k with ``positions[tails[k]] >= p`` (binary search; tails' positions increase)."""
    lo, hi = 0, len(tails)
    while lo < hi:
        mid = (lo + hi) // 2
        if positions[tails[mid]] < p:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _check_values(result: CheckResult, number: int, fields: list[str]) -> None:
    for name, text in zip(HEADER[1:], fields[1:]):
        x = decimal(text.strip(), special=True)  # float() would also take 0.0_1 and other scripts' digits
        if x is None:
            result.add("not a number", f"line {number}: {name} {text!r} is not a number")
            continue
        if not math.isfinite(x):
            result.add("not finite", f"line {number}: {name} is {text}")
        elif not -1.0 <= x <= 1.0:
            result.add("out of range", f"line {number}: {name} {text} is outside [-1, 1]")


def check_submission(path: str | Path, sample: Sample) -> CheckResult:
    """Check a submission file against ``sample``: header, rows and their order, numbers, range."""
    path, result = Path(path), CheckResult()
    rows = read_rows(path)
    first = next(rows, None)
    if first is None or first[1] != list(HEADER):
        found = ",".join(first[1]) if first else "an empty file"
        result.add("header", f"line 1: {found!r}, expected {','.join(HEADER)!r}")
    position = {loc: i for i, loc in enumerate(sample.locations)}
    seen: dict[str, int] = {}
    order: list[tuple[int, int]] = []  # (line, sample position) of each sample row, first occurrence
    for number, fields in rows:
        result.rows += 1
        if fields == [""]:
            result.add("blank line", f"line {number}: empty")
            continue
        if len(fields) != len(HEADER):
            result.add("columns", f"line {number}: {len(fields)} field(s), expected {len(HEADER)} ({','.join(HEADER)})")
        location = fields[0]
        if location not in position:
            result.add("unknown row", f"line {number}: {location!r} is not a row of the sample")
        elif location in seen:
            result.add("repeated row", f"line {number}: {location} repeats line {seen[location]}")
        else:
            seen[location] = number
            order.append((number, position[location]))
        _check_values(result, number, fields)
    for i, location in enumerate(sample.locations):
        if location not in seen:
            result.add("missing row", f"{location} (sample line {sample.lines[i]}) has no row")
    for k in sorted(_out_of_order([p for _, p in order])):
        number, p = order[k]
        result.add(
            "order",
            f"line {number}: {sample.locations[p]} is out of the sample's order (sample line {sample.lines[p]})",
        )
    return result
