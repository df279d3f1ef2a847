"""Kills at every write: after ``kill -9`` at any instant, rerunning the same command finishes the job.

Each command runs in a forked child that SIGKILLs itself just before its k-th write lands (the
k-th ``os.replace``: every file written through ``atomic_path`` and every folder renamed into
place; for ``predict`` also the k-th prediction file), for k over every write of a clean run (or
a sample where a run has many). The rerun (``train --resume``; the same command for ``cv``,
``compare``, ``predict``, ``extract``) must exit 0 and leave exactly what a clean run leaves:
nothing finished is lost, nothing half-done is read as whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from tests.conftest import untimed
from tests.faults.conftest import counting_writes, invoke, run_in_child
from vafusion.fusion.predict import files as prediction_files
from vafusion.fusion.predict.files import MANIFEST
from vafusion.fusion.runs.checkpoint import read_metrics

ONE_THREAD = ["--threads", "1"]
"""Every command on one thread: the forked children then never use an OpenMP pool that the fork left
without its threads (a hang), and the clean and resumed runs reduce in the same order (equal floats)."""
TINY_IMF = [
    "--model",
    "imf",
    "--model-option",
    "d_model=8",
    "--model-option",
    "heads=2",
    "--model-option",
    "tcn_dilations=1,2",
    "--model-option",
    "head_hidden=8",
    "--window",
    "48",
    "--hop",
    "32",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    *ONE_THREAD,
]


def _clean_and_killed(
    tmp_path: Path,
    command: list[object],
    out: Path,
    rerun: list[object] | None = None,
    instants: list[int] | None = None,
    also_count=(),
) -> tuple[Path, list[tuple[int, Path]]]:
    """Run ``command`` (which writes ``out``) once cleanly, in-process (which warms this process up for
    the children), then, per instant, into its own copy: killed at that write, then rerun (``rerun``:
    the resuming form). Returns the clean output and each rerun's."""
    with counting_writes(also_count) as writes:
        clean = invoke(*command)
    assert clean.exit_code == 0, clean.output
    clean_out = out.with_name(out.name + "-clean")
    out.rename(clean_out)
    finished = []
    for k in instants or range(1, writes[0] + 1):
        target = out.with_name(f"{out.name}-{k}")
        swap = lambda args: [str(a).replace(str(out), str(target)) for a in args]  # noqa: B023, E731
        killed = run_in_child(swap(command), tmp_path / f"kill-{k}.log", kill_at=k, also_count=also_count)
        assert killed.killed, (k, killed.output)
        again = run_in_child(swap(rerun or command), tmp_path / f"rerun-{k}.log")
        assert again.exit_code == 0, (k, again.output)
        assert "Traceback" not in again.output
        finished.append((k, target))
    return clean_out, finished


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob(".*.tmp-*")]
    assert not left, left


def test_train_killed_at_every_write_resumes_to_the_clean_result(toy_cache, tmp_path):
    run = tmp_path / "run"
    command = [
        "train",
        toy_cache,
        "--run",
        run,
        "--features",
        "visual,audio",
        "--epochs",
        "2",
        "--no-report",
        *TINY_IMF,
    ]
    clean, finished = _clean_and_killed(tmp_path, command, run, rerun=[*command, "--resume"])
    assert len(finished) >= 5  # config, best.pt and last.pt of two epochs, summary
    expected = json.loads((clean / "summary.json").read_text())
    for k, target in finished:
        assert untimed(json.loads((target / "summary.json").read_text())) == untimed(expected), k
        assert untimed(read_metrics(target)) == untimed(read_metrics(clean)), k
        _no_temporaries(target)


def test_cv_killed_midway_finishes_on_rerun(toy_cache, tmp_path):
    runs = tmp_path / "cv"
    command = [
        "cv",
        toy_cache,
        "--runs",
        runs,
        "--folds",
        "2",
        "--model",
        "ridge",
        "--features",
        "visual,audio",
        "--no-report",
        "--device",
        "cpu",
        *ONE_THREAD,
    ]
    # its 12 writes: per fold config, best.pt, summary; per fold val_predictions; post.json, cv.json, figure, page
    clean, finished = _clean_and_killed(tmp_path, command, runs, instants=[2, 5, 8, 9, 12])
    expected = json.loads((clean / "cv.json").read_text())
    for k, target in finished:
        got = json.loads((target / "cv.json").read_text())
        assert untimed(got["folds"]) == untimed(expected["folds"]) and got["post"] == expected["post"], k
        _no_temporaries(target)


def test_compare_killed_midway_finishes_on_rerun(toy_cache, tmp_path):
    runs = tmp_path / "cmp"
    command = [
        "compare",
        toy_cache,
        "--runs",
        runs,
        "--models",
        "ridge",
        "--features",
        "visual;audio",
        "--seeds",
        "2",
        "--device",
        "cpu",
        *ONE_THREAD,
    ]
    # its 15 writes: per run (4) config, best.pt, summary; compare.json, figure, page
    clean, finished = _clean_and_killed(tmp_path, command, runs, instants=[2, 9, 13, 15])
    expected = json.loads((clean / "compare.json").read_text())["summary"]
    for k, target in finished:
        assert untimed(json.loads((target / "compare.json").read_text())["summary"]) == untimed(expected), k


def test_predict_killed_leaves_no_partial_set(toy_run, toy_cache, tmp_path):
    out = tmp_path / "pred"
    command = ["predict", toy_run, "--cache", toy_cache, "--out", out, "--ids", "all", "--device", "cpu", *ONE_THREAD]
    count = ((prediction_files, "write_prediction_file"),)
    with counting_writes(count) as writes:
        assert invoke(*command).exit_code == 0
    expected = {p.name: p.read_text() for p in out.iterdir() if p.name != MANIFEST}
    for k in (1, writes[0] // 2, writes[0]):  # the first file, midway, the folder renamed into place
        target = tmp_path / f"pred-{k}"
        args = [str(a).replace(str(out), str(target)) for a in command]
        assert run_in_child(args, tmp_path / f"kill-{k}.log", kill_at=k, also_count=count).killed
        assert not target.exists()  # no partial set, not even an empty folder
        assert run_in_child(args, tmp_path / f"rerun-{k}.log").exit_code == 0
        assert {p.name: p.read_text() for p in target.iterdir() if p.name != MANIFEST} == expected
        assert not list(tmp_path.glob(f".{target.name}.tmp-*"))  # the killed run's leftovers were removed
    for k in (writes[0], writes[0] + 1):  # replacing an earlier set: killed at each of its two renames
        assert run_in_child(command, tmp_path / f"replace-{k}.log", kill_at=k, also_count=count).killed
        left = {p.name for p in out.iterdir()} if out.exists() else set()
        assert left in (set(), {*expected, MANIFEST})  # the old set whole, the new one whole, or none
        assert run_in_child(command, tmp_path / f"replace-rerun-{k}.log").exit_code == 0
        assert {p.name: p.read_text() for p in out.iterdir() if p.name != MANIFEST} == expected


def test_extract_killed_at_writes_resumes_to_the_clean_cache(tiny_extracted, tmp_path):
    corpus, _, _ = tiny_extracted
    cache = tmp_path / "cache"
    command = [
        "extract",
        corpus.root,
        "--cache",
        cache,
        "--features",
        "logmel",
        "--workers",
        "0",
        "--device",
        "cpu",
        *ONE_THREAD,
    ]
    clean, finished = _clean_and_killed(tmp_path, command, cache)
    with h5py.File(clean / "logmel.h5") as f:
        expected = {v: f[f"videos/{v}/features"][()] for v in f["videos"]}
    for k, target in finished:
        with h5py.File(target / "logmel.h5") as f:
            assert sorted(f["videos"]) == sorted(expected), k
            for v, x in expected.items():
                np.testing.assert_array_equal(f[f"videos/{v}/features"][()], x)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links by their target) -> its bytes."""
    return {
        str(p.relative_to(folder)): (str(p.readlink()).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def test_faces_killed_at_writes_resumes_to_the_clean_corpus(tmp_path):
    from tests.conftest import astronaut_face
    from vafusion.extract.faces import writer
    from vafusion.synth.face_video import face_clip

    clip = face_clip(tmp_path / "in" / "clip.mp4", astronaut_face(), n_frames=6, size=(128, 96), width=64)
    out = tmp_path / "corpus"
    command = ["faces", clip.path, "--out", out, "--detector-option", "min_face=40", "--batch-size", "4"]
    command += ["--preview", "--device", "cpu", *ONE_THREAD]
    also = ((writer, "save_crops"),)  # the crops are written in batches between the renames: kill there too
    # Its 7 writes: the video link, two batches of crops, table, preview, record, the crop folder renamed.
    # Killed at the link, amid the crops, at the record and at the rename (the others add nothing new).
    clean, finished = _clean_and_killed(tmp_path, command, out, instants=[1, 3, 6, 7], also_count=also)
    expected = _tree(clean)
    assert len([name for name in expected if name.endswith(".jpg")]) == clip.n_frames
    for k, target in finished:
        assert _tree(target) == expected, k
        _no_temporaries(target)
