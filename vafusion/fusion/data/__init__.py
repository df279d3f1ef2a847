"""Room ``data``: a feature cache made ready for a model, and which ids train and validate.

Modules, in the order the rows flow: :mod:`.sources` (where a feature's rows live: in RAM or
in the cache files), :mod:`.loading` (a cache read once and checked), :mod:`.standardize`
(statistics of the training ids), :mod:`.windows` (windows by index arithmetic, and window
predictions back to frames), :mod:`.batches` (standardised float32 batches), :mod:`.scores`
(CCC over a partition, the challenge's way) and :mod:`.folds` (the official split or K folds
by group). Why one room: these are the only modules that read a cache; everything after them
sees windows and batches. Imports: the cache package and :mod:`vafusion.fusion.metrics`, no other room.
"""

from vafusion.fusion._moved import names_moved

# the names of the module vafusion.fusion.data of earlier versions (through 0.2; removed in 0.3)
__getattr__ = names_moved(
    __name__,
    {
        "LoadedCache": "vafusion.fusion.data.loading",
        "load_cache": "vafusion.fusion.data.loading",
        "Standardizer": "vafusion.fusion.data.standardize",
        "make_windows": "vafusion.fusion.data.windows",
        "windows_with_labels": "vafusion.fusion.data.windows",
        "frame_indices": "vafusion.fusion.data.windows",
        "overlap_average": "vafusion.fusion.data.windows",
        "Batch": "vafusion.fusion.data.batches",
        "BufferPool": "vafusion.fusion.data.batches",
        "build_batch": "vafusion.fusion.data.batches",
        "iterate_batches": "vafusion.fusion.data.batches",
        "partition_score": "vafusion.fusion.data.scores",
    },
)
