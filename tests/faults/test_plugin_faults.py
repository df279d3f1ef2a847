"""Stage-1 faults of issue 20: extractor plug-ins that misbehave, CSV imports that would shift by a frame,
feature names that would leave the cache.

Through the command line, as a user meets them: a plug-in that changes its input, ends the process,
declares an absurd number or returns a tensor without values fails its own feature with one line naming
it (the others written, and equal to a run without it); a CSV file is read row k = frame k or refused
naming its line; a name never puts a file outside the cache.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.faults.conftest import invoke, one_line_error, run_in_child
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.synth import make_alignment_corpus

M = "tests.faults.misbehaving"
CPU = ["--workers", "0", "--device", "cpu"]
VFR = np.concatenate([np.arange(20) / 15, 20 / 15 + np.arange(20) / 30])  # 15 fps, then 30 fps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One variable-frame-rate video of 40 frames with beeps and face crops: its frame times are the entry's own."""
    root = tmp_path_factory.mktemp("plugin-faults") / "corpus"
    make_alignment_corpus(root, fps=30, n_frames=40, beep_frames=[10, 30], marker_frames=[5], frame_times=VFR)
    return root


def _rows(cache: Path, feature: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(cache / f"{feature}.h5") as f:
        return f["videos/align/features"][()], f["videos/align/mask"][()]


def _failed(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("failed: ")]


def test_an_extractor_that_changes_its_input_changes_nothing_for_the_others(corpus, tmp_path):
    """ZeroesWave zeroed the wave every later track extractor got (exit 0, all-zero rows); ZeroesTimes the
    video's own frame times; ZeroesCrops its crops. Each now changes only its own copy."""
    alone = invoke("extract", corpus, "--cache", tmp_path / "alone", "--features", f"{M}:Track,{M}:Crops,logmel", *CPU)
    assert alone.exit_code == 0, alone.output
    changers = f"{M}:ZeroesWave,{M}:ZeroesTimes,{M}:ZeroesCrops,{M}:Tiny"
    together = f"{changers},{M}:Track,{M}:Crops,logmel"
    both = invoke("extract", corpus, "--cache", tmp_path / "both", "--features", together, *CPU)
    assert both.exit_code == 0, both.output
    for feature in ("track", "crops", "logmel"):
        (a, a_mask), (b, b_mask) = _rows(tmp_path / "alone", feature), _rows(tmp_path / "both", feature)
        np.testing.assert_array_equal(a_mask, b_mask)
        np.testing.assert_array_equal(a, b)
    track, _ = _rows(tmp_path / "both", "track")
    assert (track[:, 0] > 0).all()  # the loudness of the beeps, not of a zeroed wave
    np.testing.assert_allclose(track[:, 1].astype(np.float64), VFR, atol=2e-3)
    np.testing.assert_allclose(read_corpus_index(tmp_path / "both")["align"].frame_times, VFR, atol=1e-9)
    # the float16 underflow of Tiny (1e-12 everywhere) is named: zeros with the mask saying present
    (warning,) = [line for line in both.output.splitlines() if line.startswith("warning: tiny:")]
    assert "40 of 40 present rows are stored as zeros" in warning and "scale the extractor's output" in warning


BROKEN = {  # --features entry -> what its one failure line says
    f"{M}:ExitsWhenCalled": "(exits_called) called sys.exit(3) (a plug-in must raise an exception",
    f"{M}:ExitsFrame": "(exits_frame) called sys.exit(0)",
    f"{M}:ExitsInInit": "building it called sys.exit('cannot start')",
    f"{M}:exits_factory": "building it called sys.exit(2)",
    "tests.faults.exits_on_import:Anything": "importing 'tests.faults.exits_on_import' called sys.exit(4)",
    f"{M}:MetaOutput": "returned a tensor on the meta device for a track of 40 frames",
    f"{M}:SparseOutput": "returned a tensor with layout torch.sparse_coo for a batch of",
    f"{M}:RaisingProvenance": "raised KeyError: 'weights'",
    f"{M}:RaisingTo": "raised RuntimeError: no such device here",
    f"{M}:ChangingProvenance": "provenance() changes between calls ('made'); return the same dict every time",
}


def test_a_plugin_that_exits_or_returns_no_values_fails_alone(corpus, tmp_path):
    """sys.exit() in a plug-in ended extract with its code (0 or 3) and no message; a meta or sparse output,
    a raising provenance() or to() were tracebacks that lost the other features."""
    cache = tmp_path / "cache"
    result = invoke("extract", corpus, "--cache", cache, "--features", ",".join(["logmel", *BROKEN]), *CPU)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    failed = _failed(result.output)
    assert len(failed) == len(BROKEN), result.output
    for entry, said in BROKEN.items():
        (line,) = [line for line in failed if entry in line]
        assert said in line, (said, line)
    assert "logmel: 1 extracted" in result.output
    assert sorted(p.name for p in cache.glob("*.h5")) == ["corpus.h5", "logmel.h5"]
    assert not list(cache.glob(".parts/*/*.h5"))  # the broken ones wrote nothing


def test_an_absurd_declared_number_is_refused_before_anything_is_sized_by_it(corpus, tmp_path):
    """sample_rate = 10**9 had the whole track resampled to it (killed by the kernel); image_size = 100000 and
    dim = 10**9 size crops and rows alike. Run under a 2 GiB cap, so a regression fails here, not the machine."""
    entries = {f"{M}:HugeRate": "sample_rate 1e+09", f"{M}:HugeImage": "image_size 100000", f"{M}:HugeDim": "dim 1e+09"}
    args = ["extract", corpus, "--cache", tmp_path / "cache", "--features", ",".join(["logmel", *entries]), *CPU]
    run = run_in_child(args, tmp_path / "log", memory_cap=2 << 30)
    assert run.exit_code == 1 and "Traceback" not in run.output, run.output
    failed = _failed(run.output)
    assert len(failed) == len(entries), run.output
    for entry, said in entries.items():
        (line,) = [line for line in failed if entry in line]
        assert f"{said} is not in the range" in line and "declare a value in that range" in line, line
    assert "logmel: 1 extracted" in run.output


# ---- cache import: row k is frame k, or the file is refused naming its line ----------------------------


@pytest.fixture
def importable(toy_cache, copy_cache, tmp_path) -> tuple[Path, str, np.ndarray]:
    """A private cache, one of its ids, and values for it (T x 3) imported cleanly as feature ``ref``."""
    cache = copy_cache(toy_cache)
    entry = read_corpus_index(cache).entries[0]
    values = np.round(np.random.default_rng(0).normal(size=(entry.n_frames, 3)), 3)
    (tmp_path / "ref").mkdir()
    np.save(tmp_path / "ref" / f"{entry.id}.npy", values)
    result = invoke("cache", "import", cache, "ref", tmp_path / "ref")
    assert result.exit_code == 0, result.output
    return cache, entry.id, values


def _csv(folder: Path, vid: str, text: str) -> Path:
    folder.mkdir()
    path = folder / f"{vid}.csv"
    path.write_bytes(text.encode())
    return path


def _lines(values: np.ndarray, index: bool = False) -> list[str]:
    return [(f"{k}," if index else "") + ",".join(repr(float(x)) for x in row) for k, row in enumerate(values)]


def _same_as_ref(cache: Path, feature: str) -> None:
    with h5py.File(cache / "ref.h5") as ref, h5py.File(cache / f"{feature}.h5") as got:
        for vid in ref["videos"]:
            for name in ("features", "mask"):
                np.testing.assert_array_equal(got[f"videos/{vid}/{name}"][()], ref[f"videos/{vid}/{name}"][()])


@pytest.mark.parametrize(
    "case",
    ["pandas_header", "pandas_index", "bom_without_header", "bom_with_header", "trailing_blank_lines"],
)
def test_csv_files_are_read_row_for_frame(importable, tmp_path, case):
    """Each of these was read one frame off (a numeric header as frame 1, a BOM line dropped as a "header")
    or imported pandas' index as a feature column; now each equals the clean .npy import."""
    cache, vid, values = importable
    rows = _lines(values)
    text = {
        "pandas_header": "0,1,2\n" + "\n".join(rows) + "\n",  # DataFrame(x).to_csv(index=False)
        "pandas_index": ",0,1,2\n" + "\n".join(_lines(values, index=True)) + "\n",  # ... index=True
        "bom_without_header": "\ufeff" + "\n".join(rows) + "\n",
        "bom_with_header": "\ufeffa,b,c\r\n" + "\r\n".join(rows) + "\r\n",
        "trailing_blank_lines": "\n".join(rows) + "\n\n\n",
    }[case]
    path = _csv(tmp_path / case, vid, text)
    result = invoke("cache", "import", cache, case, path.parent)
    if case == "pandas_header":  # 0,1,2 is a header or a first row: never guessed
        line = one_line_error(result, f"{path}:1:", "0,1,2", "--header yes", "--header no")
        assert "pandas" in line and not (cache / f"{case}.h5").exists()
        result = invoke("cache", "import", cache, case, path.parent, "--header", "yes")
    assert result.exit_code == 0, result.output
    _same_as_ref(cache, case)


@pytest.mark.parametrize(
    "case, line_no, said",
    [
        ("blank_line", 5, "blank line"),
        ("ragged", 7, "2 values where the lines above have 3"),
        ("ragged_after_header", 3, "4 values where the header has 3"),
        ("unnamed_column", 1, "the first column has no name but is not pandas' row index"),
        ("arabic_digits", 2, "non-numeric value '\u0661.\u0665'"),
        ("underscores", 4, "non-numeric value '0.0_1'"),
    ],
)
def test_a_csv_line_that_would_shift_or_lie_is_refused_naming_it(importable, tmp_path, case, line_no, said):
    cache, vid, values = importable
    rows = _lines(values)
    if case == "blank_line":
        rows.insert(4, "")
    elif case == "ragged":
        rows[6] = "1.0,2.0"
    elif case == "ragged_after_header":
        rows = ["a,b,c", *rows]
        rows[2] = "1,2,3,4"
    elif case == "unnamed_column":
        rows = [",a,b", *[f"{k * 2},{r.split(',', 1)[1]}" for k, r in enumerate(rows)]]
    elif case == "arabic_digits":
        rows[1] = "\u0661.\u0665,1,2"
    else:
        rows[3] = "0.0_1,1,2"
    path = _csv(tmp_path / case, vid, "\n".join(rows) + "\n")
    before = sorted(p.name for p in cache.iterdir())
    one_line_error(invoke("cache", "import", cache, case, path.parent), f"{path}:{line_no}:", said)
    assert sorted(p.name for p in cache.iterdir()) == before  # refused before anything was written


def test_one_timestamped_row_is_refused_and_a_partial_import_is_not_sent_to_extract(importable, tmp_path):
    cache, vid, _ = importable
    path = _csv(tmp_path / "one", vid, "0.5,1.0,2.0\n")
    one_line_error(invoke("cache", "import", cache, "one", path.parent, "--timestamps"), str(path), "one timestamped")
    assert not (cache / "one.h5").exists()
    # ``ref`` holds one id of the cache: train names the import as the way to complete it, not extract
    result = invoke("train", cache, "--run", tmp_path / "run", "--model", "ridge", "--features", "visual,ref")
    line = one_line_error(result, "ref.h5", "lacks")
    assert "vafusion cache import" in line and "vafusion extract" not in line


# ---- cache derive --name ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside", "sub/dir", "corpus", "ABSOLUTE"])
def test_a_derived_feature_name_never_leaves_the_cache(toy_cache, copy_cache, tmp_path, name):
    """--name ../outside wrote outside the cache and said it succeeded; sub/dir was a traceback."""
    cache = copy_cache(toy_cache)
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    around = sorted(p.name for p in tmp_path.iterdir())
    inside = sorted(p.name for p in cache.iterdir())
    one_line_error(invoke("cache", "derive", cache, "--from", "visual", "--pca", "4", "--name", name), "--name", name)
    assert sorted(p.name for p in tmp_path.iterdir()) == around and sorted(p.name for p in cache.iterdir()) == inside


def test_a_plugin_that_exits_under_torchrun_is_reported_with_its_rank(corpus, tmp_path, monkeypatch):
    """A rank whose plug-in called sys.exit() died and left rank 0 a gloo "connection closed" traceback; now
    the plug-in fails on its rank, and rank 0 reports it with the rank (a one-rank group, in this process)."""
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "EXIT_ON_RANK": "0"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    try:
        result = invoke("extract", corpus, "--cache", tmp_path / "cache", "--features", f"logmel,{M}:ExitsOnRank", *CPU)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if "failed:" in line]
    assert line.strip().startswith("rank 0 failed: [exits_on_rank]: extractor tests.faults.misbehaving:ExitsOnRank")
    assert "called sys.exit(1)" in line and "rank 0: logmel: 1 extracted" in result.output


def test_a_face_detector_that_exits_fails_its_video_not_the_run(tmp_path):
    """vafusion faces ended with the detector's exit code 2 and no message."""
    from tests.conftest import astronaut_face
    from vafusion.synth.face_video import face_clip

    clip = face_clip(tmp_path / "clip.mp4", astronaut_face(), n_frames=3, size=(96, 96), width=60)
    result = invoke("faces", clip.path, "--out", tmp_path / "corpus", "--detector", f"{M}:ExitingDetector", *CPU[2:])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = _failed(result.output)
    assert f"detector {M}:ExitingDetector called sys.exit(2)" in line
