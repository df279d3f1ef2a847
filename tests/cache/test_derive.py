"""``cache derive --pca``: fitted on training ids only, a float16 feature file with masks kept and the
transform saved."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache import checksum, schema
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.derive import derive_pca
from vafusion.cache.inspect import verify_cache
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.cache.writer import FeatureWriter
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer


@pytest.fixture
def cache(toy_cache, copy_cache) -> Path:
    return copy_cache(toy_cache)


def _reads_during_fit(monkeypatch) -> list[str]:
    """Ids read from any feature file before the derived file's writer exists (the fit), in order."""
    fit_reads: list[str] = []
    state = {"writing": False}
    real_read, real_init = FeatureFile.read, FeatureWriter.__init__

    def read(self, video_id):
        if not state["writing"]:
            fit_reads.append(video_id)
        return real_read(self, video_id)

    def init(self, *args, **kwargs):
        state["writing"] = True
        return real_init(self, *args, **kwargs)

    monkeypatch.setattr(FeatureFile, "read", read)
    monkeypatch.setattr(FeatureWriter, "__init__", init)
    return fit_reads


def test_pca_is_fitted_on_training_ids_only_and_projects_every_id(cache, monkeypatch):
    index = read_corpus_index(cache)
    train_ids = sorted(e.id for e in index.by_partition("train"))
    others = {e.id for e in index if e.partition != "train"}
    assert others & {e.id for e in index.by_partition("test")} and others & {
        e.id for e in index.by_partition("validation")
    }
    fit_reads = _reads_during_fit(monkeypatch)
    result = derive_pca(cache, "visual", 4, progress=False)
    assert fit_reads == train_ids and not others & set(fit_reads)  # test and validation ids never feed the fit
    assert result.path == cache / "visual-pca4.h5" and result.written == len(index.ids) and result.k == 4

    # the reference PCA: numpy on the present rows of the training ids
    with open_feature_file(cache, "visual") as parent, open_feature_file(cache, "visual-pca4") as derived:
        rows = np.concatenate([x[m] for x, m in (parent.read(v) for v in train_ids)]).astype(np.float64)
        variance, vectors = np.linalg.eigh(np.cov(rows, rowvar=False))
        reference = vectors[:, np.argsort(variance)[::-1][:4]].T
        assert derived.dim == 4 and derived.extractor["derived_from"] == {
            "feature": "visual",
            "fingerprint": parent.fingerprint,
            "dim": 24,
        }
        assert derived.extractor["k"] == 4 and derived.extractor["fit"]["ids"] == len(train_ids)
        assert derived.extractor["fit"]["frames"] == len(rows)
        with h5py.File(derived.path, "r") as f:
            components = f["transform/components"][()]
            mean = f["transform/mean"][()]
            for name in ("components", "mean", "explained_variance"):
                data = f[f"transform/{name}"]
                assert data.attrs[schema.CHECKSUM_ATTR] == checksum.checksum("", f"transform/{name}", data[()])
        np.testing.assert_allclose(np.abs(components @ reference.T), np.eye(4), atol=1e-4)  # same axes, up to sign
        np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-5, atol=1e-5)
        for vid in index.ids:  # every id, test ones included, projected with the saved transform
            x, m = parent.read(vid)
            y, ym = derived.read(vid)
            assert y.dtype == np.float16 and y.shape == (len(x), 4)
            np.testing.assert_array_equal(ym, m)
            expected = np.where(m[:, None], (x.astype(np.float32) - mean) @ components.T, 0)
            np.testing.assert_allclose(y, expected, rtol=2e-3, atol=2e-3)
    assert not verify_cache(cache)  # a whole, checksummed feature file
    loaded = load_cache(cache, ["visual-pca4", "audio"], progress=False)  # trains like any feature
    assert loaded.dims == (4, 12)
    # ...but standardised with one scale, so the components keep their relative variances
    # (unit variance per component would blow the near-empty last ones up to the first's size)
    st = Standardizer.fit(loaded, train_ids)
    pcs = loaded.sources[0]
    spans = [loaded.rows(v) for v in train_ids]
    present = np.concatenate([pcs.rows(r.start, r.stop)[loaded.masks[0][r]] for r in spans])
    shared = np.sqrt(present.astype(np.float64).var(axis=0).mean())
    np.testing.assert_allclose(st.std[0], np.full(4, shared), rtol=1e-3)
    assert np.ptp(st.std[1]) > 0  # an ordinary feature keeps one scale per dim


def test_bad_requests_are_one_line_errors(cache):
    with pytest.raises(VafusionError, match=r"--pca 25: must be between 1 and 24, the dim of visual"):
        derive_pca(cache, "visual", 25, progress=False)
    with pytest.raises(VafusionError, match="'resnet50' is not in this cache"):
        derive_pca(cache, "resnet50", 4, progress=False)
    with pytest.raises(VafusionError, match="other than its source"):
        derive_pca(cache, "visual", 4, name="visual", progress=False)


def test_cli_derives_once_and_a_rerun_is_up_to_date(cache, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["cache", "derive", str(cache), "--from", "audio", "--pca", "3", "--name", "aud3", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "aud3.h5" in result.output and "3 of audio's 12 dims keep" in result.output
    written = (cache / "aud3.h5").stat().st_mtime_ns
    again = runner.invoke(cli, ["cache", "derive", str(cache), "--from", "audio", "--pca", "3", "--name", "aud3"])
    assert again.exit_code == 0 and (cache / "aud3.h5").stat().st_mtime_ns == written
    with open_feature_file(cache, "aud3") as ff:
        assert json.loads(json.dumps(ff.extractor))["model"] == "pca"
    n_train = len(read_corpus_index(cache).by_partition("train"))
    info = runner.invoke(cli, ["cache", "info", str(cache)])
    assert info.exit_code == 0 and "aud3.h5: dim 3 float16" in info.output
    with open_feature_file(cache, "audio") as parent:
        assert f"of audio (fingerprint {parent.fingerprint[:16]}), 3 components, " in info.output
    assert f"% of the variance, fitted on {n_train} train ids" in info.output
    # train takes the derived feature by its name, beside another
    run = cache.parent / "run-aud3"
    trained = runner.invoke(
        cli,
        [
            "train",
            str(cache),
            "--run",
            str(run),
            "--features",
            "visual,aud3",
            "--model",
            "ridge",
            "--no-report",
            "--threads",
            "1",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads((run / "config.json").read_text())["data"]["features"] == ["visual", "aud3"]
