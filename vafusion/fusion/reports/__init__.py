"""Room ``reports``: HTML pages that open from disk, and the tables the commands print.

:mod:`.pages` (a page, its figures, tables), :mod:`.run` (a run's ``report.html``),
:mod:`.cv` (``cv.html``) and :mod:`.compare` (``compare.html`` and the printed table). Why one
room: pages only show what the rooms before them computed (and matplotlib is needed nowhere
else). Imports: rooms ``data``, ``models``, ``runs`` and ``post``.
"""
