"""``vafusion faces``: videos in, the Aff-Wild2 layout out (detect, track, align, write), one video at a time.

Each video is read twice: the first pass detects (every ``detect_every``-th frame, batched on the
device) and links the detections into tracks; with the whole video seen, tracks become persons
(:mod:`.tracking`); the second pass aligns each person's face in every frame and writes the crops
(:mod:`.writer`). Decoding twice costs little next to detection and keeps memory flat for any
video length. A video that fails (unreadable, no video stream, a detector error) is reported at
the end; the others are written. Rerunning skips the videos already done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vafusion.affwild2 import VIDEO_EXTENSIONS
from vafusion.cache.split import balanced_shards
from vafusion.device import resolve_device
from vafusion.errors import VafusionError
from vafusion.extract.faces import registry, writer
from vafusion.extract.faces.align import align
from vafusion.extract.faces.contract import Detector, guarded_detect
from vafusion.extract.faces.options import FacesOptions
from vafusion.extract.faces.tracking import FrameFace, Linker, Track, frames_of, persons_of
from vafusion.extract.media import VideoInfo, probe_video, video_frames


@dataclass
class FacesReport:
    """What a run did: videos written now, already done, and the failures (one line each)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def find_videos(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Video files of ``inputs`` (files, or folders searched recursively), and the problems: a path that
    does not exist, two videos of one name (their ids would clash)."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for given in map(Path, inputs):
        if not given.exists():
            raise VafusionError(f"{given}: no such file or folder; give video files or folders of videos")
        files = [given] if given.is_file() else sorted(p for p in given.rglob("*") if p.is_file())
        for path in files:
            if given.is_dir() and (path.suffix.lower() not in VIDEO_EXTENSIONS or path.name.startswith(".")):
                continue
            if path.stem in found and found[path.stem].resolve() != path.resolve():
                problems.append(f"{path}: a video named {path.stem} was already given ({found[path.stem]}); rename one")
                continue
            found[path.stem] = path
    return sorted(found.values(), key=lambda p: p.stem), problems


def _probe(videos: list[Path], report: FacesReport) -> dict[Path, VideoInfo]:
    infos = {}
    for path in videos:
        try:
            infos[path] = probe_video(path)
        except VafusionError as e:
            report.failures.append(str(e))
    return infos


def _my_share(infos: dict[Path, VideoInfo], shard: tuple[int, int]) -> list[Path]:
    """Shard K/N's videos: parts of about equal frames, the same split on every machine."""
    k, n = shard
    if not 1 <= k <= n:
        raise VafusionError(f"--shard {k}/{n}: need 1 <= K <= N")
    names = {p.stem: p for p in infos}
    mine = balanced_shards(list(names), [infos[p].n_frames for p in names.values()], n)[k - 1]
    return [names[name] for name in mine]


def faces(
    inputs: Sequence[str | Path], out: str | Path, opts: FacesOptions, warn: Callable[[str], None] | None = None
) -> FacesReport:
    """Write the faces of every video of ``inputs`` into the corpus folder ``out`` (see the module docstring)."""
    report = FacesReport()
    videos, report.failures = find_videos(inputs)
    layout = writer.Layout(Path(out))
    layout.create()
    infos = _probe(videos, report)
    todo = _my_share(infos, opts.shard)
    source, det = registry.build(opts.detector, opts.detector_options)
    det = det.to(resolve_device(opts.device))
    settings = json.loads(json.dumps(opts.settings({"name": source, **det.provenance()})))
    bar = tqdm(
        total=sum(infos[p].n_frames for p in todo), unit="frame", desc="faces", disable=not opts.progress, leave=False
    )
    for path in todo:
        bar.set_postfix_str(path.stem)
        try:
            if _already_done(layout, path.stem, settings):
                report.skipped.append(path.stem)
                bar.update(infos[path].n_frames)
            else:
                notes = _one_video(path, infos[path], det, source, opts, layout, settings, bar)
                report.written.append(path.stem)
                report.warnings += notes
                for note in notes:
                    (warn or (lambda m: None))(note)
        except VafusionError as e:
            report.failures.append(str(e))
    bar.close()
    report.frames = sum(infos[p].n_frames for p in todo)
    return report


def _already_done(layout: writer.Layout, name: str, settings: dict[str, Any]) -> bool:
    record = layout.read_record(name)
    if record is None:
        return False
    if record.get("settings") != settings:
        raise VafusionError(
            f"{layout.record(name)}: {name} was written with other settings (detector, size, margin, persons "
            f"or detect-every); use another --out, or delete that file and cropped_aligned/{name}* to redo it"
        )
    writer.finish(layout, name, record)
    return True


def _detect(
    path: Path, det: Detector, source: str, opts: FacesOptions, device: torch.device, bar: tqdm
) -> tuple[list[Track], int, int]:
    """Pass 1: detections on every ``detect_every``-th frame, linked into tracks; also the frames decoded
    and the frame width."""
    linker = Linker(opts.gap)
    first, width = 1, 0
    # Decode detect_every x batch_size frames at a time, so that every detector call gets a full batch of
    # keyframes (the detector's cost per call is mostly per pyramid scale, whatever the batch).
    for batch in video_frames(path, opts.batch_size * opts.detect_every):
        numbers = np.arange(first, first + len(batch))
        keys = np.flatnonzero((numbers - 1) % opts.detect_every == 0)
        if len(keys):
            images = torch.from_numpy(batch[keys]).permute(0, 3, 1, 2).to(device)
            for key, found in zip(keys, guarded_detect(det, images, source), strict=True):
                linker.add(int(numbers[key]), found)
        first += len(batch)
        width = batch.shape[2]
        bar.update(len(batch))
    return linker.tracks, first - 1, width


def _persons(tracks: list[Track], opts: FacesOptions, width: int, name: str) -> tuple[list[list[Track]], list[str]]:
    """One list of tracks per id (``_left`` first); with two persons wanted and one found, it goes to its side."""
    people = persons_of(tracks, opts.persons)
    if opts.persons == 1:
        return (people or [[]]), []
    if len(people) == 2:
        return people, []
    if not people:
        return [[], []], [f"{name}: no face found; {name}_left and {name}_right have no crops"]
    left = np.mean([t.centre_x for t in people[0]]) < width / 2
    side, other = ("_left", "_right") if left else ("_right", "_left")
    note = f"{name}: one person found (written as {name}{side}); {name}{other} has no crops"
    return ([people[0], []] if left else [[], people[0]]), [note]


def _preview_frames(table: dict[int, FrameFace]) -> set[int]:
    frames = sorted(table)
    if not frames:
        return set()
    picks = np.linspace(0, len(frames) - 1, min(writer.PREVIEW_CROPS, len(frames))).round().astype(int)
    return {frames[i] for i in picks}


def _write_crops(
    path: Path, work: Path, by_id: dict[str, dict[int, FrameFace]], opts: FacesOptions, device: torch.device
) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """Pass 2: every person's aligned crop of every frame with a face; returns the preview crops per id."""
    shown = {vid: _preview_frames(table) for vid, table in by_id.items()}
    previews: dict[str, tuple[list[np.ndarray], list[int]]] = {vid: ([], []) for vid in by_id}
    first = 1
    for batch in video_frames(path, opts.batch_size):
        for vid, table in by_id.items():
            here = [k for k in range(first, first + len(batch)) if k in table]
            if not here:
                continue
            frames = torch.from_numpy(batch[[k - first for k in here]]).permute(0, 3, 1, 2).to(device)
            points = torch.from_numpy(np.stack([table[k].points for k in here])).to(device)
            crops = align(frames, points, opts.size, opts.margin).permute(0, 2, 3, 1).cpu().numpy()
            writer.save_crops(work / vid, here, crops, opts.jpeg_quality)
            for k, crop in zip(here, crops, strict=True):
                if k in shown[vid]:
                    previews[vid][0].append(crop)
                    previews[vid][1].append(k)
        first += len(batch)
    return previews


def _row(frame: int, vid: str, face: FrameFace) -> list[Any]:
    numbers = [*face.box.tolist(), *face.points.reshape(-1).tolist()]
    return [frame, vid, face.track, int(face.detected), round(face.score, 4), *(round(v, 2) for v in numbers)]


def _rows(tracks: list[Track], by_id: dict[str, dict[int, FrameFace]]) -> list[list[Any]]:
    """The CSV: every person's face per frame, and the detections of tracks no person took (id empty)."""
    rows = [_row(k, vid, face) for vid, table in by_id.items() for k, face in table.items()]
    taken = {face.track for table in by_id.values() for face in table.values()}
    for t in tracks:
        if t.number not in taken:
            for j, k in enumerate(t.frames):
                rows.append(_row(k, "", FrameFace(t.boxes[j], t.points[j], t.scores[j], t.number, True)))
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def _one_video(
    path: Path,
    info: VideoInfo,
    det: Detector,
    source: str,
    opts: FacesOptions,
    layout: writer.Layout,
    settings: dict[str, Any],
    bar: tqdm,
) -> list[str]:
    """Detect, track, align and write one video; returns its warnings."""
    name = path.stem
    ids = writer.ids_of(name, opts.persons)
    work = writer.start(layout, name, ids)
    layout.link_video(path)
    device = resolve_device(opts.device)
    tracks, decoded, width = _detect(path, det, source, opts, device, bar)
    people, notes = _persons(tracks, opts, width, name)
    by_id = {vid: frames_of(person, opts.detect_every) for vid, person in zip(ids, people, strict=True)}
    previews = _write_crops(path, work, by_id, opts, device)
    writer.write_table(layout.faces / f"{name}.csv", _rows(tracks, by_id))
    if opts.preview:
        for vid, (crops, frames) in previews.items():
            writer.write_image(layout.faces / f"{vid}.png", writer.contact_sheet(crops, frames, opts.size))
    record = {
        "video": path.name,
        "ids": ids,
        "frames": decoded,
        "fps": info.fps,
        "faces": {vid: len(table) for vid, table in by_id.items()},
        "settings": settings,
    }
    writer.write_record(layout, name, record)
    writer.finish(layout, name, record)
    return notes
