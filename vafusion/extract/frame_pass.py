"""The frame pass: face crops -> one frame extractor -> one row per crop, written per video.

DataLoader workers decode the crops (JPEG/PNG, resized to the extractor's ``image_size``,
uint8); the main thread batches them across video boundaries, runs the extractor on the
device, checks its output against the contract and scatters rows into per-video arrays; a
writer thread writes finished videos. Frames without a crop are zero rows with mask False:
the extractor never sees them.

Optional hook of built-in frame extractors (a user's extractor needs none): ``interpolation``
(``bilinear``, the default, ``bicubic`` or ``nearest``), how the workers resize crops to
``image_size`` (timm models name their own).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError, show_chain
from vafusion.extract.assembly import Assembler, Outcome
from vafusion.extract.batching import default_workers, pad_batch, worker_init
from vafusion.extract.contract import ExtractorError, FrameExtractor, check_rows, guarded_call
from vafusion.extract.corpus import DiscoveredVideo, crop_paths
from vafusion.extract.options import ExtractOptions
from vafusion.extract.registry import Resolved

_CORRUPT_JPEG = ("Corrupt JPEG data", "Premature end of JPEG file")
"""libjpeg's words for data it could not decode but filled in (grey blocks): the image decodes, wrongly."""


class _DecoderMessages:
    """What a C decoder prints to stderr while it runs (libjpeg warns there and decodes on).

    Why: libjpeg reports a truncated or damaged scan only as a warning on stderr, without the
    file's name, and returns an image with grey blocks; captured here, the crop is named and
    treated as no face. A file (not a pipe) catches the text, so a chatty decoder cannot block.
    """

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None  # made on first use, in the process that decodes

    def run(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, str]:
        if self._file is None:
            self._file = tempfile.TemporaryFile()
        caught = self._file
        caught.seek(0)
        caught.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            out = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        return out, caught.read().decode(errors="replace").strip()


_MESSAGES = _DecoderMessages()  # one per process (each DataLoader worker has its own)


def decode_crop(path: str | Path, image_size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Read a JPEG/PNG face crop as uint8 RGB (3, image_size, image_size), resized (antialiased)
    with ``interpolation`` (bilinear, bicubic or nearest).

    Meant for DataLoader workers: resizing here gives every batch one shape, so batches can
    span videos and crops of any size. A file that cannot be decoded raises VafusionError;
    one that decodes only with libjpeg's "Corrupt JPEG data" warnings raises :class:`CorruptCrop`
    (the frame then counts as no face).
    """
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    try:
        img, said = _MESSAGES.run(lambda: decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
    except Exception as e:  # RuntimeError from libjpeg/libpng, missing file ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(
            f"{path}: unreadable face crop ({reason}); replace or delete the file (a missing crop counts as no face)"
        ) from e
    if any(words in said for words in _CORRUPT_JPEG):
        first = next(line for line in said.splitlines() if any(words in line for words in _CORRUPT_JPEG))
        raise CorruptCrop(
            f"{path}: damaged face crop ({first.strip()[:200]}); used as no face: replace the file "
            f"and extract again with --overwrite to use it"
        )
    if said:
        print(said, file=sys.stderr)  # not about damage: let it through as the decoder said it
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = TF.to_dtype(img, torch.uint8, scale=True)
    if tuple(img.shape[-2:]) != (image_size, image_size):
        mode = TF.InterpolationMode(interpolation)
        img = TF.resize(
            img, [image_size, image_size], interpolation=mode, antialias=mode != TF.InterpolationMode.NEAREST
        )
    return img.contiguous()


class CorruptCrop(VafusionError):
    """A crop that decodes, but only with libjpeg's warnings of damaged data: it counts as no face."""


class _CropDataset(Dataset):
    """One item per face crop, across all videos of the pass; errors and damage travel as data."""

    def __init__(self, items: list[tuple[int, int, str]], image_size: int, interpolation: str = "bilinear"):
        self.items = items  # (video number, row index, crop path)
        self.image_size = image_size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str, str]:
        """``(image, video, row, error, damage)``: error fails the video, damage masks the row."""
        video, row, path = self.items[i]
        blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        try:
            return decode_crop(path, self.image_size, self.interpolation), video, row, "", ""
        except CorruptCrop as e:
            return blank, video, row, "", str(e)
        except VafusionError as e:
            return blank, video, row, str(e), ""


def _open_videos(
    videos: list[DiscoveredVideo], assembler: Assembler, feature: str, warn: Callable[[str], None]
) -> list[tuple[int, int, str]]:
    """Open every video in the assembler; return the crops to decode (video number, row, path)."""
    items: list[tuple[int, int, str]] = []
    for n, video in enumerate(videos):
        entry = video.entry
        listing: list[str] = []
        paths = crop_paths(video.crops_dir, entry.n_frames, listing)
        for msg in listing:
            warn(msg)
        mask = np.array([p is not None for p in paths], dtype=bool)
        if video.crops_dir is not None and not mask.any():  # a missing folder was reported by discovery
            warn(f"{entry.id}: no face crops in {video.crops_dir}; {feature} rows are zero with mask False")
        items += [(n, row, str(p)) for row, p in enumerate(paths) if p is not None]
        assembler.open(entry.id, entry.n_frames, mask, int(mask.sum()))
    return items


def frame_pass(
    videos: list[DiscoveredVideo],
    writer: FeatureWriter,
    resolved: Resolved,
    opts: ExtractOptions,
    device: torch.device,
    pool: ThreadPoolExecutor,
    warn: Callable[[str], None],
) -> Outcome:
    """Run one frame extractor over the crops of ``videos``; a contract breach stops this feature only."""
    ext = cast(FrameExtractor, resolved.extractor)  # the run gives this pass its frame extractors only
    bar = tqdm(total=len(videos), desc=writer.feature, unit="video", disable=not opts.progress, dynamic_ncols=True)
    assembler = Assembler(writer, pool, lambda _: bar.update(1))
    items = _open_videos(videos, assembler, writer.feature, warn)
    ids = [v.entry.id for v in videos]
    workers = opts.workers if opts.workers is not None else default_workers()
    loader = DataLoader(
        _CropDataset(items, ext.image_size, getattr(ext, "interpolation", "bilinear")),
        batch_size=opts.batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=worker_init,
    )
    frames = 0
    with torch.inference_mode():
        try:
            for images, video_nums, rows, errors, damage in loader:
                for i in (i for i, e in enumerate(errors) if e):
                    assembler.fail(ids[int(video_nums[i])], errors[i])
                x = pad_batch(images, opts.batch_size).to(device, non_blocking=True)
                out = guarded_call(ext, resolved.source, ext.name, x)
                out = check_rows(ext, out, len(x), f"a batch of {len(x)} crops", resolved.source)[: len(images)]
                video_nums, rows = video_nums.numpy(), rows.numpy()
                frames += len(rows)
                bar.set_postfix(fps=f"{frames / max(bar.format_dict['elapsed'], 1e-9):.0f}", refresh=False)
                damaged = np.array([bool(d) for d in damage])
                for j in np.flatnonzero(damaged):
                    warn(damage[j])
                    assembler.put(ids[video_nums[j]], rows[j : j + 1], None)
                for v in np.unique(video_nums[~damaged]):
                    sel = (video_nums == v) & ~damaged
                    assembler.put(ids[v], rows[sel], out[sel])
        except ExtractorError as e:
            show_chain(e)
            assembler.abort(str(e))
    bar.close()
    return assembler.wait()
