"""Stage 2: fusion models trained from a feature cache alone (no corpus, GPU, torchvision or PyAV).

The package is laid out in rooms that follow the data flow, each importing only the rooms
before it (tests/test_layering.py holds the order; no room imports a later one):

    metrics.py    the challenge's CCC (a leaf: imports no room)
    signal.py     centred moving mean and median, delay: what the ridge and post-processing share (a leaf)
    data/         a cache loaded (in RAM or streamed), standardised, cut into windows and batches; folds
    models/       the model registry and one module per model
    runs/         one training into a run directory: config, checkpoints, resume rules, the layout of
                  runs on disk, a model applied to a loaded cache, a run scored on its split
    post/         post-processing of per-frame predictions, fitted out of fold
    predict/      runs -> predictions of chosen ids, the per-video files, the ABAW submission file
    reports/      HTML pages: a run's report, the cross-validation and comparison pages
    experiments/  many trainings: jobs, worker processes, cross-validation, comparisons

Why this order: a run is trained before it is post-processed, predicted or reported on, and
an experiment is made of all of those; so each room can be read (and tested) knowing only the
rooms before it. ``vafusion.fusion.<old module>`` paths of earlier versions keep working
through 0.2 (:mod:`._moved`).
"""
