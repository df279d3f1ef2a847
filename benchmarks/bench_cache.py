"""Cache loading: `load_cache` into RAM against reading the same files sequentially from disk.

A cache of realistic dims (resnet50 2048 + vggish 128 + logmel 64, float16; by default 100k
frames, ~450 MB, in 20 videos of ~5000 frames, Aff-Wild2's mean length) is written in a temp
dir with the real writer API (write_corpus_index + FeatureWriter, random data). Then,
interleaved and repeated:

- baseline: ``np.fromfile`` of every file ``load_cache`` reads (corpus.h5 + the three
  feature files), i.e. the same bytes and more, read sequentially into fresh memory;
- ``vafusion.fusion.data.loading.load_cache`` of the three feature sets (labels, masks, inf/NaN check).

Result: baseline seconds / load_cache seconds (medians), target >= 0.7. load_cache pays a
fixed cost per video (HDF5 group lookups and reads per id), so shorter videos for the same
bytes lower the ratio: --videos shows how much. Measured with a warm
page cache (the files were just written), and again cold when the page cache can be dropped
(``echo 3 > /proc/sys/vm/drop_caches``: needs root; the script says whether it worked).

Comparison row (no target): ``load_cache(..., verify_checksums=True)`` against the default,
i.e. what recomputing every dataset's stored CRC32 on load costs (why it is off by default).
``--hashes`` first prints the throughput of the checksum candidates on this CPU (why CRC32).

Comparison row (no target): the trainer's window throughput (shuffled 300-frame windows,
hop 200, batches of 16, standardised float32) from the loaded cache (``iterate_batches``)
against the common practice of the field: one .npy per video per feature, opened with
``np.load(mmap_mode="r")`` and windowed in Python by a torch Dataset + DataLoader.

    python benchmarks/bench_cache.py [--frames 100000] [--videos 20] [--repeats 5] [--no-cold] [--hashes]
                                     [--no-windows]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import zlib
from pathlib import Path

import _common as C
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vafusion.fusion.data.batches import iterate_batches
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import make_windows

FEATURES = tuple(C.REAL_DIMS)
WINDOW, HOP, BATCH = 300, 200, 16


def read_raw(paths: list[Path]) -> int:
    """Read every file whole, sequentially, into fresh arrays; returns the bytes read."""
    total = 0
    for p in paths:
        total += np.fromfile(p, dtype=np.uint8).nbytes
    return total


def time_load(cache: Path, verify_checksums: bool = False) -> float:
    start = time.perf_counter()
    loaded = load_cache(cache, FEATURES, progress=False, verify_checksums=verify_checksums)
    elapsed = time.perf_counter() - start
    del loaded
    return elapsed


HASHES = {
    "zlib.crc32": zlib.crc32,
    "zlib.adler32": zlib.adler32,
    "hashlib.sha1": lambda b: hashlib.sha1(b).digest(),
    "hashlib.sha256": lambda b: hashlib.sha256(b).digest(),
    "hashlib.blake2b": lambda b: hashlib.blake2b(b).digest(),
    "hashlib.md5": lambda b: hashlib.md5(b).digest(),
}


def hash_throughput(mib: int = 64, repeats: int = 5) -> None:
    """GB/s of each checksum candidate over float16 data, one thread (best of ``repeats``)."""
    data = np.random.default_rng(0).standard_normal(mib * 2**19).astype(np.float16).view(np.uint8)
    copy = np.empty_like(data)
    rows = {"memcpy (reference)": lambda b: np.copyto(copy, b)}
    rows.update(HASHES)
    for name, fn in rows.items():
        best = min(C.timed(lambda: fn(data)) for _ in range(repeats))  # noqa: B023
        print(f"  {name:<20} {data.nbytes / best / 1e9:6.2f} GB/s", flush=True)


def compare_checksums(cache: Path, feature_bytes: int, repeats: int) -> None:
    """Warm load time with and without recomputing the stored checksums (interleaved medians)."""
    plain, checked = [], []
    for _ in range(repeats):
        plain.append(time_load(cache))
        checked.append(time_load(cache, verify_checksums=True))
    p, c = C.median(plain), C.median(checked)
    print(
        f"warm page cache: load_cache {p:.3f} s, with verify_checksums=True {c:.3f} s "
        f"({c / p:.2f}x; CRC32 of {feature_bytes / 1e6:.0f} MB); medians of {repeats}"
    )


# ------------------------------------------------------ the common practice (comparison) ---


def write_npy_tree(root: Path, loaded) -> None:
    """One .npy per video per feature (+ mask, labels): the usual layout of feature dumps."""
    for f, block, mask in zip(loaded.features, loaded.data, loaded.masks):
        (root / f).mkdir(parents=True)
        for _i, vid in enumerate(loaded.ids):
            rows = loaded.rows(vid)
            np.save(root / f / f"{vid}.npy", block[rows])
            np.save(root / f / f"{vid}.mask.npy", mask[rows])
    (root / "labels").mkdir()
    for vid in loaded.ids:
        np.save(root / "labels" / f"{vid}.npy", loaded.labels[loaded.rows(vid)])


class NpyWindows(Dataset):
    """Window i of video v: memmapped slices per feature, converted and standardised in numpy.

    Memmaps are opened once in __init__ (kinder to this baseline than the also common
    np.load in __getitem__).
    """

    def __init__(self, root: Path, ids: list[str], windows: np.ndarray, standardizer: Standardizer):
        self.windows = windows
        self.feats = {f: [np.load(root / f / f"{v}.npy", mmap_mode="r") for v in ids] for f in FEATURES}
        self.masks = {f: [np.load(root / f / f"{v}.mask.npy", mmap_mode="r") for v in ids] for f in FEATURES}
        self.labels = [np.load(root / "labels" / f"{v}.npy", mmap_mode="r") for v in ids]
        self.mean = dict(zip(FEATURES, standardizer.mean))
        self.std = dict(zip(FEATURES, standardizer.std))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        v, s, n = (int(x) for x in self.windows[i])
        streams, present = [], []
        for f in FEATURES:
            x = np.zeros((WINDOW, self.mean[f].size), np.float32)
            x[:n] = self.feats[f][v][s : s + n]
            m = np.zeros(WINDOW, bool)
            m[:n] = self.masks[f][v][s : s + n]
            x = (x - self.mean[f]) / self.std[f]
            x[~m] = 0.0
            streams.append(torch.from_numpy(x))
            present.append(torch.from_numpy(m))
        y = np.full((WINDOW, 2), np.nan, np.float32)
        y[:n] = self.labels[v][s : s + n]
        valid = torch.arange(WINDOW) < n
        return streams, present, valid, torch.from_numpy(y)


def windows_per_s_vafusion(loaded, standardizer, windows: np.ndarray, seed: int) -> float:
    start = time.perf_counter()
    n = 0
    for batch in iterate_batches(loaded, standardizer, windows, BATCH, shuffle=True, seed=seed, window=WINDOW):
        n += batch.valid.shape[0]
    return n / (time.perf_counter() - start)


def windows_per_s_npy(dataset: NpyWindows, seed: int) -> float:
    loader = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(seed)
    )
    start = time.perf_counter()
    n = 0
    for _streams, _present, valid, _labels in loader:
        n += valid.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000, help="frames in the cache (default 100000, ~450 MB)")
    ap.add_argument("--videos", type=int, default=20, help="videos (default 20: ~5000 frames each)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-page-cache measurement")
    ap.add_argument("--tmp", default=None, help="directory for the temporary cache (default: system temp)")
    ap.add_argument("--hashes", action="store_true", help="first print the throughput of checksum candidates")
    ap.add_argument("--no-windows", action="store_true", help="skip the window-throughput comparison")
    args = ap.parse_args()
    C.header("cache loading: load_cache vs sequential np.fromfile of the same files")
    if args.hashes:
        print("checksum candidates, 64 MiB of float16, one thread, best of 5:")
        hash_throughput()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        info = C.write_random_cache(cache, args.frames, args.videos)
        files = C.cache_files(cache, FEATURES)
        file_bytes = sum(p.stat().st_size for p in files)
        print(
            f"cache: {args.videos} videos, {args.frames} frames, dims {C.REAL_DIMS}; float16 feature bytes "
            f"{info['feature_bytes'] / 1e6:.1f} MB, files read {file_bytes / 1e6:.1f} MB; written in "
            f"{time.perf_counter() - start:.1f} s ({cache.parent})",
            flush=True,
        )

        def compare(label: str, repeats: int, before_each=lambda: None) -> tuple[float, float]:
            """Medians of (raw read s, load_cache s), interleaved; ``before_each`` runs before every timed read."""
            raw, load = [], []
            for r in range(repeats):
                before_each()
                raw.append(C.timed(lambda: read_raw(files)))
                before_each()
                load.append(time_load(cache))
                print(
                    f"  {label} repeat {r + 1}: np.fromfile {file_bytes / raw[-1] / 1e9:.2f} GB/s, "
                    f"load_cache {info['feature_bytes'] / load[-1] / 1e9:.2f} GB/s "
                    f"(ratio {raw[-1] / load[-1]:.3f})",
                    flush=True,
                )
            raw_m, load_m = C.median(raw), C.median(load)
            print(
                f"{label} page cache: np.fromfile {raw_m:.3f} s ({file_bytes / raw_m / 1e9:.2f} GB/s), "
                f"load_cache {load_m:.3f} s ({info['feature_bytes'] / load_m / 1e9:.2f} GB/s); "
                f"medians of {repeats}; load average {C.load_average()}"
            )
            return raw_m, load_m

        # warm: the files were just written, and every repeat reads them again; one untimed round
        # first (its first big allocations and reads are slower, whichever goes first)
        read_raw(files)
        time_load(cache)
        raw_m, load_m = compare("warm", args.repeats)
        C.result("cache_load_efficiency_warm", raw_m / load_m, ">=", 0.7)

        compare_checksums(cache, info["feature_bytes"], args.repeats)

        if not args.no_cold:
            if C.drop_page_cache():
                # one untimed round: the first drop after writing also waits for writeback
                read_raw(files)
                C.drop_page_cache()
                time_load(cache)
                raw_m, load_m = compare("cold", max(3, args.repeats // 2), before_each=C.drop_page_cache)
                C.result("cache_load_efficiency_cold", raw_m / load_m, ">=", 0.7)
            else:
                print("cold page cache: not measured (cannot write /proc/sys/vm/drop_caches here)")

        if args.no_windows:
            return
        # window throughput: loaded cache vs one .npy per video per feature (memmap)
        loaded = load_cache(cache, FEATURES, progress=False)
        train_ids = [e.id for e in loaded.index.by_partition("train")]
        standardizer = Standardizer.fit(loaded, train_ids)
        windows = make_windows(offsets=loaded.offsets, window=WINDOW, hop=HOP, videos=loaded.positions(train_ids))
        npy_root = Path(tmp) / "npy"
        write_npy_tree(npy_root, loaded)
        dataset = NpyWindows(npy_root, loaded.ids, windows, standardizer)
        windows_per_s_npy(dataset, 0)  # warm the page cache for the .npy files
        ours, theirs = [], []
        for r in range(3):
            ours.append(windows_per_s_vafusion(loaded, standardizer, windows, r))
            theirs.append(windows_per_s_npy(dataset, r))
            print(
                f"  windows repeat {r + 1}: iterate_batches {ours[-1]:.0f} windows/s, "
                f".npy memmap Dataset {theirs[-1]:.0f} windows/s",
                flush=True,
            )
        o, t = C.median(ours), C.median(theirs)
        print(
            f"trainer input, {len(windows)} shuffled windows of {WINDOW} frames, batch {BATCH}, one process, "
            f"warm page cache: iterate_batches {o:.0f} windows/s ({o * WINDOW / 1e3:.0f}k frames/s), "
            f"per-video .npy memmap + Python windowing {t:.0f} windows/s ({t * WINDOW / 1e3:.0f}k frames/s): "
            f"{o / t:.1f}x (medians of 3)"
        )
        print(f"load average at end {C.load_average()}")


if __name__ == "__main__":
    main()
