"""The extraction run: corpus in, feature cache out, resumable, one bad video never stops it.

Data flow per pass: DataLoader workers decode (JPEG crops, or audio + one log-mel per track)
-> the main thread batches rows across video boundaries and runs the backbone -> an
:class:`_Assembler` scatters outputs into per-video arrays -> finished videos go to a
writer thread, so HDF5 writes never block compute. Each video is written as its own part
file (see :mod:`vafusion.cache.writer`), which is what makes a kill -9 cost only the
videos in flight.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vafusion.cache import schema
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index, write_corpus_index
from vafusion.cache.writer import FeatureWriter
from vafusion.device import autocast
from vafusion.device import resolve_device
from vafusion.errors import VafusionError
from vafusion.extract import resnet as resnet_mod
from vafusion.extract import vggish as vggish_mod
from vafusion.extract.audio import load_audio
from vafusion.extract.corpus import Corpus, DiscoveredVideo, crop_paths, discover_corpus

AUDIO_FEATURES = ("vggish", "logmel")
KNOWN_FEATURES = resnet_mod.RESNETS + AUDIO_FEATURES


@dataclass
class ExtractOptions:
    """What to extract and how; everything that changes the numbers goes into provenance."""

    features: tuple[str, ...] = ("resnet50", "vggish", "logmel")
    visual_weights: str = "imagenet"
    image_size: int = 224
    vggish_weights: str | None = None
    vggish_pca: str | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    shard: tuple[int, int] = (1, 1)
    overwrite: bool = False
    compression: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in KNOWN_FEATURES]
        if unknown:
            raise VafusionError(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise VafusionError(f"feature named twice in {','.join(self.features)}")
        if "vggish" in self.features and not self.vggish_weights:
            raise VafusionError(
                "vggish needs --vggish-weights PATH (the published vggish-10086976.pth, see README) "
                "or --vggish-weights random"
            )
        if self.batch_size < 1:
            raise VafusionError("--batch-size must be at least 1")


@dataclass
class Failure:
    video_id: str
    feature: str
    reason: str

    def __str__(self) -> str:
        return f"{self.video_id} [{self.feature}]: {self.reason}"


@dataclass
class ExtractReport:
    cache: Path
    written: dict[str, Path] = field(default_factory=dict)
    extracted: dict[str, int] = field(default_factory=dict)  # videos newly extracted per feature
    skipped: dict[str, int] = field(default_factory=dict)  # already in the cache
    failures: list[Failure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # corpus problems (malformed annotations ...)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems


def _worker_init(_: int) -> None:
    """Decoder workers need one thread each: the backbone in the main process wants the cores."""
    torch.set_num_threads(1)


def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _pad_batch(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pad a short (last) batch to the full size by repeating its last row.

    Why: kernels may pick other algorithms for other batch shapes, which changes the last bits
    of the results; with one shape, a video's rows do not depend on which other videos shared
    its batches, so a resumed run writes exactly what a clean run writes.
    """
    if len(x) == batch_size:
        return x
    return torch.cat([x, x[-1:].expand(batch_size - len(x), *x.shape[1:])])


class _Assembler:
    """Collects backbone output rows per video and hands whole videos to the writer thread."""

    def __init__(self, writer: FeatureWriter, pool: ThreadPoolExecutor, on_done: Callable[[str], None]):
        self.writer = writer
        self.pool = pool
        self.on_done = on_done
        self.rows: dict[str, np.ndarray] = {}
        self.mask: dict[str, np.ndarray] = {}
        self.remaining: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.futures: list[tuple[str, Future]] = []
        self.copies: dict[str, list[str]] = {}  # video id -> ids that get exactly its rows

    def open_copy(self, video_id: str, of: str) -> bool:
        """Let ``video_id`` receive the rows of ``of`` (still being assembled), computing nothing.

        For the ``_left``/``_right`` ids of one video: same track, same frame grid, same rows.
        False when ``of`` is no longer in progress (the caller then computes the rows).
        """
        if of not in self.rows:
            return False
        self.copies.setdefault(of, []).append(video_id)
        return True

    def open(self, video_id: str, n_frames: int, mask: np.ndarray, n_rows: int) -> None:
        """Start a video with ``n_rows`` rows still to come; zero rows where ``mask`` is False."""
        self.rows[video_id] = np.zeros((n_frames, self.writer.dim), np.float32)
        self.mask[video_id] = mask
        self.remaining[video_id] = n_rows
        if n_rows == 0:
            self._finish(video_id)

    def put(self, video_id: str, row_index: np.ndarray, values: np.ndarray) -> None:
        if video_id in self.failed or video_id not in self.rows:
            return
        self.rows[video_id][row_index] = values
        self.remaining[video_id] -= len(row_index)
        if self.remaining[video_id] == 0:
            self._finish(video_id)

    def fail(self, video_id: str, reason: str) -> None:
        if video_id in self.failed:
            return
        self.failed[video_id] = reason
        self.on_done(video_id)
        self.rows.pop(video_id, None)
        self.mask.pop(video_id, None)
        self.remaining.pop(video_id, None)
        for copy in self.copies.pop(video_id, []):
            self.fail(copy, reason)

    def _finish(self, video_id: str) -> None:
        feats = self.rows.pop(video_id)
        mask = self.mask.pop(video_id)
        del self.remaining[video_id]
        for vid in [video_id] + self.copies.pop(video_id, []):
            self.futures.append((vid, self.pool.submit(self.writer.write, vid, feats, mask)))
            self.on_done(vid)

    def wait(self) -> list[Failure]:
        """Wait for pending writes; a failed write is a failure of that video, not of the run."""
        failures = [Failure(v, self.writer.feature, r) for v, r in self.failed.items()]
        for video_id, fut in self.futures:
            try:
                fut.result()
            except (OSError, ValueError) as e:
                failures.append(Failure(video_id, self.writer.feature, f"write failed: {e}"))
        self.futures.clear()
        return failures


# ---------------------------------------------------------------- visual pass ---


class _CropDataset(Dataset):
    """One item per face crop, across all videos of the pass; errors travel as data."""

    def __init__(self, items: list[tuple[int, int, str]], image_size: int):
        self.items = items  # (video number, row index, crop path)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str]:
        video, row, path = self.items[i]
        try:
            return resnet_mod.decode_crop(path, self.image_size), video, row, ""
        except VafusionError as e:
            blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return blank, video, row, str(e)


def _visual_pass(
    videos: list[DiscoveredVideo], writer: FeatureWriter, model: torch.nn.Module, opts: ExtractOptions,
    device: torch.device, pool: ThreadPoolExecutor, warn: Callable[[str], None],
) -> list[Failure]:
    items: list[tuple[int, int, str]] = []
    bar = tqdm(total=len(videos), desc=f"{writer.feature}", unit="video", disable=not opts.progress, dynamic_ncols=True)
    assembler = _Assembler(writer, pool, lambda _: bar.update(1))
    for n, video in enumerate(videos):
        entry = video.entry
        listing: list[str] = []
        paths = crop_paths(video.crops_dir, entry.n_frames, listing)
        for msg in listing:
            warn(msg)
        mask = np.array([p is not None for p in paths], dtype=bool)
        if video.crops_dir is not None and not mask.any():  # a missing folder was reported by discovery
            warn(f"{entry.id}: no face crops in {video.crops_dir}; {writer.feature} rows are zero with mask False")
        items += [(n, row, str(p)) for row, p in enumerate(paths) if p is not None]
        assembler.open(entry.id, entry.n_frames, mask, int(mask.sum()))
    ids = [v.entry.id for v in videos]
    workers = opts.workers if opts.workers is not None else _default_workers()
    loader = DataLoader(
        _CropDataset(items, opts.image_size), batch_size=opts.batch_size, shuffle=False,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None, worker_init_fn=_worker_init,
    )
    frames = 0
    with torch.inference_mode():
        for images, video_nums, rows, errors in loader:
            bad = [i for i, e in enumerate(errors) if e]
            for i in bad:
                assembler.fail(ids[int(video_nums[i])], errors[i])
            x = _pad_batch(images, opts.batch_size).to(device, non_blocking=True)
            with autocast(device):
                out = model(resnet_mod.preprocess_batch(x, opts.image_size).contiguous(memory_format=torch.channels_last))
            out = out[: len(images)].float().cpu().numpy()
            video_nums = video_nums.numpy()
            rows = rows.numpy()
            frames += len(rows)
            bar.set_postfix(fps=f"{frames / max(bar.format_dict['elapsed'], 1e-9):.0f}", refresh=False)
            for v in np.unique(video_nums):
                sel = video_nums == v
                assembler.put(ids[v], rows[sel], out[sel])
    bar.close()
    return assembler.wait()


# ----------------------------------------------------------------- audio pass ---


class _TrackDataset(Dataset):
    """One item per audio track (a video file, shared by its _left/_right ids)."""

    def __init__(self, tracks: list[tuple[str, str]]):
        self.tracks = tracks  # (group key, audio source path)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, int, str]:
        try:
            wave = load_audio(self.tracks[i][1])
        except VafusionError as e:
            return i, None, 0, str(e)
        if wave is None:
            return i, None, -1, ""
        return i, vggish_mod.log_mel(wave), len(wave), ""


class _PatchQueue:
    """VGGish rows waiting for a batch: whole-track log-mels plus patch indices, gathered lazily.

    Patches are cut only when a batch is taken, so memory holds one log-mel per pending track
    (100 rows/s) instead of 96 x 64 values per video frame.
    """

    def __init__(self) -> None:
        self.items: list[list] = []  # [video id, log-mel (F, 64), patch indices (T, 96), next row]
        self.size = 0

    def add(self, video_id: str, lm: torch.Tensor, fps: float, n_frames: int) -> None:
        if n_frames == 0:
            return
        lm = vggish_mod.track_log_mel(lm)  # a track shorter than one STFT window: silence
        self.items.append([video_id, lm, vggish_mod.vggish_patch_indices(fps, n_frames, lm.shape[0]), 0])
        self.size += n_frames

    def take(self, n: int) -> tuple[torch.Tensor, list[tuple[str, np.ndarray]]]:
        """Up to ``n`` patches ``(b, 1, 96, 64)`` across videos, and which rows of which video they are."""
        chunks, owners = [], []
        while n and self.items:
            item = self.items[0]
            video_id, lm, idx, start = item
            stop = min(start + n, len(idx))
            chunks.append(lm[idx[start:stop]])
            owners.append((video_id, np.arange(start, stop)))
            n -= stop - start
            self.size -= stop - start
            if stop == len(idx):
                self.items.pop(0)
            else:
                item[3] = stop
        return torch.cat(chunks).unsqueeze(1), owners


def _audio_pass(
    videos: list[DiscoveredVideo], writers: dict[str, FeatureWriter], pending: dict[str, set[str]],
    vggish: torch.nn.Module | None, pca: "vggish_mod.VGGishPCA | None", opts: ExtractOptions,
    device: torch.device, pool: ThreadPoolExecutor, warn: Callable[[str], None],
) -> list[Failure]:
    """Decode each track once, one log-mel per track, then logmel pooling and batched VGGish."""
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

    assemblers = {f: _Assembler(w, pool, on_done) for f, w in writers.items()}
    workers = opts.workers if opts.workers is not None else _default_workers()
    loader = DataLoader(
        _TrackDataset(tracks), batch_size=None, shuffle=False, num_workers=min(workers, len(tracks)),
        prefetch_factor=2 if workers > 0 and tracks else None, worker_init_fn=_worker_init,
    )
    queue = _PatchQueue()
    frames = 0

    def run_vggish(flush: bool) -> None:
        nonlocal frames
        while queue.size >= opts.batch_size or (flush and queue.size):
            patches, owners = queue.take(opts.batch_size)
            with torch.inference_mode(), autocast(device):
                x = _pad_batch(patches, opts.batch_size).to(device, non_blocking=True)
                emb = vggish(x.contiguous(memory_format=torch.channels_last))[: len(patches)].float().cpu()
            if pca is not None:
                emb = pca(emb)
            emb = emb.numpy()
            at = 0
            for video_id, rows in owners:
                assemblers["vggish"].put(video_id, rows, emb[at : at + len(rows)])
                at += len(rows)
            frames += len(emb)
            bar.set_postfix(fps=f"{frames / max(bar.format_dict['elapsed'], 1e-9):.0f}", refresh=False)

    for track_no, lm, n_samples, error in loader:
        first_on_grid: dict[tuple[float, int], str] = {}  # VGGish rows depend only on track + grid
        for v in by_track[tracks[track_no]]:
            e = v.entry
            mine = {f: a for f, a in assemblers.items() if e.id in pending[f]}
            if error:
                for a in mine.values():
                    a.fail(e.id, error)
                continue
            if lm is None:  # no audio stream: reported by discovery
                for a in mine.values():
                    a.open(e.id, e.n_frames, np.zeros(e.n_frames, bool), 0)
                continue
            mask = vggish_mod.audio_coverage_mask(n_samples, e.fps, e.n_frames)
            if not mask.all():
                warn(f"{e.id}: audio ends before the last {int((~mask).sum())} frame(s); those rows are masked")
            if "logmel" in mine:
                mine["logmel"].open(e.id, e.n_frames, mask, e.n_frames)
                mine["logmel"].put(e.id, np.arange(e.n_frames), vggish_mod.pooled_log_mel(lm, e.fps, e.n_frames).numpy())
            if "vggish" in mine:
                first = first_on_grid.setdefault((e.fps, e.n_frames), e.id)
                if first == e.id or not mine["vggish"].open_copy(e.id, of=first):
                    mine["vggish"].open(e.id, e.n_frames, mask, e.n_frames)
                    queue.add(e.id, lm, e.fps, e.n_frames)
        if "vggish" in assemblers:  # after the whole track is queued, so its copies are registered
            run_vggish(flush=False)
    if "vggish" in assemblers:
        run_vggish(flush=True)
    bar.close()
    failures: list[Failure] = []
    for a in assemblers.values():
        failures += a.wait()
    return failures


# ---------------------------------------------------------------- the run ---


def _extractor_descriptions(opts: ExtractOptions) -> tuple[dict[str, tuple[torch.nn.Module | None, dict, int]], object]:
    """Build each requested backbone once: ``{feature: (model, provenance, dim)}`` and the PCA."""
    built: dict[str, tuple[torch.nn.Module | None, dict, int]] = {}
    pca = None
    frontend = vggish_mod.frontend_params()
    timing = "frame k <-> instant (k - 1) / fps"
    for feature in opts.features:
        if feature in resnet_mod.RESNETS:
            model, prov = resnet_mod.build_resnet(feature, opts.visual_weights)
            prov = dict(prov, preprocessing=resnet_mod.preprocess_params(opts.image_size), input="face crops",
                        missing="no crop: zero row, mask False", timing=timing)
            built[feature] = (model, prov, int(prov["dim"]))
        elif feature == "vggish":
            model, prov = vggish_mod.load_vggish(opts.vggish_weights)
            if opts.vggish_pca:
                pca = vggish_mod.VGGishPCA.from_file(opts.vggish_pca)
            prov = dict(prov, frontend=frontend, patch="0.96 s (96 log-mel frames) centred on each frame's instant, "
                        "edge-padded", postprocess=getattr(pca, "provenance", None), timing=timing)
            built[feature] = (model, prov, vggish_mod.EMBEDDING_SIZE)
        else:
            built[feature] = (None, {"model": "logmel", "frontend": frontend,
                                     "pooling": "mean over [t - 0.5/fps, t + 0.5/fps)", "timing": timing}, vggish_mod.NUM_BANDS)
    return built, pca


def _prepare_cache(cache: Path, index: CorpusIndex, source: str, opts: ExtractOptions) -> None:
    corpus_file = cache / schema.CORPUS_FILE
    if corpus_file.exists():
        existing = read_corpus_index(cache)
        if existing.fingerprint == index.fingerprint:
            return
        if not opts.overwrite:
            added = sorted(set(index.ids) - set(existing.ids))
            removed = sorted(set(existing.ids) - set(index.ids))
            detail = (f"{len(added)} id(s) new, {len(removed)} gone" if added or removed
                      else "same ids, other fps/frame counts/partitions/labels")
            raise VafusionError(
                f"{corpus_file}: the cache was made from another corpus ({detail}); "
                f"use a new --cache directory, or --overwrite to start this one afresh"
            )
    write_corpus_index(cache, index, source=source)


def extract(
    corpus: Corpus | str | Path, cache: str | Path, opts: ExtractOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> ExtractReport:
    """Extract ``opts.features`` for every video of ``corpus`` (or of ``opts.shard``) into ``cache``.

    Resumable: rerunning the same call after an interruption extracts only what is missing.
    Never raises for a single bad video: see ``report.failures``.
    """
    opts = opts or ExtractOptions()
    cache = Path(cache)
    if not isinstance(corpus, Corpus):
        corpus = discover_corpus(corpus)
    report = ExtractReport(cache=cache)
    report.problems = [str(p) for p in corpus.problems]
    warn_fn = warn or (lambda msg: None)

    def note(msg: str) -> None:
        report.warnings.append(msg)
        warn_fn(msg)

    for msg in corpus.warnings:
        note(msg)

    index = corpus.index()
    if not len(index):
        raise VafusionError("the corpus has no usable video ids (see the problems above)")
    _prepare_cache(cache, index, str(corpus.root or ""), opts)
    mine = set(schema.shard_ids(index.ids, opts.shard))
    videos = [v for v in corpus.videos if v.entry.id in mine]
    device = resolve_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    built, pca = _extractor_descriptions(opts)
    writers: dict[str, FeatureWriter] = {}
    for feature, (_, prov, dim) in built.items():
        writers[feature] = FeatureWriter(
            cache, feature, dim, prov, index.fingerprint, shard=opts.shard,
            overwrite=opts.overwrite, compression=opts.compression,
        )
    ids = [v.entry.id for v in videos]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vafusion-writer") as pool:
        for feature in [f for f in opts.features if f in resnet_mod.RESNETS]:
            writer = writers[feature]
            todo = set(writer.pending(ids))
            report.skipped[feature] = len(ids) - len(todo)
            # channels_last: oneDNN's and cuDNN's fast convolution layout (resnet50 at 224 px on this
            # CPU: ~1.3x, one-off measurement; no gain at 64 px).
            model = built[feature][0].to(device).eval().to(memory_format=torch.channels_last)
            failures = _visual_pass([v for v in videos if v.entry.id in todo], writer, model, opts, device, pool, note)
            report.failures += failures
            report.extracted[feature] = len(todo) - len({f.video_id for f in failures})
            report.written[feature] = writer.finalize()
        audio = {f: writers[f] for f in opts.features if f in AUDIO_FEATURES}
        if audio:
            pending = {f: set(w.pending(ids)) for f, w in audio.items()}
            todo = set().union(*pending.values())
            for f in audio:
                report.skipped[f] = len(ids) - len(pending[f])
            vggish = built["vggish"][0].to(device).eval().to(memory_format=torch.channels_last) if "vggish" in audio else None
            failures = _audio_pass([v for v in videos if v.entry.id in todo], audio, pending, vggish, pca, opts,
                                   device, pool, note)
            report.failures += failures
            for f, w in audio.items():
                report.extracted[f] = len(pending[f]) - len({x.video_id for x in failures if x.feature == f})
                report.written[f] = w.finalize()
    return report
