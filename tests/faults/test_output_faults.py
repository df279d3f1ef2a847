"""Stage-2 output faults of issue 20: numbers in a submission that only Python's float() reads, numbers in a
post.json that would size the work or mean something else, and compare's table.

Through the command line: each is named (with its line or file), and the command fails (exit code 1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.faults.conftest import invoke, one_line_error, run_in_child


def _sample(path, rows: int = 4):
    path.write_text("image_location,valence,arousal\n" + "".join(f"v/{k:05d}.jpg,,\n" for k in range(1, rows + 1)))
    return path


@pytest.mark.parametrize("value", ["0.0_1", "\u0660.\u0665", "\uff10.5", "1_0e-1"])
def test_check_submission_takes_only_plain_decimal_numbers(tmp_path, value):
    """0.0_1 and Arabic-Indic (or full-width) digits passed: Python's float() reads them, the challenge's
    scorer need not."""
    sample = _sample(tmp_path / "sample.txt")
    rows = ["0.1,0.2", f"{value},0.2", "-0.3,1e-3", ".5,-1"]
    submission = tmp_path / "submission.txt"
    submission.write_text(
        "image_location,valence,arousal\n" + "".join(f"v/{k:05d}.jpg,{r}\n" for k, r in enumerate(rows, start=1))
    )
    result = invoke("check-submission", submission, "--sample", sample)
    assert result.exit_code == 1 and "Traceback" not in result.output
    problems = [line for line in result.output.splitlines() if line.startswith("problem: ")]
    assert problems == [f"problem: not a number: line 3: valence {value!r} is not a number"], result.output
    good = tmp_path / "good.txt"
    good.write_text(submission.read_text().replace(value, "0.01"))
    assert invoke("check-submission", good, "--sample", sample).exit_code == 0


# ---- predict --post FILE: every number in post.json bounded, every kind of file named ------------------


def _post(path, valence: dict, arousal: dict | None = None, version: int = 1):
    path.write_text(
        json.dumps(
            {"format": "vafusion-post", "format_version": version, "valence": valence, "arousal": arousal or valence}
        )
    )
    return path


def _predict(run, cache, out, *extra):
    return invoke("predict", run, "--cache", cache, "--out", out, "--device", "cpu", "--ids", "all", *extra)


V1 = {"method": "median", "window_s": 0.2, "shift_s": 0.0}


@pytest.mark.parametrize(
    "case, said",
    [
        ({**V1, "window_s": 1e9}, "window_s 1000000000.0: 1e+09 is not in the range 0<=x<=60"),
        ({**V1, "window_s": 1e300}, "window_s 1e+300: 1e+300 is not in the range 0<=x<=60"),
        ({**V1, "shift_s": True}, "shift_s true: not a number"),
        ({**V1, "shift_s": "0.5"}, 'shift_s "0.5": not a number'),
        ({**V1, "shift_s": -1e6}, "shift_s -1000000.0: -1e+06 is not in the range -60<=x<=60"),
        ({"steps": [{"step": "smooth", "method": "mean", "window_s": 1e9}]}, "is not in the range 0<=x<=60"),
        ({"steps": [{"step": "shift", "shift_s": True}]}, "expected float, got True"),
    ],
)
def test_a_post_json_number_out_of_its_range_is_one_line(toy_run, toy_cache, tmp_path, case, said):
    """A median over 1e9 s was killed by the kernel (memory grew with the window, even on a 79-frame video);
    1e300 was an OverflowError traceback; "shift_s": true was taken as a 1 s delay. Run under a 2 GiB cap."""
    post = _post(tmp_path / "post.json", case, version=2 if "steps" in case else 1)
    args = ["predict", toy_run, "--cache", toy_cache, "--out", tmp_path / "out", "--device", "cpu", "--post", post]
    child = run_in_child(
        [*args, "--threads", "1"],  # a forked child on one thread: no OpenMP pool the fork left without its threads
        tmp_path / "log",
        memory_cap=2 << 30,
    )
    assert child.exit_code == 1 and "Traceback" not in child.output, child.output
    errors = [line for line in child.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {post}: "), child.output
    assert said in errors[0], errors[0]
    assert not (tmp_path / "out").exists()


def test_a_post_folder_is_one_line(toy_run, toy_cache, tmp_path):
    folder = tmp_path / "posts"
    folder.mkdir()
    one_line_error(_predict(toy_run, toy_cache, tmp_path / "out", "--post", folder), str(folder), "a directory")


def test_a_window_longer_than_the_video_is_the_whole_video(toy_run, toy_cache, tmp_path):
    """59 s (the longest window is 60 s) on videos of 80-160 frames: every frame's window is the whole video,
    computed with memory that grows with the video, not the window."""
    assert _predict(toy_run, toy_cache, tmp_path / "raw", "--post", "none").exit_code == 0
    post = _post(tmp_path / "post.json", {"method": "median", "window_s": 59.0, "shift_s": 0.0})
    assert _predict(toy_run, toy_cache, tmp_path / "smooth", "--post", post).exit_code == 0
    for raw in sorted((tmp_path / "raw").glob("*.txt")):
        before = np.loadtxt(raw, delimiter=",", skiprows=1)
        after = np.loadtxt(tmp_path / "smooth" / raw.name, delimiter=",", skiprows=1)
        np.testing.assert_allclose(after, np.broadcast_to(np.median(before, axis=0), before.shape), atol=2e-3)


def test_compare_shows_a_spread_only_over_more_than_one_run(toy_cache, tmp_path):
    """With one run per row, compare printed "0.912 ± 0.000": a spread of one value, as if measured."""
    runs = tmp_path / "runs"
    args = ["compare", toy_cache, "--runs", runs, "--models", "ridge", "--features", "visual,audio", "--device", "cpu"]
    one = invoke(*args)
    assert one.exit_code == 0, one.output
    assert "±" not in one.stdout and "±" not in (runs / "compare.html").read_text()
    two = invoke(*args, "--seeds", "2")
    assert two.exit_code == 0, two.output
    assert two.stdout.count("±") == 3 and "mean ± std over seeds" in (runs / "compare.html").read_text()
