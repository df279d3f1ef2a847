"""Room ``post``: post-processing of per-frame predictions, and choosing it out of fold.

:mod:`.apply` (the steps, ``post.json``), :mod:`.oof` (each cross-validation run's predictions
of its own validation ids, kept) and :mod:`.fit` (the choice per dimension on those out-of-fold
predictions, with its honest nested gain). Why one room: what is chosen in :mod:`.fit` is exactly
what :mod:`.apply` applies at prediction time. Imports: rooms ``data``, ``models`` and ``runs``.
"""
