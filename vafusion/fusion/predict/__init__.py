"""Room ``predict``: from trained runs to the answer that is handed in.

:mod:`.ensemble` (runs averaged over the chosen ids, post-processed), :mod:`.files` (one file
per video, written as a whole set) and :mod:`.submission` (the organisers' sample, the single
ABAW submission file, and its check). Why one room: the output formats of the challenge live
together. Imports: rooms ``data``, ``models``, ``runs`` and ``post``.
"""

from vafusion.fusion._moved import names_moved

# the names of the module vafusion.fusion.predict of earlier versions (through 0.2; removed in 0.3)
__getattr__ = names_moved(
    __name__,
    {
        "predict_loaded": "vafusion.fusion.runs.infer",
        "video_streams": "vafusion.fusion.runs.infer",
        "check_features_match": "vafusion.fusion.runs.evaluate",
        "PartitionPredictions": "vafusion.fusion.runs.evaluate",
        "run_cache_dir": "vafusion.fusion.runs.evaluate",
        "predict_partition": "vafusion.fusion.runs.evaluate",
        "evaluate_run": "vafusion.fusion.runs.evaluate",
        "select_ids": "vafusion.fusion.predict.ensemble",
        "ensemble_predict": "vafusion.fusion.predict.ensemble",
        "choose_post": "vafusion.fusion.predict.ensemble",
        "predict_to_dir": "vafusion.fusion.predict.ensemble",
        "predict_submission": "vafusion.fusion.predict.ensemble",
    },
)
