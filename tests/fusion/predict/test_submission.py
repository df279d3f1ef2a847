"""The single-file ABAW submission: the organisers' sample parsed (BOM, CRLF, extra columns), predictions
mapped onto its rows (order, padding, trimming, _left/_right), and check-submission naming every problem
with its line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.predict.submission import (
    SHOWN_PER_KIND,
    check_submission,
    fit_to_sample,
    parse_location,
    read_sample,
    write_submission,
)

# not alphabetical, with a pair of _left/_right ids
COUNTS = {"zeta": 6, "alpha_right": 5, "alpha_left": 7, "mid": 4}


def write_sample(path: Path, counts: dict[str, int] = COUNTS, *, bom: bool = True, crlf: bool = True) -> Path:
    """A sample as the organisers ship it: header, then ``<id>/<00001>.jpg`` rows with empty value columns."""
    rows = ["image_location,valence,arousal"] + [
        f"{vid}/{k:05d}.jpg,," for vid, n in counts.items() for k in range(1, n + 1)
    ]
    end = "\r\n" if crlf else "\n"
    path.write_bytes((("\ufeff" if bom else "") + end.join(rows) + end).encode("utf-8"))
    return path


def _predictions(frames: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {vid: rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for vid, n in frames.items()}


def test_sample_with_bom_crlf_and_extra_columns(tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.txt"))
    assert list(sample.videos) == ["zeta", "alpha_right", "alpha_left", "mid"]  # the sample's order, kept
    assert sample.locations[0] == "zeta/00001.jpg" and len(sample.locations) == sum(COUNTS.values())
    assert sample.first_line == {"zeta": 2, "alpha_right": 8, "alpha_left": 13, "mid": 20}
    np.testing.assert_array_equal(sample.frames[sample.videos["mid"]], [1, 2, 3, 4])
    plain = read_sample(write_sample(tmp_path / "plain.txt", bom=False, crlf=False))
    assert plain.locations == sample.locations
    assert parse_location("a/b_left/00012.jpg") == ("a/b_left", 12)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "line 1: header must start with 'image_location'"),
        ("valence,arousal\n0,0\n", "line 1: header must start with 'image_location'"),
        ("image_location,valence,arousal\nv/00001.jpg,,\nv/1.jpg,,\n", "line 3: 'v/1.jpg' is not"),
        ("image_location,valence,arousal\nv/00000.jpg,,\n", "line 2: 'v/00000.jpg'"),
        ("image_location,valence,arousal\nv/00001.jpg,,\nv/00001.jpg,,\n", "line 3: v/00001.jpg listed twice"),
        ("image_location,valence,arousal\n", "no rows after the header"),
    ],
)
def test_malformed_sample_is_one_error_naming_the_line(tmp_path, text, problem):
    (tmp_path / "s.txt").write_text(text)
    with pytest.raises(VafusionError, match=problem.replace("(", r"\(")):
        read_sample(tmp_path / "s.txt")


def test_predictions_are_mapped_onto_the_sample_rows_padded_or_trimmed(tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.txt"))
    frames = {"zeta": 9, "alpha_right": 2, "alpha_left": 7, "mid": 4}  # zeta -3 in the sample, alpha_right +3
    preds = _predictions(frames)
    values, differences = fit_to_sample(sample, preds)
    assert values.shape == (sum(COUNTS.values()), 2)
    np.testing.assert_array_equal(values[:6], preds["zeta"][:6])  # trimmed: the sample's 6 first frames
    np.testing.assert_array_equal(values[6:11], preds["alpha_right"][[0, 1, 1, 1, 1]])  # padded with the last
    np.testing.assert_array_equal(values[11:18], preds["alpha_left"])
    assert [(d.video, d.rows, d.frames, d.padded, d.left_out) for d in differences] == [
        ("zeta", 6, 9, 0, 3),
        ("alpha_right", 5, 2, 3, 0),
    ]
    assert (
        differences[0].describe() == "zeta: sample 6 rows, cache 9 frames (-3: 3 frame(s) not in the sample left out)"
    )
    assert differences[1].describe() == (
        "alpha_right: sample 5 rows, cache 2 frames (+3: 3 row(s) padded with the last frame's prediction)"
    )


def test_a_video_without_predictions_or_with_nan_is_an_error(tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.txt"))
    preds = _predictions(COUNTS)
    del preds["alpha_left"], preds["mid"]
    with pytest.raises(VafusionError, match=r"s.txt line 13: video alpha_left has no predictions \(and 1 other"):
        write_submission(tmp_path / "out.txt", sample, preds)
    preds = _predictions(COUNTS)
    preds["mid"][2, 1] = np.nan
    with pytest.raises(VafusionError, match="NaN or inf"):
        write_submission(tmp_path / "out.txt", sample, preds)
    assert list(tmp_path.iterdir()) == [tmp_path / "s.txt"]  # nothing written, no temporary left


def test_what_is_written_passes_the_check(tmp_path):
    sample = read_sample(write_sample(tmp_path / "s.txt"))
    write_submission(tmp_path / "sub" / "predictions.txt", sample, _predictions({**COUNTS, "zeta": 3}))
    raw = (tmp_path / "sub" / "predictions.txt").read_bytes()
    assert raw.startswith(b"image_location,valence,arousal\nzeta/00001.jpg,") and b"\r" not in raw
    result = check_submission(tmp_path / "sub" / "predictions.txt", sample)
    assert result.ok and result.rows == sum(COUNTS.values()) and result.lines() == []


def _good_lines(sample_path: Path) -> list[str]:
    sample = read_sample(sample_path)
    return ["image_location,valence,arousal"] + [f"{loc},0.100000,-0.200000" for loc in sample.locations]


def test_check_names_every_kind_of_problem_with_its_line(tmp_path):
    sample_path = write_sample(tmp_path / "s.txt")
    lines = _good_lines(sample_path)
    lines[0] = "image_location,arousal,valence"
    lines[2] = "zeta/00002.jpg,abc,nan"  # line 3: not a number, not finite
    lines[3] = "zeta/00003.jpg,1.5,0.1"  # line 4: out of range
    lines[4] = "zeta/00004.jpg,0.1"  # line 5: a field missing
    lines[5], lines[6] = lines[6], lines[5]  # lines 6-7: swapped
    lines[8] = "nobody/00001.jpg,0.1,0.1"  # line 9: not in the sample (alpha_right/00002 missing)
    lines[10] = lines[9]  # line 11 repeats line 10 (alpha_right/00004 missing)
    lines.insert(12, "")  # line 13: blank
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    result = check_submission(tmp_path / "bad.txt", read_sample(sample_path))
    assert not result.ok
    assert result.shown == {
        "header": ["line 1: 'image_location,arousal,valence', expected 'image_location,valence,arousal'"],
        "not a number": ["line 3: valence 'abc' is not a number"],
        "not finite": ["line 3: arousal is nan"],
        "out of range": ["line 4: valence 1.5 is outside [-1, 1]"],
        "columns": ["line 5: 2 field(s), expected 3 (image_location,valence,arousal)"],
        "unknown row": ["line 9: 'nobody/00001.jpg' is not a row of the sample"],
        "repeated row": ["line 11: alpha_right/00003.jpg repeats line 10"],
        "blank line": ["line 13: empty"],
        "missing row": [
            "alpha_right/00002.jpg (sample line 9) has no row",
            "alpha_right/00004.jpg (sample line 11) has no row",
        ],
        "order": ["line 6: zeta/00006.jpg is out of the sample's order (sample line 7)"],  # one of the swapped two
    }
    assert result.total == 11


def test_a_row_moved_far_is_one_order_problem(tmp_path):
    sample_path = write_sample(tmp_path / "s.txt")
    lines = _good_lines(sample_path)
    lines.insert(1, lines.pop())  # the last row first: every other row is still in order
    (tmp_path / "moved.txt").write_text("\n".join(lines) + "\n")
    result = check_submission(tmp_path / "moved.txt", read_sample(sample_path))
    assert result.shown == {"order": ["line 2: mid/00004.jpg is out of the sample's order (sample line 23)"]}


def test_check_caps_each_kind_and_counts_the_rest(tmp_path):
    sample_path = write_sample(tmp_path / "s.txt", {"v": 25})
    lines = [line.replace("0.100000", "7") for line in _good_lines(sample_path)]
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    result = check_submission(tmp_path / "bad.txt", read_sample(sample_path))
    assert result.counts == {"out of range": 25} and len(result.shown["out of range"]) == SHOWN_PER_KIND
    assert result.lines()[-1] == f"out of range: ... and {25 - SHOWN_PER_KIND} more (25 in all)"


def test_check_submission_command(tmp_path):
    sample_path = write_sample(tmp_path / "s.txt")
    (tmp_path / "good.txt").write_text("\n".join(_good_lines(sample_path)) + "\n")
    runner = CliRunner()
    ok = runner.invoke(cli, ["check-submission", str(tmp_path / "good.txt"), "--sample", str(sample_path)])
    assert ok.exit_code == 0 and "ok (22 rows, 4 videos" in ok.stdout
    lines = _good_lines(sample_path)
    (tmp_path / "bad.txt").write_text("\n".join([*lines[:-1], "mid/00004.jpg,2,0"]) + "\n")
    bad = runner.invoke(cli, ["check-submission", str(tmp_path / "bad.txt"), "--sample", str(sample_path)])
    assert bad.exit_code == 1
    assert "problem: out of range: line 23: valence 2 is outside [-1, 1]" in bad.stderr
    assert bad.stderr.strip().endswith("bad.txt: 1 problem(s)")
    missing = runner.invoke(cli, ["check-submission", str(tmp_path / "good.txt"), "--sample", str(tmp_path / "no")])
    assert (
        missing.exit_code == 1
        and missing.output.startswith(f"error: {tmp_path / 'no'}: no such file")
        and missing.output.count("\n") == 1
    )
