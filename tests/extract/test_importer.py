"""``vafusion cache import``: features made elsewhere, on the grid or timestamped, checked, resumable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.inspect import verify_cache
from vafusion.cache.reader import open_feature_file
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.extract.importer import import_features


@pytest.fixture
def cache(tiny_extracted, copy_cache) -> Path:
    return copy_cache(tiny_extracted[1])


def _write_grid(folder: Path, cache: Path, extra_rows: int = 0) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for e in read_corpus_index(cache):
        arrays[e.id] = rng.normal(size=(e.n_frames + extra_rows, 3)).astype(np.float32)
        np.save(folder / f"{e.id}.npy", arrays[e.id])
    return arrays


def test_on_grid_npy_with_nan_rows_and_a_short_file(cache, tmp_path):
    arrays = _write_grid(tmp_path / "feats", cache)
    first, second = sorted(arrays)[:2]
    arrays[first][5] = np.nan
    np.save(tmp_path / "feats" / f"{first}.npy", arrays[first])
    np.save(tmp_path / "feats" / f"{second}.npy", arrays[second][:-2])  # 2 rows short: within the tolerance
    report = import_features(cache, "external", tmp_path / "feats", progress=False)
    assert report.imported == len(arrays) and report.skipped == 0
    assert verify_cache(cache) == []
    listing = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted((tmp_path / "feats").iterdir(), key=lambda p: p.name)
    )
    with open_feature_file(cache, "external") as ff:
        assert ff.dim == 3 and ff.extractor["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
        assert ff.extractor["files"] == len(arrays) and ff.extractor["alignment"] == "rows on the frame grid"
        for vid, expected in arrays.items():
            feats, mask = ff.read(vid)
            ok = ~np.isnan(expected).any(axis=1)
            if vid == second:
                ok[-2:] = False
            np.testing.assert_array_equal(mask, ok)
            np.testing.assert_allclose(feats[mask], expected[mask], atol=2e-3)
            assert not feats[~mask].any()
    again = import_features(cache, "external", tmp_path / "feats", progress=False)  # resumable: nothing to do
    assert again.imported == 0 and again.skipped == len(arrays)


def test_timestamped_csv_goes_through_the_aligner(cache, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    index = read_corpus_index(cache)
    e = index[index.ids[0]]
    times = 0.203 + 0.01 * np.arange(int((e.n_frames / e.fps - 0.5) * 100))  # 100 Hz from 0.203 s (no ties)
    values = np.stack([times, 3 * times], axis=1)
    values[40] = np.nan
    with open(folder / f"{e.id}.csv", "w") as f:
        f.write("time,x,y\n")
        for t, (x, y) in zip(times, values):
            f.write(f"{float(t)!r},{float(x)!r},{float(y)!r}\n")
    report = import_features(cache, "timed", folder, timestamps=True, progress=False)
    assert report.imported == 1 and "have no file" in report.warnings[0]
    with open_feature_file(cache, "timed") as ff:
        feats, mask = ff.read(e.id)
    k = np.arange(e.n_frames)
    t = k / e.fps
    inside = (t >= times[0] - 0.005) & (t <= times[-1] + 0.005)
    nan_frame = int(np.argmin(np.abs(t - times[40])))  # the frame whose span holds the NaN row
    np.testing.assert_array_equal(mask, inside & (k != nan_frame))
    # a ramp averaged over a frame's span [t - 0.5/fps, t + 0.5/fps) is the ramp at the span's centre of mass
    for j in np.flatnonzero(mask)[2:-2]:
        held = times[(times >= t[j] - 0.5 / e.fps) & (times < t[j] + 0.5 / e.fps)]
        np.testing.assert_allclose(feats[j].astype(np.float64), [held.mean(), 3 * held.mean()], rtol=2e-3)


@pytest.mark.parametrize(
    "case,match",
    [
        ("unknown_id", r"nobody\.npy: nobody is not a video id"),
        ("too_long", r"\.npy: \d+ rows, but .* has \d+ frames \(tolerance 5\)"),
        ("text", r"\.csv:3: non-numeric value 'abc'"),
        ("widths", r"\.npy: 4 value columns, the other files have 3"),
        ("object", r"\.npy: not a numpy array file"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(cache, tmp_path, case, match):
    arrays = _write_grid(tmp_path / "feats", cache)
    vid = sorted(arrays)[-1]
    target = tmp_path / "feats" / f"{vid}.npy"
    if case == "unknown_id":
        np.save(tmp_path / "feats" / "nobody.npy", np.zeros((3, 3)))
    elif case == "too_long":
        np.save(target, np.zeros((len(arrays[vid]) + 6, 3)))
    elif case == "text":
        target.unlink()
        (tmp_path / "feats" / f"{vid}.csv").write_text("a,b,c\n1,2,3\n4,abc,6\n")
    elif case == "widths":
        np.save(target, np.zeros((len(arrays[vid]), 4)))
    else:
        np.save(target, np.array([{"a": 1}] * 3), allow_pickle=True)
    with pytest.raises(VafusionError, match=match) as err:
        import_features(cache, "external", tmp_path / "feats", progress=False)
    assert "\n" not in str(err.value)
    assert not (cache / "external.h5").exists() and not (cache / ".parts" / "external").exists()


def test_cli_cache_import(cache, tmp_path):
    _write_grid(tmp_path / "feats", cache)
    runner = CliRunner()
    r = runner.invoke(cli, ["cache", "import", str(cache), "external", str(tmp_path / "feats")])
    assert r.exit_code == 0, r.output
    assert "external: 7 imported, 0 already there" in r.output
    r = runner.invoke(cli, ["cache", "verify", str(cache)])
    assert r.exit_code == 0 and "ok" in r.output
    np.save(tmp_path / "feats" / f"{sorted(read_corpus_index(cache).ids)[0]}.npy", np.ones((2, 3)))
    r = runner.invoke(cli, ["cache", "import", str(cache), "other", str(tmp_path / "feats")])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "Traceback" not in r.output
