"""Which shard files a merged feature file reads, and proof that they are the ones merged.

Why: ``cache merge`` links ``<feature>.h5`` to ``<feature>.shard-K-of-N.h5`` by name. Left to
HDF5, a link also resolves in the current directory and under ``HDF5_EXT_PREFIX``, so a missing
shard could be replaced by a stranger's file of the same name and read as if it were the
shard. Instead, the merge records each shard's identity (its ``file_id``, written once when the
shard was finalized, and its extractor fingerprint) in the merged file's ``shards`` attribute,
and the reader (:mod:`vafusion.cache.reader`) opens each recorded shard itself, from the merged
file's folder only, and refuses any file whose identity differs. This module holds the records
only; opening files is the reader's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vafusion.cache import schema


@dataclass(frozen=True)
class ShardRecord:
    """What a merged file remembers of one shard it links to."""

    file: str  # plain file name, in the merged file's folder
    file_id: str
    fingerprint: str  # extractor fingerprint
    shard: str  # "K/N"


def identity(attrs: Mapping[str, Any], ids: list[str]) -> str:
    """A feature file's ``file_id``; for files written before it existed, a hash of when and what.

    The fallback (creation time, extractor fingerprint, ids) still tells apart two runs of the
    same extraction unless they finished within the same second.
    """
    file_id = attrs.get(schema.FILE_ID_ATTR)
    if file_id is not None:
        return str(file_id)
    return "legacy-" + schema.fingerprint([str(attrs.get("created", "")), str(attrs.get("fingerprint", "")), ids])[:32]


def records_json(records: list[ShardRecord]) -> str:
    return schema.canonical_json([asdict(r) for r in records])


def read_records(attrs: Mapping[str, Any]) -> list[ShardRecord] | None:
    """The shard records of a merged file, or None (a whole file, or merged before records existed)."""
    raw = attrs.get(schema.SHARDS_ATTR)
    if raw is None:
        return None
    return [ShardRecord(**r) for r in json.loads(raw)]
