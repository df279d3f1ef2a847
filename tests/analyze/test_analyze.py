"""``vafusion analyze`` on a clip of a real face with trained runs: one row per frame, values in range,
the face column where the face was drawn, and the plot and page beside them; --json prints the JSON alone."""

from __future__ import annotations

import csv
import json

import numpy as np

from tests.faults.conftest import invoke
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.train import train

CHATTY = "tests.faults.misbehaving_models:ChattyClosed"


def test_analyze_writes_one_row_per_frame_with_the_face_mask(tiny_extracted, face_corpus, tmp_path):
    _, cache, _ = tiny_extracted
    run = tmp_path / "run"
    train(cache, run, make_config(model="ridge", features=("resnet18", "logmel")), progress=False)
    chatty = tmp_path / "chatty"  # a model plug-in that prints when it predicts: not into the JSON on stdout
    train(cache, chatty, make_config(model=CHATTY, features=("resnet18", "logmel")), progress=False)
    clip = face_corpus.one  # a blank span: frames without a face
    out = tmp_path / "out"
    result = invoke(
        "analyze", clip.path, "--run", run, "--run", chatty, "--out", out, "--detector-option", "min_face=40",
        "--device", "cpu", "--threads", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert "ChattyClosed: predict" in result.stderr
    assert summary["frames"] == clip.n_frames and summary["features"] == ["resnet18", "logmel"]
    rows = list(csv.DictReader(open(out / "one.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(1, clip.n_frames + 1))
    values = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows])
    assert np.isfinite(values).all() and np.abs(values).max() <= 1.0
    assert [r["face"] == "1" for r in rows] == clip.shown.tolist()
    assert float(rows[1]["seconds"]) == 1 / 25
    page = (out / "one.html").read_text()
    assert str(run) in page and "resnet18" in page and "figures/one-crops.png" in page
    assert (out / "one.png").stat().st_size > 0 and (out / "figures" / "one-crops.png").is_file()
    assert not (out / "one.work").exists()
