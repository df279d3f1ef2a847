"""vafusion: audio-visual valence/arousal estimation from in-the-wild video.

Stage 1 (:mod:`vafusion.extract`) turns a corpus into a feature cache
(:mod:`vafusion.cache`); stage 2 (:mod:`vafusion.fusion`) trains and applies
fusion models from that cache alone.
"""

__version__ = "0.1.0"
