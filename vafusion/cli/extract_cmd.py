"""``vafusion extract``: stage 1, in one process, a scheduler's shard, or a torchrun rank."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from vafusion.cli.main import cli
from vafusion.cli.options import (
    _compute_options,
    _device_option,
    _ranged,
    _warn_beside_bars,
    _weights_option,
    json_only_on_stdout,
)
from vafusion.errors import VafusionError
from vafusion.extract.options import ExtractOptions


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int]:
    from vafusion.cache.schema import parse_shard

    if value is None:
        return (1, 1)
    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@cli.command()
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option(
    "--cache",
    "cache_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache directory to create or complete (corpus.h5 + one <feature>.h5 per feature).",
)
@click.option(
    "--like",
    "like",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Extract the same features with the same settings as this cache (backbones, weights files by "
    "sha256, image size, options): a trained run's features for a new corpus. Replaces --features, "
    "--weights, --extractor-option and --image-size; a weights file not found (by name, in the current "
    "folder, that cache or its parent) is named: give it with --weights FEATURE=PATH.",
)
@click.option(
    "--features",
    default="resnet50,vggish,logmel",
    show_default=True,
    help="Comma-separated, mixable: any torchvision classification model (resnet50, efficientnet_b0, "
    "convnext_tiny, ...), vggish, logmel, a speech model (wav2vec2_base, hubert_base, wavlm_base_plus, "
    "...), vad (speech probability), timm:MODEL (any timm image model), hf:REPO_OR_FOLDER (a Hugging "
    "Face speech encoder, Whisper's included; see README, Features), package.module:attribute for your "
    "own extractor, or a name an installed package registers (entry points vafusion.extractors).",
)
@click.option(
    "--videos",
    "videos_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <name>.mp4|.avi (repeatable). Default: CORPUS/videos, raw_videos, batch1, batch2.",
)
@click.option(
    "--faces",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <video_id>/00001.jpg face crops. Default: CORPUS/cropped_aligned.",
)
@click.option(
    "--annotations",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding Train_Set/ and Validation_Set/. Default: CORPUS/annotations/VA_Estimation_Challenge.",
)
@click.option(
    "--audio",
    "audio_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <name>.wav to use instead of the containers' audio tracks.",
)
@click.option(
    "--test-list",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text file of test video ids (one per line); they are extracted unlabelled.",
)
@_weights_option(
    "FEATURE=SPEC",
    "Weights of one feature (repeatable): random, default (the published weights, downloaded once "
    "to TORCH_HOME, or the Hugging Face cache for timm: and hf: models) or a local PATH, e.g. "
    "timm:tf_efficientnet_b0.ns_jft_in1k=affectnet.pth. Overrides --visual-weights/--vggish-weights "
    "for that feature.",
)
@click.option(
    "--extractor-option",
    "extractor_options",
    multiple=True,
    metavar="FEATURE.KEY=VALUE",
    help="An option of one extractor (repeatable), recorded in the cache's provenance, e.g. "
    "wav2vec2_base.layer=6 (see README, Features).",
)
@click.option(
    "--visual-weights",
    default="imagenet",
    show_default=True,
    help="Weights of every torchvision model: imagenet (= default: torchvision's, downloads once to "
    "TORCH_HOME), a local checkpoint PATH (state_dict, nested state_dict/model, module. prefixes ok), "
    "or random.",
)
@click.option(
    "--image-size",
    default=224,
    show_default=True,
    type=_ranged(ExtractOptions, "image_size"),
    help="Crops are resized to this square size (Aff-Wild2 crops are 112) for torchvision models; "
    "timm: models take their own (image_size option).",
)
@click.option(
    "--vggish-weights",
    help="VGGish state_dict PATH (e.g. vggish-10086976.pth; see README) or random. Required when vggish is extracted.",
)
@click.option(
    "--vggish-pca",
    type=click.Path(exists=True, dir_okay=False),
    help="Optional published PCA parameter file (.npz or .pth): PCA, clip and 8-bit quantisation.",
)
@_device_option()
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=_ranged(ExtractOptions, "batch_size"),
    help="Frames per backbone batch (batches span video boundaries).",
)
@click.option(
    "--workers",
    type=_ranged(ExtractOptions, "workers"),
    help="DataLoader decoding processes [default: min(8, cores - 1)].",
)
@click.option(
    "--shard",
    callback=_parse_shard,
    metavar="K/N",
    help="Extract only part K of N of the ids (parts of about equal frames, a video's _left/_right ids "
    "together; the same split on every machine), into <feature>.shard-K-of-N.h5 files; combine "
    "them later with `vafusion cache merge`.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Discard what exists for these features and start afresh "
    "(by default a rerun resumes and extracts only what is missing).",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "lzf", "gzip"]),
    default="none",
    show_default=True,
    help="HDF5 compression (none loads fastest; lzf/gzip for transfer).",
)
@click.option(
    "--copy",
    is_flag=True,
    help="Under torchrun: rank 0 merges the ranks' shards by copying them into "
    "self-contained <feature>.h5 files instead of linking to them.",
)
@_compute_options(stream=False)
def extract(
    corpus: Path | None,
    cache_dir: Path,
    like: Path | None,
    features: str,
    videos_dirs: tuple[Path, ...],
    faces: Path | None,
    annotations: Path | None,
    audio_dir: Path | None,
    test_list: Path | None,
    weights: tuple[str, ...],
    extractor_options: tuple[str, ...],
    visual_weights: str,
    image_size: int,
    vggish_weights: str | None,
    vggish_pca: str | None,
    device: str,
    batch_size: int,
    workers: int | None,
    shard: tuple[int, int],
    overwrite: bool,
    compression: str,
    copy: bool,
) -> None:
    """Extract frame-level features of CORPUS (Aff-Wild2 layout) into a feature cache.

    Resumable: rerun the same command after an interruption and only the missing videos
    are extracted. A video that fails is reported at the end (exit code 1); the others
    are still written.

    \b
    Several GPUs or machines: start it with torchrun, e.g.
      torchrun --nproc_per_node 8 -m vafusion extract CORPUS --cache CACHE ...
    Each rank extracts its part (balanced by frames) on cuda:LOCAL_RANK into its own
    shard files; rank 0 then merges them into CACHE and reports for every rank.
    """
    from vafusion.extract.corpus import discover_corpus
    from vafusion.extract.distributed import torchrun_rank
    from vafusion.extract.options import parse_extractor_options, parse_weights
    from vafusion.extract.run import extract as run_extract

    given_weights, given_options = parse_weights(weights), parse_extractor_options(extractor_options)
    settings: dict[str, Any] = dict(
        features=tuple(f.strip() for f in features.split(",") if f.strip()),
        weights=given_weights,
        extractor_options=given_options,
        image_size=image_size,
    )
    if like is not None:
        from vafusion.extract.like import like_settings

        settings = like_settings(like, given_weights, given_options)
    opts = ExtractOptions(
        **settings,
        visual_weights=visual_weights,
        vggish_weights=vggish_weights,
        vggish_pca=vggish_pca,
        device=device,
        batch_size=batch_size,
        workers=workers,
        shard=shard,
        overwrite=overwrite,
        compression=None if compression == "none" else compression,
    )
    rank = torchrun_rank()
    if copy and rank is None:
        raise VafusionError(
            "--copy: only under torchrun (shards of --shard K/N merge with `vafusion cache merge --copy`)"
        )
    found = discover_corpus(
        corpus,
        videos_dirs=list(videos_dirs) or None,
        faces_dir=faces,
        annotations_dir=annotations,
        audio_dir=audio_dir,
        test_list=test_list,
    )
    if rank is not None:
        return _extract_distributed(found, cache_dir, opts, rank, copy)
    click.echo(f"corpus: {len(found.videos)} ids; cache: {cache_dir}; features: {', '.join(opts.features)}", err=True)
    report = run_extract(found, cache_dir, opts, warn=_warn_beside_bars)
    for f, path in report.written.items():
        click.echo(f"{f}: {report.extracted.get(f, 0)} extracted, {report.skipped.get(f, 0)} already there -> {path}")
    if not report.ok:
        click.echo(f"{len(report.problems) + len(report.failures)} problem(s):", err=True)
        for p in report.problems:
            click.echo(f"  skipped id: {p}", err=True)
        for fail in report.failures:
            click.echo(f"  failed: {fail}", err=True)
        sys.exit(1)


def _extract_distributed(found, cache_dir: Path, opts, rank, copy: bool) -> None:
    """extract's torchrun path: rank 0 prints for every rank; every rank exits 1 if anything failed."""
    from vafusion.extract.distributed import extract_distributed

    if rank.rank == 0:
        click.echo(
            f"corpus: {len(found.videos)} ids; cache: {cache_dir}; features: {', '.join(opts.features)}; "
            f"{rank.world_size} ranks",
            err=True,
        )
    result = extract_distributed(
        found, cache_dir, opts, rank, copy=copy, warn=lambda m: click.echo(f"warning: {m}", err=True)
    )
    if rank.rank == 0:
        for r in result.ranks:
            for f in r["written"]:
                click.echo(
                    f"rank {r['rank']}: {f}: {r['extracted'].get(f, 0)} extracted, "
                    f"{r['skipped'].get(f, 0)} already there"
                )
        for merged in result.merged:
            click.echo(f"{'wrote' if merged.written else 'up to date'} {merged.path}")
        problems = (
            [f"skipped id: {p}" for p in result.report.problems]
            + [f"rank {r['rank']} failed: {fail}" for r in result.ranks for fail in r["failures"]]
            + [f"not merged: {f}: {why}" for f, why in result.not_merged.items()]
        )
        if problems:
            click.echo(f"{len(problems)} problem(s) (rerun the same command to resume):", err=True)
            for line in problems:
                click.echo(f"  {line}", err=True)
    if not result.ok:
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def features(as_json: bool) -> None:
    """List every feature extractor: the built-in families (their --features names, options and
    default weights; what to install for an optional family) and the installed plug-ins.
    Choose with extract --features NAME,...; set options with --extractor-option NAME.KEY=VALUE."""
    import json
    import textwrap

    from vafusion.extract.catalog import catalog

    with json_only_on_stdout(as_json):
        rows, problems = catalog()
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
    for row in [] if as_json else rows:
        click.echo(f"{row.name}  ({row.origin}{'; ' + row.install if row.install else ''})\n  {row.about}")
        click.echo(textwrap.fill(", ".join(row.entries), 100, initial_indent="  --features ", subsequent_indent="    "))
        click.echo(f"  options: {', '.join(row.options) or '-'}; weights: {row.weights or '-'}\n")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
