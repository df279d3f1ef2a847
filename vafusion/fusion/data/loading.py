"""A feature cache read once, checked: its features in RAM or streamed, its masks and labels in RAM.

Why this shape: stage 2 trains many small models from the same cache, so the cache is
read once (close to disk speed, straight into one float16 block per feature set, no per-video
copies), or, when it does not fit, read where it lies (:mod:`vafusion.fusion.data.sources`), and
everything after that is index arithmetic on rows (:mod:`.windows`, :mod:`.batches`).

``LoadedCache``: per feature ``sources[k]`` (rows (sum T, dim) float16, in RAM or streamed)
and ``masks[k]`` (sum T,) bool, ``labels`` (sum T, 2) float32 (NaN = no label), ``offsets``
(N + 1,) so video ``i`` owns rows ``offsets[i]:offsets[i + 1]``. Masks and labels (9 bytes a
frame) are always in RAM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from vafusion.cache import schema
from vafusion.cache.check import few, require_agreement
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.errors import VafusionError
from vafusion.fusion.data import speech
from vafusion.fusion.data.sources import (
    CHECK_CHUNK,
    FeatureSource,
    InMemoryFeature,
    StreamedFeature,
    choose_stream,
    find_nonfinite,
    nonfinite_error,
)


@dataclass(eq=False)
class LoadedCache:
    """Feature sets, masks and labels of some ids of a cache, in ``ids`` order (features in RAM or streamed)."""

    cache_dir: Path
    index: CorpusIndex
    ids: list[str]
    features: tuple[str, ...]
    dims: tuple[int, ...]
    sources: list[FeatureSource]  # per feature: its (sum T, dim) float16 rows, in RAM or streamed
    masks: list[np.ndarray]  # per feature: (sum T,) bool (face / audio present)
    offsets: np.ndarray  # (N + 1,) int64
    labels: np.ndarray  # (sum T, 2) float32, NaN = no label
    extractors: dict[str, dict] = field(default_factory=dict)  # feature -> extractor description
    feature_fingerprints: dict[str, str] = field(default_factory=dict)  # feature -> fingerprint (+ vad's if gated)
    audio_where_speech: float | None = None  # audio masks False where speech probability < this (speech.py)
    _position: dict[str, int] = field(init=False, repr=False)
    _torch: tuple[list[Tensor], Tensor] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._position = {vid: i for i, vid in enumerate(self.ids)}

    @property
    def data(self) -> list[np.ndarray]:
        """Per feature the (sum T, dim) float16 block in RAM; only for a cache loaded into RAM."""
        blocks = [s.block for s in self.sources if isinstance(s, InMemoryFeature)]
        if len(blocks) < len(self.sources):
            raise AttributeError("a streamed cache has no blocks in RAM; read rows with sources[k].rows(a, b)")
        return blocks

    @property
    def in_memory(self) -> bool:
        return all(s.in_memory for s in self.sources)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 frame counts T of the loaded ids."""
        return np.diff(self.offsets)

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def corpus_fingerprint(self) -> str:
        return self.index.fingerprint

    @property
    def feature_bytes(self) -> int:
        """Bytes of the float16 features of the loaded ids (held in RAM unless streamed)."""
        return self.n_frames * sum(self.dims) * 2

    def position(self, video_id: str) -> int:
        """Row of ``video_id`` in ``ids`` / ``offsets`` (the ``video`` column of windows)."""
        try:
            return self._position[video_id]
        except KeyError as e:
            raise KeyError(f"{video_id!r} is not loaded (loaded: {len(self.ids)} ids)") from e

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.position(i) for i in ids], dtype=np.int64)

    def rows(self, video_id: str) -> slice:
        i = self.position(video_id)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def tensors(self) -> tuple[list[Tensor], Tensor]:
        """Zero-copy torch views ``(masks, labels)`` (made once)."""
        if self._torch is None:
            with torch.inference_mode(False):  # usable for training even if made under inference_mode
                self._torch = ([torch.from_numpy(m) for m in self.masks], torch.from_numpy(self.labels))
        return self._torch

    def close(self) -> None:
        """Close the files a streamed cache reads (a cache in RAM holds none). Also done when collected."""
        for source in self.sources:
            source.close()


def load_cache(
    cache_dir: str | Path,
    features: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    index: CorpusIndex | None = None,
    progress: bool = True,
    verify_checksums: bool = False,
    stream: bool | None = None,
    audio_where_speech: float | None = None,
) -> LoadedCache:
    """Read corpus.h5 and the named feature files of ``cache_dir``, checked: features into RAM, or streamed.

    ``ids`` (default: every id of the index) fixes the order of ``LoadedCache.ids``. Pass an
    already read ``index`` to skip reading corpus.h5 again. Before anything big is read, the
    cache's one checker (:func:`vafusion.cache.check.require_agreement`, also behind
    ``cache verify``) proves every dataset well-formed and every feature file in agreement with
    the index (corpus fingerprint, ids, frame counts); inf/NaN features are an error naming
    the feature and the id. ``verify_checksums`` also recomputes the checksums stored at write
    time (a CRC pass over the data; ``cache verify`` does this for a whole cache once, e.g.
    after copying it).

    ``stream``: False reads each video straight into its rows of the feature's float16 block,
    in file (sorted id) order, so the read is sequential; True keeps only masks and labels in
    RAM and reads feature rows from the files when a batch needs them
    (:class:`~vafusion.fusion.data.sources.StreamedFeature`: each video is checked for inf/NaN, and
    its checksums with ``verify_checksums``, when first used); None: the choice of
    :func:`vafusion.fusion.data.sources.loading`, else streamed when the features take more than
    half of the memory available now.

    ``audio_where_speech``: audio streams absent where the cache's ``vad`` feature is below it
    (:mod:`vafusion.fusion.data.speech`).
    """
    cache_dir = Path(cache_dir)
    features = _requested_features(cache_dir, features)
    if index is None:
        index = read_corpus_index(cache_dir)
    ids = _requested_ids(cache_dir, index, ids)
    offsets = _row_offsets(index, ids)
    files = _open_agreeing(cache_dir, index, features, ids)
    streamed = False
    try:
        labels = _frame_labels(index, ids, offsets)
        streamed = choose_stream(stream, int(offsets[-1]) * sum(ff.dim for ff in files) * 2)
        read = _open_streamed if streamed else _read_into_ram
        fingerprints = {ff.feature: ff.fingerprint for ff in files}
        streams = []
        if audio_where_speech is not None:  # checked before the big read
            streams = speech.audio_streams(features, {ff.feature: ff.kind for ff in files}, audio_where_speech)
        sources, masks = read(files, ids, offsets, verify_checksums, progress)
        if audio_where_speech is not None:
            fingerprints[speech.SPEECH_FEATURE] = _gate_audio(cache_dir, index, ids, masks, streams, audio_where_speech)
        return LoadedCache(
            cache_dir=cache_dir,
            index=index,
            ids=ids,
            features=features,
            dims=tuple(ff.dim for ff in files),
            sources=sources,
            masks=masks,
            offsets=offsets,
            labels=labels,
            extractors={ff.feature: ff.extractor for ff in files},
            feature_fingerprints=fingerprints,
            audio_where_speech=audio_where_speech,
        )
    except BaseException:
        streamed = False  # close every file below
        raise
    finally:
        if not streamed:  # a cache in RAM needs its files no more; a streamed one reads them later
            for ff in files:
                ff.close()


def _gate_audio(
    cache_dir: Path, index: CorpusIndex, ids: list[str], masks: list[np.ndarray], streams: list[int], threshold: float
) -> str:
    """Audio masks False where the ``vad`` feature is below ``threshold``; returns ``vad``'s fingerprint."""
    if not (cache_dir / f"{speech.SPEECH_FEATURE}.h5").exists():
        raise VafusionError(
            f"--audio-where-speech {threshold:g}: {cache_dir}/{speech.SPEECH_FEATURE}.h5 missing; extract it first: "
            f"vafusion extract CORPUS --cache {cache_dir} --features {speech.SPEECH_FEATURE} "
            "(pip install 'vafusion[vad]')"
        )
    vad = load_cache(cache_dir, [speech.SPEECH_FEATURE], ids, index=index, progress=False, stream=False)
    speech.gate(masks, streams, speech.speech_frames(vad.data[0][:, 0], vad.masks[0], threshold))
    return vad.feature_fingerprints[speech.SPEECH_FEATURE]


def _requested_features(cache_dir: Path, features: str | Sequence[str]) -> tuple[str, ...]:
    """The feature names as a tuple (one name may come as a plain string); none, or one named twice,
    is the caller's mistake, named before any file is opened."""
    if isinstance(features, str):
        features = [features]
    features = tuple(features)
    if not features:
        raise VafusionError(f"{cache_dir}: no feature sets requested; name at least one (--features)")
    if len(set(features)) != len(features):
        raise VafusionError(f"--features {','.join(features)}: a feature set is named twice; name each once")
    return features


def _requested_ids(cache_dir: Path, index: CorpusIndex, ids: Sequence[str] | None) -> list[str]:
    """The ids to load, in the caller's order (default: the index's); an id the index lacks is named
    here, before the feature files are checked, so the message points at the id list."""
    ids = index.ids if ids is None else list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("load_cache: duplicate ids requested")
    unknown = [vid for vid in ids if vid not in index]
    if unknown:
        raise VafusionError(
            f"{cache_dir / schema.CORPUS_FILE}: no id(s) {few(unknown)} in this cache's corpus index; "
            f"check the id list, or extract a cache that includes them"
        )
    return ids


def _row_offsets(index: CorpusIndex, ids: list[str]) -> np.ndarray:
    """(N + 1,) int64 first rows of the ids laid end to end: video ``i`` owns ``offsets[i]:offsets[i + 1]``."""
    lengths = np.array([index[vid].n_frames for vid in ids], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _open_agreeing(cache_dir: Path, index: CorpusIndex, features: tuple[str, ...], ids: list[str]) -> list[FeatureFile]:
    """Open the feature files and prove them in agreement with the index before anything big is read;
    on any failure the files opened so far are closed again."""
    files: list[FeatureFile] = []
    try:
        for name in features:
            files.append(open_feature_file(cache_dir, name))
        require_agreement(cache_dir, index, files, ids)
    except BaseException:
        for ff in files:
            ff.close()
        raise
    return files


def _frame_labels(index: CorpusIndex, ids: list[str], offsets: np.ndarray) -> np.ndarray:
    """(sum T, 2) float32 labels in the rows of ``offsets``; NaN for ids without annotations."""
    labels = np.full((int(offsets[-1]), 2), np.nan, dtype=np.float32)
    for i, vid in enumerate(ids):
        entry_labels = index[vid].labels
        if entry_labels is not None:
            labels[offsets[i] : offsets[i + 1]] = entry_labels
    return labels


def _open_streamed(
    files: list[FeatureFile], ids: list[str], offsets: np.ndarray, verify: bool, progress: bool
) -> tuple[list[FeatureSource], list[np.ndarray]]:
    """Masks into RAM; features left in the (open) files, read when used."""
    sources: list[FeatureSource] = []
    masks: list[np.ndarray] = []
    for ff in files:
        mask = np.empty(int(offsets[-1]), dtype=bool)
        for i in tqdm(range(len(ids)), desc=f"opening {ff.feature}", unit="video", disable=None if progress else True):
            ff.read_mask_into(ids[i], mask[offsets[i] : offsets[i + 1]])
        sources.append(StreamedFeature(ff, ids, offsets, mask, verify=verify))
        masks.append(mask)
    return sources, masks


def _read_into_ram(
    files: list[FeatureFile], ids: list[str], offsets: np.ndarray, verify: bool, progress: bool
) -> tuple[list[FeatureSource], list[np.ndarray]]:
    """Every video of every file straight into its rows of one float16 block per feature, scanned for inf/NaN."""
    total = int(offsets[-1])
    sources: list[FeatureSource] = []
    masks: list[np.ndarray] = []
    read_order = sorted(range(len(ids)), key=lambda i: ids[i])  # files store ids sorted
    bar = tqdm(
        total=sum(ff.dim for ff in files) * 2 * total,
        unit="B",
        unit_scale=True,
        desc="loading features",
        disable=None if progress else True,
    )
    # The inf/NaN scan of a video runs in a second thread while the next video is read:
    # both h5py reads and numpy loops release the GIL, so the scan costs no wall time
    # when a core is free (it would otherwise add ~30% to a load from the page cache).
    scans: deque[tuple[FeatureFile, str, Future[bool]]] = deque()

    def check_scans(wait: bool) -> None:
        while scans and (wait or scans[0][2].done()):
            ff, vid, scan = scans.popleft()
            if scan.result():
                raise nonfinite_error(ff, vid)

    scratch = np.empty(CHECK_CHUNK, dtype=np.uint16)  # only the one scan thread uses it
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="vafusion-scan") as scanner:
        for ff in files:
            block = np.empty((total, ff.dim), dtype=np.float16)
            mask = np.empty(total, dtype=bool)
            for i in read_order:
                a, b = int(offsets[i]), int(offsets[i + 1])
                vid = ids[i]
                ff.read_into(vid, block[a:b], mask[a:b], verify=verify)
                scans.append((ff, vid, scanner.submit(find_nonfinite, block[a:b], scratch)))
                check_scans(wait=False)
                bar.update((b - a) * ff.dim * 2)
            sources.append(InMemoryFeature(ff.feature, block))
            masks.append(mask)
        check_scans(wait=True)
    return sources, masks


# ---------------------------------------------------------------------------------------


__all__ = ["LoadedCache", "load_cache"]
