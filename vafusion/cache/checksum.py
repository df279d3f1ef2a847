"""Per-dataset checksums: a cache copied across machines can be proven byte-identical.

Why CRC32 (``zlib.crc32``): the threat is accidental damage (a flipped bit on a disk, a
truncated or garbled copy), not an adversary, who could rewrite a checksum stored beside the
data anyway. CRC32 detects every burst error up to 32 bits and misses random damage with
probability 2**-32 per dataset, and it is the fastest hash in the standard library on the
benchmark machine (``python benchmarks/bench_cache.py --hashes``, one thread: crc32 3.7 GB/s,
adler32 3.1, sha1 1.7, sha256 1.6 even with SHA-NI, blake2b 0.8, md5 0.7; BENCHMARKS.md 3b), so
``cache verify`` stays bound by disk reads. Recomputing on every load would still cost 1.5-2x a
warm load, so ``load_cache`` does it only when asked (``verify_checksums=True``).

The checksum covers the dataset's logical content (little-endian values in C order), not its
storage, so a compressed copy (``extract --compression``, ``merge --copy``) carries the same
value; the video id, dataset name, dtype and shape are hashed too, so a dataset moved to
another id or reshaped does not match.
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np

from vafusion.cache import schema

ALGORITHM = "crc32"


def _canonical(data: np.ndarray) -> np.ndarray:
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    return np.ascontiguousarray(data)


def checksum(video_id: str, name: str, data: np.ndarray) -> str:
    """``crc32:<8 hex digits>`` of one dataset (``name`` e.g. ``features``, ``mask``, ``labels``)."""
    data = _canonical(np.asarray(data))
    head = f"{video_id}/{name}:{data.dtype.str}:{','.join(map(str, data.shape))}".encode()
    value = zlib.crc32(data.reshape(-1).view(np.uint8).data, zlib.crc32(head))
    return f"{ALGORITHM}:{value:08x}"


def stored(dataset: h5py.h5d.DatasetID) -> str | None:
    """The checksum attribute of a dataset, or None (written before vafusion stored them)."""
    if not h5py.h5a.exists(dataset, schema.CHECKSUM_ATTR.encode()):
        return None
    value = h5py.Dataset(dataset).attrs[schema.CHECKSUM_ATTR]
    return value.decode() if isinstance(value, bytes) else str(value)


def mismatch(video_id: str, name: str, dataset: h5py.h5d.DatasetID, data: np.ndarray) -> str | None:
    """What is wrong with ``data`` read from ``dataset`` (None: matches, or nothing stored)."""
    try:
        want = stored(dataset)
    except (OSError, RuntimeError) as e:
        return f"{name} checksum attribute unreadable ({str(e).splitlines()[0]}): the file is damaged"
    if want is None:
        return None
    if not want.startswith(f"{ALGORITHM}:"):
        return f"{name}: checksum {want!r} of an unknown kind (this vafusion knows {ALGORITHM})"
    got = checksum(video_id, name, data)
    if got != want:
        return (
            f"{name} checksum mismatch (stored {want}, data gives {got}): the data was altered or "
            f"damaged in storage or in a copy"
        )
    return None
