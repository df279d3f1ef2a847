"""Which shard files a merged feature file reads, and proof that they are the ones merged.

Why: ``cache merge`` links ``<feature>.h5`` to ``<feature>.shard-K-of-N.h5`` by name. Left to
HDF5, a link also resolves in the current directory and under ``HDF5_EXT_PREFIX``, so a missing
shard could be replaced by a stranger's file of the same name and read as if it were the
shard. Instead, the merge records each shard's identity (its ``file_id``, written once when the
shard was finalized, and its extractor fingerprint) in the merged file's ``shards`` attribute,
and the reader opens each recorded shard itself, from the merged file's folder only, and
refuses any file whose identity differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vafusion.cache import schema
from vafusion.errors import VafusionError

if TYPE_CHECKING:
    from vafusion.cache.reader import FeatureFile


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


def record(ff: FeatureFile) -> ShardRecord:
    return ShardRecord(ff.path.name, ff.file_id, ff.fingerprint, ff.shard)


def records_json(records: list[ShardRecord]) -> str:
    return schema.canonical_json([asdict(r) for r in records])


def read_records(attrs: Mapping[str, Any]) -> list[ShardRecord] | None:
    """The shard records of a merged file, or None (a whole file, or merged before records existed)."""
    raw = attrs.get(schema.SHARDS_ATTR)
    if raw is None:
        return None
    return [ShardRecord(**r) for r in json.loads(raw)]


def _plain_name(merged: FeatureFile, name: str) -> Path:
    if not name or name in (".", "..") or Path(name).name != name or Path(name).is_absolute():
        raise VafusionError(
            f"{merged.path}: links to {name!r}, which is not a file beside it; a cache never links "
            f"elsewhere: rerun `vafusion cache merge` on the shards"
        )
    return merged.path.parent / name


def _open_shard(merged: FeatureFile, name: str) -> FeatureFile:
    from vafusion.cache.reader import FeatureFile  # local: the reader imports this module

    path = _plain_name(merged, name)
    if not path.is_file():
        raise VafusionError(
            f"{path}: missing shard of {merged.path.name} (its links point to it); copy that shard "
            f"file back beside {merged.path.name}"
        )
    source = FeatureFile(path, merged_into=merged.path)
    if (
        source.fingerprint != merged.fingerprint
        or source.corpus_fingerprint != merged.corpus_fingerprint
        or source.dim != merged.dim
    ):
        source.close()
        raise VafusionError(
            f"{path}: not a shard of {merged.path.name} (made by another extractor or for another "
            f"corpus index); copy the original shard back, or re-extract it"
        )
    return source


def open_recorded(merged: FeatureFile, rec: ShardRecord) -> FeatureFile:
    """Open the shard ``rec`` names, proving it is the file the merge recorded."""
    source = _open_shard(merged, rec.file)
    found = source.file_id
    if found != rec.file_id:
        source.close()
        raise VafusionError(
            f"{source.path}: not the shard {merged.path.name} was merged from (file id {found[:12]} != "
            f"recorded {rec.file_id[:12]}): another file of that name; copy the original shard back, or "
            f"rerun `vafusion cache merge` to link the shards now present"
        )
    return source


def open_unrecorded(merged: FeatureFile, name: str) -> FeatureFile:
    """A link of a merged file that records no shards: only allowed where the merge kept no records.

    Files merged before records existed still read (from the merged file's folder only, with
    matching extractor and corpus fingerprints); ``cache verify`` notes that they cannot prove
    the shard's identity.
    """
    if merged.shard_records is not None:
        raise VafusionError(
            f"{merged.path}: links to {name}, which the merge did not record; the file was altered: "
            f"rerun `vafusion cache merge`"
        )
    return _open_shard(merged, name)
