"""Room ``experiments``: many trainings run as one command, and their results gathered.

:mod:`.jobs` (a list of trainings, run resumably, their rows collected), :mod:`.parallel`
(worker processes for ``--jobs N``), :mod:`.cv` (``vafusion cv``: folds x seeds, out-of-fold
predictions, ``post.json``) and :mod:`.compare` (``vafusion compare``: models x feature sets x
seeds). Why last: an experiment uses every other room. Imports: any room before it.
"""
