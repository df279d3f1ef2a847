"""Stage 1: corpus in, feature cache out. The modules follow the data flow:

* ``corpus`` (discovery: which ids, with which files), ``layout`` (finding and listing the
  folders), ``annotations`` (reading label files and test lists), all by the naming rules of
  :mod:`vafusion.affwild2`; ``media`` (container facts), ``audio`` (decoding);
* ``contract`` (what an extractor is, and the checks applied to every one), ``registry``
  (the only place that knows names: built-ins, ``module:attr``, entry points), ``options``;
* one module per built-in family: ``torchvision_backbones``, ``vggish``, ``logmel``, ``speech``;
* ``align`` (the one aligner of every track feature onto the frame grid);
* ``frame_pass`` and ``track_pass`` (decode, batch, run, check, assemble), ``assembly``,
  ``batching``; ``run`` (the orchestrator); ``importer`` (``vafusion cache import``);
* ``weights`` (reading third-party checkpoints safely).
"""
