"""Room ``post``: post-processing of per-frame predictions, and choosing it out of fold.

:mod:`.steps` (what a step is; the built-ins smooth and shift), :mod:`.registry` (steps by
name, plug-ins through :mod:`vafusion.plugins`), :mod:`.apply` (a dimension's sequence of steps,
``post.json``), :mod:`.oof` (each cross-validation run's predictions of its own validation ids,
kept) and :mod:`.fit` (a setting of each step chosen per dimension on those out-of-fold
predictions, with its honest nested gain). Why one room: what is chosen in :mod:`.fit` is exactly
what :mod:`.apply` applies at prediction time. Imports: rooms ``data``, ``models`` and ``runs``.
"""
