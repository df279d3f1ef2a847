"""``vafusion analyze``: one video and a trained run in, valence and arousal per frame out.

It crosses both stages (faces and features from stage 1, prediction from stage 2), which is why it
sits above them: ``extract/`` and ``fusion/`` never import it. ``run`` orchestrates (faces, then
extraction exactly as the run's training cache was made, then the run's prediction), ``outputs``
writes the CSV, the plot and the HTML page.
"""

from vafusion.analyze.run import AnalyzeOptions, AnalyzeResult, analyze

__all__ = ["AnalyzeOptions", "AnalyzeResult", "analyze"]
