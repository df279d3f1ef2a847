"""Where ``vafusion faces`` writes, and how a video's output becomes whole or is redone.

The layout is the one ``vafusion extract`` reads (names from :mod:`vafusion.affwild2`)::

    CORPUS/videos/<name>.<ext>                  a link to the input video (a copy where links fail)
    CORPUS/cropped_aligned/<id>/00001.jpg ...   the aligned crops; a missing file = no face in that frame
    CORPUS/faces/<name>.csv                     every tracked face: frame, id, track, box, landmarks, score
    CORPUS/faces/<id>.png                       with --preview: a contact sheet of the id's crops
    CORPUS/faces/<name>.json                    the record: ids, frames, settings; written last = video done

Why kill -9 safe: a video's crops are written into ``cropped_aligned/.<name>.tmp-<pid>/`` (hidden,
so discovery never sees them); the CSV, the previews and then the record are renamed into place,
and only after the record exist are the crop folders renamed to their ids. So a video without a
record was interrupted before anything visible changed (its leftovers are removed and it is done
again), and a video with a record has every file it needs (crop folders still in the temporary
folder are moved into place on the next run).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vafusion.affwild2 import FACES_DIR_NAMES, PERSON_SUFFIXES, VIDEO_DIR_NAMES, crop_name
from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, remove_stale_temporaries, temporary_files

FACES_DIR = "faces"
RECORD_VERSION = 1
CSV_HEADER = ["frame", "id", "track", "detected", "score", "x1", "y1", "x2", "y2"] + [
    f"{axis}{k}" for k in range(1, 6) for axis in ("lx", "ly")
]
"""Landmarks lx1, ly1 ... lx5, ly5: image-left eye, image-right eye, nose, image-left and image-right mouth corner."""
PREVIEW_CROPS = 32  # crops on a contact sheet
PREVIEW_COLUMNS = 8


def ids_of(name: str, persons: int) -> list[str]:
    """The ids a video's persons get: its name, or ``<name>_left`` and ``<name>_right`` (Aff-Wild2's naming)."""
    return [name] if persons == 1 else [name + suffix for suffix in PERSON_SUFFIXES]


@dataclass(frozen=True)
class Layout:
    """The output corpus folder."""

    root: Path

    @property
    def videos(self) -> Path:
        return self.root / VIDEO_DIR_NAMES[0]

    @property
    def crops(self) -> Path:
        return self.root / FACES_DIR_NAMES[0]

    @property
    def faces(self) -> Path:
        return self.root / FACES_DIR

    def create(self) -> None:
        for folder in (self.videos, self.crops, self.faces):
            make_dir(folder, "corpus folder")

    def record(self, name: str) -> Path:
        return self.faces / f"{name}.json"

    def read_record(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.record(name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise VafusionError(f"{self.record(name)}: unreadable ({e}); delete it to redo this video") from None

    def link_video(self, source: Path) -> Path:
        """``videos/<name><ext>`` pointing at ``source`` (a copy where the file system has no links)."""
        target = self.videos / source.name
        remove_stale_temporaries(self.videos, source.name)
        if target.exists() and target.resolve() == source.resolve():
            return target
        if target.exists() or target.is_symlink():
            raise VafusionError(
                f"{target}: another video of that name is already in the corpus; rename {source} or use another --out"
            )
        with atomic_path(target, source.suffix) as tmp:
            try:
                tmp.symlink_to(source.resolve())
            except OSError:
                shutil.copyfile(source, tmp)
        return target


def finish(layout: Layout, name: str, record: dict[str, Any]) -> None:
    """Move a recorded video's crop folders still in its temporary folder into place; none left: redo."""
    pending = [t.path for t in temporary_files(layout.crops, name)]
    for video_id in record["ids"]:
        target = layout.crops / video_id
        if target.is_dir():
            continue
        source = next((p / video_id for p in pending if (p / video_id).is_dir()), None)
        if source is None:
            raise VafusionError(
                f"{target}: missing although {layout.record(name)} says it was written; delete that file and "
                f"{layout.crops / name}* to redo the video"
            )
        os.replace(source, target)
    for path in pending:
        shutil.rmtree(path, ignore_errors=True)


def start(layout: Layout, name: str, ids: Sequence[str]) -> Path:
    """A fresh temporary folder for a video's crops (stale ones of killed runs removed); refuses to
    replace crop folders it did not write."""
    remove_stale_temporaries(layout.crops, name)
    for written in (f"{name}.csv", f"{name}.json", *(f"{i}.png" for i in ids)):
        remove_stale_temporaries(layout.faces, written)
    for video_id in ids:
        if (layout.crops / video_id).exists():
            raise VafusionError(
                f"{layout.crops / video_id}: exists but {layout.record(name)} does not (not written by "
                f"vafusion faces); remove it or choose another --out"
            )
    for stale in (f"{name}.csv", *(f"{i}.png" for i in ids)):  # of a run killed before its record
        (layout.faces / stale).unlink(missing_ok=True)
    work = layout.crops / f".{name}.tmp-{os.getpid()}"
    for video_id in ids:
        make_dir(work / video_id, "crop folder")
    return work


def save_crops(folder: Path, frames: Iterable[int], crops: np.ndarray, quality: int) -> None:
    """Crops (n, S, S, 3) uint8 as ``folder/NNNNN.jpg``, the Aff-Wild2 names."""
    for frame, crop in zip(frames, crops, strict=True):
        Image.fromarray(crop).save(folder / crop_name(frame), quality=quality)


def write_table(path: Path, rows: Iterable[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_HEADER)
        out.writerows(rows)


def contact_sheet(crops: Sequence[np.ndarray], frames: Sequence[int], size: int) -> Image.Image:
    """Crops in a grid, each labelled with its frame number (for a person to look over)."""
    columns = min(PREVIEW_COLUMNS, max(1, len(crops)))
    rows = max(1, -(-len(crops) // columns))
    sheet = Image.new("RGB", (columns * size, rows * size), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for i, (crop, frame) in enumerate(zip(crops, frames, strict=True)):
        x, y = (i % columns) * size, (i // columns) * size
        sheet.paste(Image.fromarray(crop), (x, y))
        draw.text((x + 2, y + 1), str(frame), fill=(255, 255, 0))
    return sheet


def write_image(path: Path, image: Image.Image) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_record(layout: Layout, name: str, record: dict[str, Any]) -> None:
    """The video's record, written last: from now on the video counts as done."""
    with atomic_path(layout.record(name)) as tmp:
        tmp.write_text(json.dumps({"format_version": RECORD_VERSION, **record}, indent=1, sort_keys=True))
