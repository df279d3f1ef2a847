"""``vafusion analyze``: one video and a trained run in, valence and arousal per frame out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vafusion.cli.faces_cmd import parse_detector_options
from vafusion.cli.main import cli
from vafusion.cli.options import _compute_options, _device_option, _setting, _weights_option, json_only_on_stdout
from vafusion.extract.faces.options import FacesOptions


@cli.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "runs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A trained run, or a folder of runs (e.g. a cv's: every seed of every fold is averaged); repeatable.",
)
@click.option(
    "--cache",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The cache the run was trained on (its features' settings are reproduced)  [default: the run's].",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs.")
@_weights_option(
    "FEATURE=PATH", "A weights file the cache's features were made with, when it is not found by name (repeatable)."
)
@click.option("--detector", default="mtcnn", show_default=True, help="Face detector (see `vafusion faces`).")
@click.option("--detector-option", "detector_options", multiple=True, metavar="KEY=VALUE", help="As for `faces`.")
@_setting(FacesOptions, "detect_every", "Detect faces on every K-th frame only (see `vafusion faces`).")
@click.option(
    "--post",
    default="auto",
    show_default=True,
    metavar="auto|none|FILE",
    help="Post-processing, as `vafusion predict` takes it.",
)
@click.option("--smooth", type=click.IntRange(1), help="Overrides --post: a centred moving average over N frames.")
@_device_option()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (files, frames, what was used).")
@_compute_options(precision=False, stream=False)
def analyze(
    video: Path,
    runs: tuple[Path, ...],
    cache: Path | None,
    out: Path,
    weights: tuple[str, ...],
    detector: str,
    detector_options: tuple[str, ...],
    detect_every: int,
    post: str,
    smooth: int | None,
    device: str,
    as_json: bool,
) -> None:
    """Valence and arousal of every frame of VIDEO by a trained run.

    Finds and aligns the faces (as `vafusion faces`), extracts the features exactly as the run's
    training cache was made (as `vafusion extract --like`), and predicts as `vafusion predict` does
    (every run averaged, post-processing). Writes OUT/<name>.csv (frame, seconds, valence, arousal,
    face), OUT/<name>.png (the curves, no-face spans shaded) and OUT/<name>.html (the plot, face
    crops over time, the run and features used).
    """
    from vafusion.analyze import AnalyzeOptions
    from vafusion.analyze import analyze as run_analyze
    from vafusion.extract.options import parse_weights

    opts = AnalyzeOptions(
        runs=runs,
        cache=cache,
        weights=parse_weights(weights),
        faces=FacesOptions(
            detector=detector,
            detector_options=parse_detector_options(detector_options),
            detect_every=detect_every,
            device=device,
            progress=not as_json,
        ),
        post=post,
        smooth=smooth,
        device=device,
        progress=not as_json,
    )
    with json_only_on_stdout(as_json):
        result = run_analyze(video, out, opts, log=None if as_json else lambda m: click.echo(m, err=True))
    summary = {
        "id": result.id,
        "frames": len(result.values),
        "face_frames": int(result.face.sum()),
        "fps": result.fps,
        "files": {k: str(v) for k, v in result.files.items()},
        **result.about,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(f"{result.id}: {summary['frames']} frames ({summary['face_frames']} with a face) -> {out}")
