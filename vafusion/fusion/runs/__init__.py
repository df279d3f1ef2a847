"""Room ``runs``: one training into a run directory, and everything a run directory holds.

:mod:`.config` (every choice of a run, ``config.json``), :mod:`.train` (the trainer),
:mod:`.checkpoint` (``best.pt``/``last.pt``, metrics, loading a run back), :mod:`.run_dir` (what
training into a directory again does: the resume rules), :mod:`.layout` (where the runs of a
cross-validation are and where its ``post.json`` lies), :mod:`.infer` (a model applied to a
loaded cache: what validation and prediction share) and :mod:`.evaluate` (a run scored on its
own split). Why one room: these are what a single run needs, to be trained, resumed and
read back. Imports: rooms ``data`` and ``models``. Training writes no report (that is the
``reports`` room's, called by whoever trains).
"""
