"""The track pass: every audio track decoded once, handed to every track extractor.

DataLoader workers decode each track (a video file, shared by its ``_left``/``_right``
ids) to mono float32 at each sample rate the extractors want; the main thread gives each
extractor ``(wave, frame_times)`` per video, checks the ``(T, dim)`` rows against the
contract, and a writer thread writes finished videos. vafusion masks what the audio does
not cover (no audio stream, or instants past the end of the track); a track without any
audio is never shown to an extractor.

Rows depend only on the track and the frame grid, so an id sharing both with one already
done (``_left``/``_right``) gets a copy instead of a second computation.

Optional hooks of built-in track extractors (a user's extractor needs none of them):

* ``frontend``: an object with ``key``, ``sample_rate`` and ``__call__(wave) -> tensor``,
  run in the decoding workers, once per track for every extractor naming the same key
  (the log-mel that ``logmel`` and ``vggish`` share); the extractor then gets
  ``from_frontend(front, frame_times)`` instead of ``__call__``;
* ``batch_rows(front, frame_times) -> rows`` (``len(rows)``, ``rows.take(start, stop)``)
  and ``run_batch(x) -> (B, dim)``: the pass cuts backbone batches of ``--batch-size``
  across tracks (VGGish's 0.96 s patches), so a GPU sees full batches.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError, show_chain
from vafusion.extract import align
from vafusion.extract.assembly import Assembler, Outcome
from vafusion.extract.audio import SAMPLE_RATE, load_audio, resample
from vafusion.extract.batching import default_workers, pad_batch, worker_init
from vafusion.extract.contract import ExtractorError, check_rows, guarded_call
from vafusion.extract.corpus import DiscoveredVideo
from vafusion.extract.options import ExtractOptions
from vafusion.extract.registry import Resolved


class _TrackDataset(Dataset):
    """One item per audio track: its waves per sample rate and its frontends, errors as data."""

    def __init__(self, paths: list[str], rates: list[int], frontends: dict[str, Any]):
        self.paths = paths
        self.rates = rates  # shipped to the main process (extractors called with the wave)
        self.frontends = frontends  # run here; only their outputs are shipped

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, dict | None, float, dict, str]:
        """``(track, {rate: wave}, duration_s, {frontend key: output}, error)``; waves None without audio."""
        try:
            wave = load_audio(self.paths[i])
        except VafusionError as e:
            return i, None, 0.0, {}, str(e)
        if wave is None:
            return i, None, 0.0, {}, ""
        needed = set(self.rates) | {f.sample_rate for f in self.frontends.values()}
        waves = {rate: torch.from_numpy(resample(wave, SAMPLE_RATE, rate)) for rate in needed}
        fronts = {key: f(waves[f.sample_rate]) for key, f in self.frontends.items()}
        return i, {r: waves[r] for r in self.rates}, len(wave) / SAMPLE_RATE, fronts, ""


class _RowQueue:
    """Rows of one batched extractor waiting for a batch, across videos and tracks, cut lazily."""

    def __init__(self) -> None:
        self.items: list[list] = []  # [video id, rows source, next row]
        self.size = 0

    def add(self, video_id: str, rows: Any) -> None:
        if len(rows):
            self.items.append([video_id, rows, 0])
            self.size += len(rows)

    def take(self, n: int) -> tuple[torch.Tensor, list[tuple[str, np.ndarray]]]:
        """Up to ``n`` inputs across videos, and which rows of which video they are."""
        chunks, owners = [], []
        while n and self.items:
            item = self.items[0]
            video_id, rows, start = item
            stop = min(start + n, len(rows))
            chunks.append(rows.take(start, stop))
            owners.append((video_id, np.arange(start, stop)))
            n -= stop - start
            self.size -= stop - start
            if stop == len(rows):
                self.items.pop(0)
            else:
                item[2] = stop
        return torch.cat(chunks), owners


class _Feature:
    """One track extractor in the pass: its assembler, its batch queue, and how it is called."""

    def __init__(self, resolved: Resolved, assembler: Assembler, pending: set[str]):
        self.resolved = resolved
        # A TrackExtractor; a built-in may add the optional hooks (frontend, from_frontend,
        # run_batch, batch_rows) that this pass looks up by name: typed as what they are, duck-typed.
        self.ext: Any = resolved.extractor
        self.assembler = assembler
        self.pending = pending
        self.frontend: Any = getattr(self.ext, "frontend", None)
        self.queue = _RowQueue() if hasattr(self.ext, "run_batch") else None
        self.alive = True

    def rows(self, waves: dict, fronts: dict, frame_times: np.ndarray, device: torch.device) -> np.ndarray:
        """This video's ``(T, dim)`` rows, checked (not for batched extractors).

        Every extractor gets its own copy of the wave, the frontend's output and the frame times:
        one that changes its input in place (``wave.zero_()``) must not change what the next sees.
        """
        ext, source = self.ext, self.resolved.source
        if self.frontend is not None:
            front = fronts[self.frontend.key].clone()
            out = guarded_call(ext.from_frontend, source, ext.name, front, frame_times.copy())
        else:
            wave = waves[ext.sample_rate].to(device, copy=True)
            out = guarded_call(ext, source, ext.name, wave, frame_times.copy())
        return check_rows(ext, out, len(frame_times), f"a track of {len(frame_times)} frames", source)

    def run_batches(self, batch_size: int, flush: bool) -> None:
        """Run the full batches waiting (and, with ``flush``, the rest)."""
        queue = self.queue
        assert queue is not None  # only an extractor with run_batch has a queue, and is run in batches
        while queue.size >= batch_size or (flush and queue.size):
            x, owners = queue.take(batch_size)
            out = guarded_call(self.ext.run_batch, self.resolved.source, self.ext.name, pad_batch(x, batch_size))
            out = check_rows(self.ext, out, batch_size, f"a batch of {batch_size}", self.resolved.source)
            at = 0
            for video_id, rows in owners:
                self.assembler.put(video_id, rows, out[at : at + len(rows)])
                at += len(rows)

    def stop(self, error: ExtractorError) -> None:
        self.alive = False
        self.assembler.abort(str(error))
        if self.queue is not None:
            self.queue = _RowQueue()


def _loader(tracks: list[str], features: list[_Feature], opts: ExtractOptions) -> DataLoader:
    rates = sorted({f.ext.sample_rate for f in features if f.frontend is None})
    frontends = {f.frontend.key: f.frontend for f in features if f.frontend is not None}
    workers = opts.workers if opts.workers is not None else default_workers()
    return DataLoader(
        _TrackDataset(tracks, rates, frontends),
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(tracks)),
        prefetch_factor=2 if workers > 0 and tracks else None,
        worker_init_fn=worker_init,
    )


def _video(
    feature: _Feature,
    video: DiscoveredVideo,
    waves: dict | None,
    duration: float,
    fronts: dict,
    done: dict,
    device: torch.device,
) -> None:
    """Start (or compute) one video's rows of one feature.

    ``done`` maps this track's frame grids already handled to ``(first id, rows)``; rows are
    None while a batched feature's rows wait in its queue (then the id becomes a copy).
    """
    e, a = video.entry, feature.assembler
    frame_times = e.instants()
    mask = align.covered(frame_times, duration)
    if waves is None or not mask.any():  # no audio stream (reported by discovery) or no audio at all
        a.open(e.id, e.n_frames, np.zeros(e.n_frames, bool), 0)
        return
    grid = (e.fps, e.n_frames, None if e.frame_times is None else e.frame_times.tobytes())
    first, rows = done.get(grid, (None, None))
    if first is not None and rows is None and a.open_copy(e.id, of=first):
        return
    a.open(e.id, e.n_frames, mask, e.n_frames)
    if first is not None and rows is not None:
        a.put(e.id, np.arange(e.n_frames), rows)
    elif feature.queue is not None:
        ext, front = feature.ext, fronts[feature.frontend.key].clone()
        batched = guarded_call(ext.batch_rows, feature.resolved.source, ext.name, front, frame_times.copy())
        feature.queue.add(e.id, batched)
        done[grid] = (e.id, None)
    else:
        done[grid] = (e.id, feature.rows(waves, fronts, frame_times, device))
        a.put(e.id, np.arange(e.n_frames), done[grid][1])


def track_pass(
    videos: list[DiscoveredVideo],
    writers: dict[str, FeatureWriter],
    extractors: dict[str, Resolved],
    pending: dict[str, set[str]],
    opts: ExtractOptions,
    device: torch.device,
    pool: ThreadPoolExecutor,
    warn: Callable[[str], None],
) -> dict[str, Outcome]:
    """Decode each track once and run every track extractor on it; returns each feature's outcome."""
    by_track: dict[tuple[str, str], list[DiscoveredVideo]] = {}
    for v in videos:
        by_track.setdefault((v.entry.group, str(v.audio_path or v.video_path)), []).append(v)
    tracks = list(by_track)
    bar = tqdm(total=len(videos), desc="+".join(writers), unit="video", disable=not opts.progress, dynamic_ncols=True)
    outstanding = {v.entry.id: sum(v.entry.id in pending[f] for f in writers) for v in videos}

    def on_done(video_id: str) -> None:
        outstanding[video_id] -= 1
        if outstanding[video_id] == 0:
            bar.update(1)

    features = [_Feature(extractors[f], Assembler(w, pool, on_done), pending[f]) for f, w in writers.items()]
    with torch.inference_mode():
        for track_no, waves, duration, fronts, error in _loader([p for _, p in tracks], features, opts):
            _track(features, by_track[tracks[track_no]], waves, duration, fronts, error, opts, device, warn)
        for f in (f for f in features if f.alive and f.queue is not None):
            try:
                f.run_batches(opts.batch_size, flush=True)
            except ExtractorError as err:
                show_chain(err)
                f.stop(err)
    bar.close()
    return {f.assembler.writer.feature: f.assembler.wait() for f in features}


def _track(
    features: list[_Feature],
    track_videos: list[DiscoveredVideo],
    waves: dict | None,
    duration: float,
    fronts: dict,
    error: str,
    opts: ExtractOptions,
    device: torch.device,
    warn: Callable[[str], None],
) -> None:
    """All features of one decoded track; batched features run their full batches afterwards."""
    for v in track_videos:
        e = v.entry
        if waves is not None and not error:
            uncovered = int((~align.covered(e.instants(), duration)).sum())
            if 0 < uncovered and any(e.id in f.pending for f in features):
                warn(f"{e.id}: audio ends before the last {uncovered} frame(s); those rows are masked")
    for f in (f for f in features if f.alive):
        done: dict = {}
        try:
            for v in (v for v in track_videos if v.entry.id in f.pending):
                if error:
                    f.assembler.fail(v.entry.id, error)
                else:
                    _video(f, v, waves, duration, fronts, done, device)
            if f.queue is not None:
                f.run_batches(opts.batch_size, flush=False)
        except ExtractorError as err:
            show_chain(err)
            f.stop(err)
