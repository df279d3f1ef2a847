"""Both stages on a generated corpus: the signals sit in pixels and waveform, random backbones
extract them, and the fusion model learns valence from faces and arousal from sound."""

from __future__ import annotations

import pytest

from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.train import train

# 4 s windows every 2 s on every frame: learnable_cache is at 10-12 fps already (the fast recipe's stride 2
# would leave 5-6 frames a second, and windows count strided frames: 8 s windows in 8 s videos, fusion P 0.596)
TRAIN = dict(window=40, hop=20, stride=1, epochs=15, batch_size=8, d_model=64, heads=4, patience=15)

pytestmark = pytest.mark.usefixtures(
    "one_thread"
)  # a small model: one thread is fastest, and no spinning on a busy machine


@pytest.fixture(scope="module")
def cache(learnable_cache):
    return learnable_cache


def test_fusion_learns_and_beats_each_single_stream(cache, tmp_path):
    scores = {}
    for name, features in (
        ("fusion", ("resnet18", "vggish", "logmel")),
        ("visual", ("resnet18",)),
        ("vggish", ("vggish",)),
    ):
        result = train(cache, tmp_path / name, make_config(features=features, **TRAIN), progress=False)
        scores[name] = result.best
    print({k: round(v["p"], 3) for k, v in scores.items()})
    assert scores["fusion"]["p"] >= 0.5  # held-out (validation) ids
    assert scores["fusion"]["p"] > scores["visual"]["p"]
    assert scores["fusion"]["p"] > scores["vggish"]["p"]
    # each stream carries what the generator put into it
    assert scores["visual"]["ccc_v"] > 0.5 and scores["vggish"]["ccc_a"] > 0.5
