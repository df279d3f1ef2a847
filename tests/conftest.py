"""Corpora and caches shared by the whole suite, generated once per session.

Why here: generating a corpus and extracting it costs seconds; each module making its own
made the suite slow. Fixtures hand out read-only paths: a test that changes a cache takes a
private copy first (``copy_cache``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.toy_cache import write_big_cache, write_toy_cache
from vafusion.extract.run import ExtractOptions, extract
from vafusion.synth import SynthCorpus, make_corpus

FAST_EXTRACT = dict(
    visual_weights="random", vggish_weights="random", image_size=32, batch_size=48, workers=0, progress=False
)
"""Extraction options for tests: random weights, small crops, no worker processes."""


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored after: tiny models run fastest so, and OpenMP spinning
    on a busy machine can cost 40x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory) -> Path:
    """A small stage-2 cache (features 'visual' (24) and 'audio' (12)) written through the cache API."""
    path = tmp_path_factory.mktemp("toy") / "cache"
    write_toy_cache(path)
    return path


@pytest.fixture(scope="session")
def big_cache(tmp_path_factory) -> tuple[Path, int]:
    """A 500 MiB cache (one 1024-d feature set ``big``, 256k frames in 40 videos) and its feature bytes.

    For memory bounds of streamed training: far larger than what a streamed run may hold.
    Written once per session (~5 s); delete nothing from it.
    """
    path = tmp_path_factory.mktemp("big") / "cache"
    return path, write_big_cache(path)


@pytest.fixture(scope="session")
def tiny_extracted(tmp_path_factory) -> tuple[SynthCorpus, Path, object]:
    """A 6-id generated corpus (2 s each) and its resnet18 + vggish + logmel cache: (corpus, cache, report)."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = make_corpus(root / "corpus", n_videos=6, seconds=2.0, seed=3)
    cache = root / "cache"
    report = extract(root / "corpus", cache, ExtractOptions(features=("resnet18", "vggish", "logmel"), **FAST_EXTRACT))
    return corpus, cache, report


@pytest.fixture(scope="session")
def learnable_cache(tmp_path_factory) -> Path:
    """A 10-id generated corpus (8 s each) extracted at 48 px: big enough for fusion to learn the synthetic task."""
    root = tmp_path_factory.mktemp("e2e")
    make_corpus(root / "corpus", n_videos=10, seconds=8.0, seed=1, n_test=1)
    opts = ExtractOptions(
        features=("resnet18", "vggish", "logmel"),
        visual_weights="random",
        vggish_weights="random",
        image_size=48,
        batch_size=64,
        progress=False,
    )
    report = extract(root / "corpus", root / "cache", opts)
    assert report.ok, (report.problems, report.failures)
    return root / "cache"


@pytest.fixture
def copy_cache(tmp_path) -> Callable[[Path], Path]:
    """``copy_cache(src)`` -> a private copy of a shared cache, for tests that change it."""

    def copy(src: Path, name: str = "cache") -> Path:
        return Path(shutil.copytree(src, tmp_path / name, symlinks=True))

    return copy
