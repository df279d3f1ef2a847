"""``vafusion faces``: raw videos in, the Aff-Wild2 layout (aligned face crops) out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vafusion.cli.extract_cmd import _parse_shard
from vafusion.cli.main import cli
from vafusion.cli.options import _compute_options, _device_option, _setting, _warn_beside_bars
from vafusion.extract.faces.options import FacesOptions


def parse_detector_options(values: tuple[str, ...]) -> dict[str, str]:
    """``("min_face=40",)`` -> ``{"min_face": "40"}``."""
    from vafusion.errors import VafusionError

    out: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.isidentifier():
            raise VafusionError(f"--detector-option {text!r}: write KEY=VALUE (e.g. min_face=40)")
        out[key] = value
    return out


@cli.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Corpus folder to create or complete: videos/ (links), cropped_aligned/<id>/NNNNN.jpg, faces/<name>.csv.",
)
@click.option(
    "--detector",
    default="mtcnn",
    show_default=True,
    help="Face detector: mtcnn (built in; weights from the mtcnn package), package.module:attribute for your "
    "own, or a name an installed package registers (entry points vafusion.detectors).",
)
@click.option(
    "--detector-option",
    "detector_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the detector (repeatable), e.g. min_face=40 (mtcnn: weights=DIR, min_face, threshold).",
)
@_setting(FacesOptions, "size", "Side of the square crops in pixels (Aff-Wild2's are 112).")
@_setting(FacesOptions, "margin", "Extra context around the face, as a fraction (0: the standard 5-point framing).")
@_setting(
    FacesOptions,
    "persons",
    "People to crop per video: 1 = the main person (the longest track), id <name>; 2 = two people, ids "
    "<name>_left and <name>_right by horizontal position, as Aff-Wild2 names them.",
)
@_setting(
    FacesOptions,
    "detect_every",
    "Detect on every K-th frame only; frames between two detections of a face take interpolated "
    "landmarks (faster on a CPU; 1 = every frame).",
)
@_setting(FacesOptions, "batch_size", "Frames per detector batch.")
@click.option("--preview", is_flag=True, help="Also write faces/<id>.png, a contact sheet of crops sampled over time.")
@_device_option()
@click.option(
    "--shard",
    callback=_parse_shard,
    metavar="K/N",
    help="Process only part K of N of the videos (parts of about equal frames; the same split on every machine).",
)
@_compute_options(precision=False, stream=False)
def faces(
    videos: tuple[Path, ...],
    out: Path,
    detector: str,
    detector_options: tuple[str, ...],
    size: int,
    margin: float,
    persons: int,
    detect_every: int,
    batch_size: int,
    preview: bool,
    device: str,
    shard: tuple[int, int],
) -> None:
    """Find, follow and align the faces of VIDEOS (files or folders of videos) into the corpus OUT.

    Writes the layout `vafusion extract` reads: every frame with a face gets a 112 x 112 crop
    aligned on 5 landmarks (eyes, nose, mouth corners), numbered from 00001 like Aff-Wild2; a
    frame without one gets no file. faces/<name>.csv lists every tracked face (box, landmarks,
    score, track) for checking.

    Resumable: rerun the same command after an interruption and only the unfinished videos are
    done again. A video that fails is reported at the end (exit code 1); the others are written.
    """
    from vafusion.extract.faces.run import faces as run_faces

    opts = FacesOptions(
        detector=detector,
        detector_options=parse_detector_options(detector_options),
        size=size,
        margin=margin,
        persons=persons,
        detect_every=detect_every,
        batch_size=batch_size,
        preview=preview,
        device=device,
        shard=shard,
    )
    report = run_faces(videos, out, opts, warn=_warn_beside_bars)
    click.echo(
        f"faces: {len(report.written)} videos written, {len(report.skipped)} already there, "
        f"{report.frames} frames -> {out}"
    )
    if not report.ok:
        click.echo(f"{len(report.failures)} problem(s):", err=True)
        for line in report.failures:
            click.echo(f"  failed: {line}", err=True)
        sys.exit(1)
