"""Raw video in, the Aff-Wild2 layout out: ``vafusion faces`` (detect, track, align, write).

* ``contract`` (what a face detector is, and the checks applied to every one), ``registry`` (the only
  place that knows detector names), ``mtcnn`` (the built-in detector);
* ``tracking`` (detections -> tracks -> persons -> every frame's face), ``align`` (5-point similarity
  onto the 112 x 112 template), ``writer`` (the corpus layout, kill -9 safe), ``options``, ``run``.
"""
