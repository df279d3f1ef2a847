"""Names and constants of cache format v1, and the fingerprint used to compare provenance.

Everything a colleague needs to read a cache with plain h5py is spelled here once;
the writer, the reader and ``cache info`` all use these names.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from vafusion.errors import VafusionError

FEATURE_FORMAT = "vafusion-features"
CORPUS_FORMAT = "vafusion-corpus"
FORMAT_VERSION = 1
CORPUS_FILE = "corpus.h5"
PARTS_DIR = ".parts"
LOCK_SUFFIX = ".lock"
"""``CACHE/.<file>.lock``: held (flock) by the one process writing ``CACHE/<file>``."""
PARTITIONS = ("train", "validation", "test", "unlabelled")

# Feature-file layout: videos/<id>/features (T, dim) float16 and videos/<id>/mask (T,) bool.
VIDEOS_GROUP = "videos"
FEATURES_DATASET = "features"
MASK_DATASET = "mask"
FEATURE_DTYPE = "float16"
TRANSFORM_GROUP = "transform"
"""A derived feature file (``cache derive``): the fitted transform, e.g. ``transform/components``
(K, dim) float32 and ``transform/mean`` (dim,) float32 of a PCA, so it can be applied again."""
STANDARDIZE_KEY, STANDARDIZE_SHARED = "standardize", "shared"
"""A feature's provenance may hold ``"standardize": "shared"``: training then scales all its dims
by one standard deviation (per-dim means still subtracted) instead of one per dim. For features
whose dims' relative variances carry meaning, such as principal components."""

KIND_ATTR = "kind"
"""Root attribute of a feature file (written since vafusion recorded it): what its rows come from."""

KINDS = {"frame": "face crops", "track": "the audio track"}
"""``kind`` -> what it means: a frame extractor's rows (mask = face present) or a track
extractor's (mask = audio present). Stage 2 asks it to tell audio streams (``--audio-where-speech``)."""

# Integrity attributes (written since checksums were added; files without them still read):
CHECKSUM_ATTR = "checksum"
"""Per dataset (features, mask, corpus labels): ``crc32:<8 hex>`` of id, name, dtype, shape and data."""
FILE_ID_ATTR = "file_id"
"""Root of a feature file: a random id given when the file is written, so a merge can tell it apart."""
SHARDS_ATTR = "shards"
"""Root of a merged (linked) feature file: JSON list of the shard files it links to, with their ids."""
SPLIT_ATTR = "split"
"""Root of a shard file: the rule that chose its ids (:mod:`vafusion.cache.split`)."""
SPLIT_RULE = "frames"
"""The rule of this version: parts of equal frames, a group's ids together."""
LEGACY_SPLIT = "every-nth"
"""What a shard file without :data:`SPLIT_ATTR` was split by: every N-th sorted id (vafusion 0.1.0)."""

# corpus.h5 layout (written and read in corpus_index.py): parallel 1-D datasets ids, fps,
# n_frames, partition, group (one row per id), labels/<id> (T, 2) float32 and, for
# variable-frame-rate videos only, frame_times/<id> (T,) float64 seconds from frame 1.
LABELS_GROUP = "labels"
FRAME_TIMES_GROUP = "frame_times"

SHARD_FILE = re.compile(r"^(?P<feature>.+)\.shard-(?P<k>\d+)-of-(?P<n>\d+)\.h5$")
"""The name :func:`feature_file_name` gives shard K of N > 1 (groups: feature, k, n)."""


FEATURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
"""What a feature name may look like: it becomes a file name (``<name>.h5``) in the cache, nowhere else."""

RESERVED_NAMES = frozenset({"corpus"})  # corpus.h5 is the index


def require_feature_name(name: str, label: str) -> None:
    """Refuse a feature name that is no plain file name in the cache (``../x``, ``a/b``, ``corpus``).

    ``label`` is how the user gave it (``--name``, ``FEATURE_NAME``); every writer checks, so no
    name can put a file outside the cache.
    """
    if not isinstance(name, str) or not FEATURE_NAME.match(name) or name in RESERVED_NAMES:
        raise VafusionError(
            f"{label} {name!r}: not a feature name; use letters, digits, _ . + - (it names the file "
            f"<name>.h5 in the cache; {', '.join(sorted(RESERVED_NAMES))} is taken)"
        )


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``: two caches agree iff fingerprints do."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


def feature_file_name(feature: str, shard: tuple[int, int] = (1, 1)) -> str:
    """``resnet50.h5`` for a whole cache, ``resnet50.shard-2-of-4.h5`` for one shard."""
    k, n = shard
    return f"{feature}.h5" if n == 1 else f"{feature}.shard-{k}-of-{n}.h5"


def feature_path(cache_dir: str | Path, feature: str, shard: tuple[int, int] = (1, 1)) -> Path:
    return Path(cache_dir) / feature_file_name(feature, shard)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``K/N`` (1-based K) as given to ``--shard``; raise ValueError with the rule."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError as e:
        raise ValueError(f"shard must look like K/N (e.g. 2/8), got {text!r}") from e
    if not 1 <= k <= n:
        raise ValueError(f"shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n
