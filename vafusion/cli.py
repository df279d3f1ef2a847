"""The ``vafusion`` command line: parse options, call the library, print results.

Every user-fixable problem arrives here as a :class:`~vafusion.errors.VafusionError` and
leaves as one line on stderr with exit code 1: no tracebacks for bad input.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from vafusion import __version__
from vafusion.errors import VafusionError
from vafusion.extract.options import ExtractOptions
from vafusion.fusion.config import DataConfig, TrainingConfig


class _Group(click.Group):
    """A click group that turns VafusionError into ``error: <message>`` and exit code 1, and a bad option
    or argument into one ``error: ...`` line (exit code 2, click's code for usage errors)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except VafusionError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            if e.ctx is None:
                raise
            click.echo(f"error: {e.format_message()} (see '{e.ctx.command_path} -h')", err=True)
            ctx.exit(e.exit_code)


def _ranged(cls: type, name: str) -> click.ParamType:
    """The click type of setting ``name`` of dataclass ``cls``: its type and its declared range
    (:mod:`vafusion.bounds`), NaN and inf refused, shown in --help as click shows a range."""
    from vafusion.bounds import bound_of

    declared = bound_of(cls, name)
    base = click.IntRange if str(cls.__dataclass_fields__[name].type).startswith("int") else click.FloatRange

    class Ranged(base):  # type: ignore[misc, valid-type]
        name = "integer" if base is click.IntRange else "float"

        def convert(self, value, param, ctx):  # type: ignore[override]
            number = super().convert(value, param, ctx)
            problem = declared.problem(number)
            if problem:
                self.fail(problem, param, ctx)
            return number

    return Ranged(declared.low, declared.high, min_open=declared.low_open)


class _Device(click.ParamType):
    """A --device this machine has (vafusion.device.device_problem), checked before any work."""

    name = "text"

    def convert(self, value, param, ctx):  # type: ignore[override]
        from vafusion.device import device_problem

        problem = device_problem(str(value))
        if problem:
            self.fail(problem, param, ctx)
        return str(value)


def _warn_beside_bars(message: str) -> None:
    """``warning: ...`` on a line of its own, even while a progress bar is drawn (tqdm clears and redraws it)."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


DEVICE = _Device()
DEVICE_HELP = "auto, cpu, cuda or cuda:K (mps on Apple GPUs)."


def _stacked(options: list) -> Callable:
    """One decorator applying ``options`` (click options) in order."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _compute_options(precision: bool = True, stream: bool = True):
    """--threads, --precision and (for commands that read a cache's features) --in-memory/--stream.

    The command body runs inside :func:`vafusion.device.compute` (threads, precision) and
    :func:`vafusion.fusion.sources.loading` (how caches load), which the library reads.
    """
    options = [click.option(
        "--threads", type=click.IntRange(1), default=None,
        help="Compute threads (torch and BLAS; cv and compare --jobs N share them among their workers; under torchrun, "
             "per rank, by default each rank's share of its machine's cores)  [default: "
             "the physical cores minus those other processes keep busy "
             "now (sampled for 0.1 s), at least 1, so a busy laptop is not oversubscribed; OpenMP threads wait "
             "passively]")]
    if precision:
        from vafusion.device import EMULATED_BF16_ENV

        options.append(click.option(
            "--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
            help="CPU forward passes in fp32 or under bfloat16 autocast; bf16 needs a CPU with native bfloat16 "
                 f"(AVX512-BF16, AMX or ARM BF16; elsewhere an error, or {EMULATED_BF16_ENV}=1 to emulate it, "
                 "1.4-1.7x slower on an AVX2 CPU). On a GPU, autocast is always on."))
    if stream:
        options.append(click.option(
            "--in-memory/--stream", "in_memory", default=None,
            help="Load the features into RAM (fastest), or stream them from the cache files (only masks and labels "
                 "in RAM; for caches larger than memory)  [default: in RAM if the features take at most half of "
                 "the memory available now (MemAvailable), else streamed]"))

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def run(*args, threads: int | None, precision: str = "fp32", in_memory: bool | None = None, **kw):
            from vafusion.device import compute

            with contextlib.ExitStack() as stack:
                stack.enter_context(compute(threads, precision))
                if stream:
                    from vafusion.fusion.sources import loading

                    stack.enter_context(loading(None if in_memory is None else not in_memory))
                return f(*args, **kw)

        return _stacked(options)(run)

    return decorate


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                           "terminal_width": 100})
@click.version_option(__version__, prog_name="vafusion")
def cli() -> None:
    """Audio-visual valence/arousal estimation from in-the-wild video.

    \b
    Stage 1 (GPU box, once):   vafusion extract CORPUS --cache CACHE
    Stage 2 (laptop, often):   vafusion train CACHE --run RUN
                               vafusion predict RUN --cache CACHE --out DIR
    The feature cache (a directory of HDF5 files) is the contract between them:
    `vafusion cache info CACHE` describes one, `vafusion cache verify CACHE` checks it.
    """


@cli.group(cls=_Group)
def cache() -> None:
    """Inspect, check, merge and import into feature caches."""


@cache.command("info")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
def cache_info_cmd(cache_dir: Path, as_json: bool) -> None:
    """Describe CACHE: corpus summary, and per feature file its dim, dtype, ids, frames,
    extractor, fingerprint, checksums, linked shards and size on disk; unfinished extractions
    and temporary files left by writers."""
    from vafusion.cache.inspect import cache_info, format_info

    info = cache_info(cache_dir)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@cache.command("verify")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(path_type=Path))
def cache_verify_cmd(cache_dir: Path) -> None:
    """Check every id of every feature file against corpus.h5 and read all its data: shape
    (T, dim), float16 features, 1-byte bool mask of T rows, stored checksums, finite values,
    completion marker, matching corpus fingerprint, merged shards that are the ones merged.
    Run it after copying a cache to another machine. Exits 0 only if the cache is whole;
    each problem is printed with its file (and id and dataset); notes (e.g. no checksums in
    files of an older vafusion, temporary files) do not fail it."""
    from vafusion.cache.inspect import verify_cache

    report = verify_cache(cache_dir)
    for p in report:
        click.echo(f"problem: {p}", err=True)
    for n in report.notes:
        click.echo(f"note: {n}", err=True)
    if report:
        click.echo(f"{cache_dir}: {len(report)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{cache_dir}: ok" + (f" ({len(report.notes)} note(s))" if report.notes else ""))


@cache.command("merge")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--copy", is_flag=True, help="Copy the shards' data into one self-contained file per feature "
              "instead of linking to the shard files (the default: instant, no extra disk).")
@click.option("--feature", "features", multiple=True, help="Merge only this feature (repeatable).")
def cache_merge_cmd(cache_dir: Path, copy: bool, features: tuple[str, ...]) -> None:
    """Combine the shard files written by `extract --shard K/N` (all N copied into CACHE)
    into whole <feature>.h5 files. A missing shard is an error. A linked file records which
    shard files it links to and reads only those, from CACHE; a merge already done is not
    rewritten."""
    from vafusion.cache.merge import merge_shards

    for merged in merge_shards(cache_dir, copy=copy, features=list(features) or None):
        click.echo(f"{'wrote' if merged.written else 'up to date'} {merged.path}")


@cache.command("import")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("feature", metavar="FEATURE_NAME")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--timestamps", is_flag=True, help="The first column of every file is the time in seconds of its row; "
              "rows are averaged over each frame's span (the aligner of the built-in audio features). "
              "Without it, row k of a file is frame k.")
@click.option("--tolerance", default=5, show_default=True, type=click.IntRange(0),
              help="Frames by which a file may be shorter or longer than its video (missing rows are masked).")
@click.option("--overwrite", is_flag=True, help="Replace FEATURE_NAME if the cache has it from other files.")
def cache_import_cmd(cache_dir: Path, feature: str, folder: Path, timestamps: bool, tolerance: int,
                     overwrite: bool) -> None:
    """Import features computed elsewhere as CACHE/FEATURE_NAME.h5: DIR holds one <video_id>.npy
    (2-D array) or <video_id>.csv (numbers, optional header) per video id. NaN rows become
    masked rows; the files' sha256 go into the provenance. Resumable like extract."""
    from vafusion.extract.importer import import_features

    report = import_features(cache_dir, feature, folder, timestamps=timestamps, tolerance=tolerance,
                             overwrite=overwrite, warn=_warn_beside_bars)
    click.echo(f"{feature}: {report.imported} imported, {report.skipped} already there -> {report.path}")


@cache.command("derive")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--from", "source", required=True, metavar="FEATURE", help="The feature set to derive from, e.g. resnet50.")
@click.option("--pca", "k", required=True, type=click.IntRange(1), metavar="K",
              help="Keep the first K principal components (K <= the feature's dim).")
@click.option("--name", default=None, help="Name of the new feature set  [default: FEATURE-pcaK]")
@click.option("--overwrite", is_flag=True, help="Replace an existing file of that name made from another fit.")
@_compute_options(precision=False, stream=False)
def cache_derive_cmd(cache_dir: Path, source: str, k: int, name: str | None, overwrite: bool) -> None:
    """Write CACHE/NAME.h5: FEATURE projected on its first K principal components, float16, masks
    kept. The PCA is fitted on the present frames of the training ids of corpus.h5 only (validation
    and test ids are never read for the fit) and applied to every id; the file holds the fitted
    transform (transform/components, transform/mean) and names its parent's fingerprint. Written
    like an extraction: resumable, checksummed, one writer at a time."""
    from vafusion.cache.derive import derive_pca

    done = derive_pca(cache_dir, source, k, name=name, overwrite=overwrite)
    click.echo(f"{done.path}: {done.k} of {source}'s {done.source_dim} dims keep "
               f"{100 * done.explained_variance_ratio:.1f}% of the variance of {done.fit_frames} training frames ({done.fit_ids} ids); {done.written} videos written")


# ---- stage 1 commands -------------------------------------------------------------------


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int]:
    from vafusion.cache.schema import parse_shard

    if value is None:
        return (1, 1)
    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Cache directory to create or complete (corpus.h5 + one <feature>.h5 per feature).")
@click.option("--features", default="resnet50,vggish,logmel", show_default=True,
              help="Comma-separated, mixable: any torchvision classification model (resnet50, efficientnet_b0, "
                   "convnext_tiny, ...), vggish, logmel, a speech model (wav2vec2_base, hubert_base, wavlm_base_plus, "
                   "...; see README, Features), package.module:attribute for your own extractor, or a name an "
                   "installed package registers (entry points vafusion.extractors).")
@click.option("--videos", "videos_dirs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <name>.mp4|.avi (repeatable). Default: CORPUS/videos, raw_videos, batch1, batch2.")
@click.option("--faces", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <video_id>/00001.jpg face crops. Default: CORPUS/cropped_aligned.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder holding Train_Set/ and Validation_Set/. Default: CORPUS/annotations/VA_Estimation_Challenge.")
@click.option("--audio", "audio_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <name>.wav to use instead of the containers' audio tracks.")
@click.option("--test-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file of test video ids (one per line); they are extracted unlabelled.")
@click.option("--weights", "weights", multiple=True, metavar="FEATURE=SPEC",
              help="Weights of one feature (repeatable): random, default (the published weights, downloaded once "
                   "to TORCH_HOME) or a local PATH. Overrides --visual-weights/--vggish-weights for that feature.")
@click.option("--extractor-option", "extractor_options", multiple=True, metavar="FEATURE.KEY=VALUE",
              help="An option of one extractor (repeatable), recorded in the cache's provenance, e.g. "
                   "wav2vec2_base.layer=6 (see README, Features).")
@click.option("--visual-weights", default="imagenet", show_default=True,
              help="Weights of every torchvision model: imagenet (= default: torchvision's, downloads once to "
                   "TORCH_HOME), a local checkpoint PATH (state_dict, nested state_dict/model, module. prefixes ok), "
                   "or random.")
@click.option("--image-size", default=224, show_default=True, type=_ranged(ExtractOptions, "image_size"),
              help="Crops are resized to this square size (Aff-Wild2 crops are 112).")
@click.option("--vggish-weights", help="VGGish state_dict PATH (e.g. vggish-10086976.pth; see README) or random. "
              "Required when vggish is extracted.")
@click.option("--vggish-pca", type=click.Path(exists=True, dir_okay=False),
              help="Optional published PCA parameter file (.npz or .pth): PCA, clip and 8-bit quantisation.")
@click.option("--device", default="auto", show_default=True, type=DEVICE, help=DEVICE_HELP)
@click.option("--batch-size", default=64, show_default=True, type=_ranged(ExtractOptions, "batch_size"),
              help="Frames per backbone batch "
              "(batches span video boundaries).")
@click.option("--workers", type=_ranged(ExtractOptions, "workers"), help="DataLoader decoding processes [default: min(8, cores - 1)].")
@click.option("--shard", callback=_parse_shard, metavar="K/N",
              help="Extract only part K of N of the ids (parts of about equal frames, a video's _left/_right ids "
                   "together; the same split on every machine), into <feature>.shard-K-of-N.h5 files; combine "
                   "them later with `vafusion cache merge`.")
@click.option("--overwrite", is_flag=True, help="Discard what exists for these features and start afresh "
              "(by default a rerun resumes and extracts only what is missing).")
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True,
              help="HDF5 compression (none loads fastest; lzf/gzip for transfer).")
@click.option("--copy", is_flag=True, help="Under torchrun: rank 0 merges the ranks' shards by copying them into "
              "self-contained <feature>.h5 files instead of linking to them.")
@_compute_options(stream=False)
def extract(corpus: Path | None, cache_dir: Path, features: str, videos_dirs: tuple[Path, ...], faces: Path | None,
            annotations: Path | None, audio_dir: Path | None, test_list: Path | None, weights: tuple[str, ...],
            extractor_options: tuple[str, ...], visual_weights: str, image_size: int, vggish_weights: str | None,
            vggish_pca: str | None, device: str, batch_size: int, workers: int | None, shard: tuple[int, int],
            overwrite: bool, compression: str, copy: bool) -> None:
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

    opts = ExtractOptions(
        features=tuple(f.strip() for f in features.split(",") if f.strip()), weights=parse_weights(weights),
        extractor_options=parse_extractor_options(extractor_options), visual_weights=visual_weights,
        image_size=image_size, vggish_weights=vggish_weights, vggish_pca=vggish_pca, device=device,
        batch_size=batch_size, workers=workers, shard=shard, overwrite=overwrite,
        compression=None if compression == "none" else compression,
    )
    rank = torchrun_rank()
    if copy and rank is None:
        raise VafusionError("--copy: only under torchrun (shards of --shard K/N merge with "
                            "`vafusion cache merge --copy`)")
    found = discover_corpus(corpus, videos_dirs=list(videos_dirs) or None, faces_dir=faces,
                            annotations_dir=annotations, audio_dir=audio_dir, test_list=test_list)
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
        click.echo(f"corpus: {len(found.videos)} ids; cache: {cache_dir}; features: {', '.join(opts.features)}; "
                   f"{rank.world_size} ranks", err=True)
    result = extract_distributed(found, cache_dir, opts, rank, copy=copy,
                                 warn=lambda m: click.echo(f"warning: {m}", err=True))
    if rank.rank == 0:
        for r in result.ranks:
            for f in r["written"]:
                click.echo(f"rank {r['rank']}: {f}: {r['extracted'].get(f, 0)} extracted, "
                           f"{r['skipped'].get(f, 0)} already there")
        for merged in result.merged:
            click.echo(f"{'wrote' if merged.written else 'up to date'} {merged.path}")
        problems = [f"skipped id: {p}" for p in result.report.problems] + [
            f"rank {r['rank']} failed: {fail}" for r in result.ranks for fail in r["failures"]] + [
            f"not merged: {f}: {why}" for f, why in result.not_merged.items()]
        if problems:
            click.echo(f"{len(problems)} problem(s) (rerun the same command to resume):", err=True)
            for line in problems:
                click.echo(f"  {line}", err=True)
    if not result.ok:
        sys.exit(1)

# ---- stage 2 commands -------------------------------------------------------------------

# Flags of the CLI before models declared their own options: still accepted (hidden), each
# mapped onto the model option of that name, with a note pointing to --model-option.
_DEPRECATED_MODEL_FLAGS = {"--d-model": ("d_model", int), "--heads": ("heads", int), "--dropout": ("dropout", float),
                           "--ridge-alpha": ("alpha", float), "--ridge-context": ("context", int)}


def _data_options(feature_sets: bool = False):
    """--features, --window, --hop (DataConfig); ``feature_sets``: several sets, as `compare` takes them."""
    d = DataConfig()
    if feature_sets:
        features = click.option("--features", "features", multiple=True, default=[",".join(d.features)],
                                show_default=True,
                                help="Feature sets to compare, ';'-separated (repeatable), each comma-separated; "
                                     "the first feature of a set is its visual query stream.")
    else:
        features = click.option("--features", default=",".join(d.features), show_default=True,
                                help="Comma-separated feature sets of the cache; the first is the visual query "
                                     "stream, the others audio key/value streams (one alone = unimodal).")
    return _stacked([
        features,
        click.option("--window", default=d.window, show_default=True, type=_ranged(DataConfig, "window"),
                     help="Frames per training window."),
        click.option("--hop", default=d.hop, show_default=True, type=_ranged(DataConfig, "hop"),
                     help="Frames between window starts."),
    ])


def _model_options(several: bool = False):
    """--model (or --models), --model-option, --causal, and the deprecated per-model flags."""
    from vafusion.fusion.models import BUILTINS, DEFAULT_MODEL

    names = ", ".join(BUILTINS)
    if several:
        model = click.option("--models", "models", required=True,
                             help=f"Comma-separated models to compare: built-ins ({names}), package.module:Class, "
                                  f"or installed plug-in names (see `vafusion models`).")
    else:
        model = click.option("--model", default=DEFAULT_MODEL, show_default=True,
                             help=f"A built-in ({names}; 'fusion' = imf), package.module:Class, or an installed "
                                  f"plug-in's name. `vafusion models` lists them with their options.")
    scope = "each model that has it" if several else "the model"
    hidden = [click.option(flag, hidden=True, default=None, type=kind) for flag, (_, kind) in
              _DEPRECATED_MODEL_FLAGS.items()]
    return _stacked([
        model,
        click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
                     help=f"An option of {scope} (repeatable), e.g. d_model=64 or tcn_dilations=1,2,4; values are "
                          f"typed as the model declares (int, float, true/false, text). See `vafusion models`."),
        click.option("--causal", is_flag=True,
                     help="Causal model (no future frames; for online use): the model's 'causal' option. An error "
                          "for a model without one."),
        *hidden,
    ])


def _training_options(f):
    """--epochs ... --device (TrainingConfig)."""
    d = TrainingConfig()
    return _stacked([
        click.option("--epochs", default=d.epochs, show_default=True, type=_ranged(TrainingConfig, "epochs"),
                     help="Training epochs at most (--patience may stop earlier; closed-form models ignore it)."),
        click.option("--batch-size", default=d.batch_size, show_default=True, type=_ranged(TrainingConfig, "batch_size"),
                     help="Windows per step."),
        click.option("--lr", default=d.lr, show_default=True, type=_ranged(TrainingConfig, "lr"),
                     help="Peak AdamW learning rate."),
        click.option("--weight-decay", default=d.weight_decay, show_default=True,
                     type=_ranged(TrainingConfig, "weight_decay"),
                     help="AdamW weight decay."),
        click.option("--mse-weight", default=d.mse_weight, show_default=True, type=_ranged(TrainingConfig, "mse_weight"),
                     help="Weight of an extra MSE term in the loss."),
        click.option("--patience", default=d.patience, show_default=True, type=_ranged(TrainingConfig, "patience"),
                     help="Stop after this many epochs without a better validation P."),
        click.option("--seed", default=d.seed, show_default=True, type=_ranged(TrainingConfig, "seed"),
                     help="Seed of the initial weights, the shuffling and dropout (a ridge: its subsample)."),
        click.option("--device", default=d.device, show_default=True, type=DEVICE, help=DEVICE_HELP),
    ])(f)


def _parse_devices(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    from vafusion.fusion.parallel import parse_devices

    return None if value is None else parse_devices(value)


def _parallel_options(f):
    """--jobs, --devices: independent runs in worker processes (cv, compare)."""
    return _stacked([
        click.option("--jobs", "workers", type=click.IntRange(1), default=None,
                     help="Runs trained at once, each in its own process with an equal share of the CPU threads "
                          "(results equal a one-at-a-time run's up to float rounding); a run that fails is "
                          "reported at the end, the others finish.  [default: 1, or one per --devices entry]"),
        click.option("--devices", callback=_parse_devices, metavar="D1,D2,...",
                     help="Devices for the runs, e.g. cuda:0,cuda:1: worker processes go round-robin over them, "
                          "each keeps its device (overrides --device)."),
    ])(f)


def _model_option_values(model_options: tuple[str, ...], causal: bool, kw: dict) -> dict:
    """--model-option pairs, --causal and the deprecated flags (popped from ``kw``) as one options dict."""
    from vafusion.fusion.models import parse_model_options

    options = parse_model_options(model_options)
    for flag, (option, _) in _DEPRECATED_MODEL_FLAGS.items():
        value = kw.pop(flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if option in options:
            raise VafusionError(f"{flag} and --model-option {option}: give it once")
        click.echo(f"note: {flag} is deprecated; use --model-option {option}={value}", err=True)
        options[option] = value
    if causal:
        options["causal"] = True
    return options


def _parts(kw: dict) -> tuple[dict, dict]:
    """The DataConfig and TrainingConfig fields among the command's keyword arguments."""
    def take(cls) -> dict:
        return {f: kw[f] for f in cls.__dataclass_fields__ if f in kw}

    return take(DataConfig), take(TrainingConfig)


def _config(model: str, model_options: tuple[str, ...], causal: bool, features: str, **kw) -> "FusionConfig":  # noqa: F821
    from vafusion.fusion.config import FusionConfig, ModelConfig

    options = _model_option_values(model_options, causal, kw)
    data, training = _parts(kw)
    names = tuple(x.strip() for x in features.split(",") if x.strip())
    return FusionConfig(DataConfig(features=names, **data), ModelConfig(model, options), TrainingConfig(**training))


def _print_scores(title: str, scores: dict) -> None:
    click.echo(f"{title}: CCC_V {scores['ccc_v']:.4f}  CCC_A {scores['ccc_a']:.4f}  P {scores['p']:.4f}")


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory to create (config.json, best.pt, last.pt, metrics.jsonl, summary.json).")
@click.option("--split", type=click.Choice(["official", "folds"]), default=None,
              help="official: Train_Set trains, Validation_Set validates [default]. folds: both merged and "
                   "split by video (see --folds/--fold).")
@click.option("--folds", default=6, show_default=True, type=_ranged(DataConfig, "folds"),
              help="Number of folds (implies --split folds with --fold).")
@click.option("--fold", type=_ranged(DataConfig, "fold"), default=None,
              help="Which fold (1..N) validates; implies --split folds.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in RUN with the same options.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write RUN/report.html at the end.")
@_model_options()
@_data_options()
@_training_options
@_compute_options()
def train(cache_dir: Path, run_dir: Path, split: str | None, folds: int, fold: int | None, resume: bool,
          report: bool, **kw) -> None:
    """Train a model (by default imf, the paper's) on the features of CACHE.

    Needs only the cache: no corpus, no GPU, no extraction backbones. The best epoch by
    validation P = (CCC_V + CCC_A) / 2 is kept in RUN/best.pt.
    """
    from vafusion.fusion.train import train as run_train

    if split == "official" and fold is not None:
        raise VafusionError(f"--fold {fold} and --split official: the official split has no folds; drop one")
    split = split or ("folds" if fold is not None else "official")
    config = _config(split=split, folds=folds, fold=1 if fold is None else fold, **kw)
    result = run_train(cache_dir, run_dir, config, resume=resume, report=report, log=lambda m: click.echo(m, err=True))
    _print_scores(f"best epoch {result.best['epoch']} ({run_dir})", result.best)


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runs", "runs_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the fold runs (RUNS/fold-1 ... fold-N; with --seeds K > 1 RUNS/fold-K/seed-S), "
                   "cv.json, post.json and cv.html. Rerun the same command to continue: finished runs are kept, an "
                   "interrupted one resumes.")
@click.option("--folds", default=6, show_default=True, type=_ranged(DataConfig, "folds"),
              help="Folds: train and validation ids merged and split by video (a video's _left/_right ids stay "
                   "together) into N parts; each validates once.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1),
              help="Runs per fold: seeds --seed, --seed + 1, ...; `predict RUNS/fold-*` averages them all.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html in each fold's run.")
@_parallel_options
@_model_options()
@_data_options()
@_training_options
@_compute_options()
def cv(cache_dir: Path, runs_dir: Path, folds: int, seeds: int, report: bool, workers: int | None,
       devices: list[str] | None, **kw) -> None:
    """Cross-validate: train every fold (train and validation ids merged, split by video)
    and report each fold's CCC_V, CCC_A, P and their mean ± std.

    Each run's validation predictions are kept (RUN/val_predictions.npz). On these out-of-fold
    predictions cv chooses, per dimension, a smoothing (mean or median, up to 3 s) and a shift
    (within ±1 s) of the predictions, and writes the choice to RUNS/post.json, which `predict`
    applies. The gain it prints is nested (each fold scored with the choice made on the other
    folds); a dimension is post-processed only where that gain is positive. RUNS/cv.html shows it all.
    """
    from vafusion.fusion.cv import cross_validate
    from vafusion.fusion.postprocess import DimPost

    config = _config(split="folds", folds=folds, fold=1, **kw)
    summary = cross_validate(cache_dir, runs_dir, config, seeds=seeds, report=report, workers=workers, devices=devices,
                             log=lambda m: click.echo(m, err=True))
    click.echo(f"{'fold':>6} {'CCC_V':>8} {'CCC_A':>8} {'P':>8}" + ("  (mean over seeds)" if seeds > 1 else ""))
    for row in summary["folds"]:
        click.echo(f"{row['fold']:>6} {row['ccc_v']:>8.4f} {row['ccc_a']:>8.4f} {row['p']:>8.4f}")
    click.echo(" ".join([f"{'mean':>6}"] + [f"{summary[m]['mean']:>8.4f}" for m in ("ccc_v", "ccc_a", "p")]))
    click.echo(" ".join([f"{'± std':>6}"] + [f"{summary[m]['std']:>8.4f}" for m in ("ccc_v", "ccc_a", "p")]))
    oof = summary["out_of_fold"]
    click.echo(f"out-of-fold (all folds pooled): CCC_V {oof['ccc_v']:.4f}  CCC_A {oof['ccc_a']:.4f}  P {oof['p']:.4f}")
    for name in ("valence", "arousal"):
        d = summary["post"]["fit"][name]
        click.echo(f"post-processing {name}: {DimPost(**d['best']).describe()}: CCC {d['ccc_before']:.4f} -> "
                   f"{d['ccc_nested']:.4f} nested ({d['gain_nested']:+.4f}; in-sample {d['gain_in_sample']:+.4f})"
                   + ("" if d["applied"] else "; not applied (no nested gain)"))
    click.echo(f"wrote {runs_dir / 'post.json'}, {runs_dir / 'cv.json'}, {runs_dir / 'cv.html'}")


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runs", "runs_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the runs (RUNS/<model>/<features>/seed-<s>[/fold-<k>]), compare.json and "
                   "compare.html. Rerun the same command to continue: finished runs are kept, an interrupted "
                   "one resumes from its last.pt.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1),
              help="Seeds per model and feature set: --seed, --seed + 1, ...")
@click.option("--split", type=click.Choice(["official", "folds"]), default=None,
              help="official: Train_Set trains, Validation_Set validates [default]. folds: every fold of --folds.")
@click.option("--folds", type=_ranged(DataConfig, "folds"), default=None,
              help="Cross-validate every run over N folds (implies --split folds)  [default with --split folds: 6].")
@click.option("--json", "as_json", is_flag=True, help="Print compare.json instead of the table.")
@click.option("--report/--no-report", default=False, show_default=True, help="Also write each run's report.html.")
@_parallel_options
@_model_options(several=True)
@_data_options(feature_sets=True)
@_training_options
@_compute_options()
def compare(cache_dir: Path, runs_dir: Path, seeds: int, split: str | None, folds: int | None, as_json: bool,
            report: bool, workers: int | None, devices: list[str] | None, models: str, model_options: tuple[str, ...],
            causal: bool, features: tuple[str, ...], **kw) -> None:
    """Train every model x feature set x seed (x fold) on CACHE with the same data, and compare them:
    CCC_V, CCC_A, P as mean ± std over seeds and folds, in RUNS/compare.json and RUNS/compare.html
    (table and bar chart). Prints the table."""
    from vafusion.fusion.compare import compare as run_compare, format_table

    options = _model_option_values(model_options, causal=False, kw=kw)
    data, training = _parts(kw)
    split = split or ("folds" if folds is not None else "official")
    sets = [tuple(f.strip() for f in s.split(",") if f.strip()) for group in features for s in group.split(";")
            if s.strip()]
    result = run_compare(cache_dir, runs_dir, [m.strip() for m in models.split(",") if m.strip()], sets,
                         data=DataConfig(split=split, folds=folds or 6, **data), training=TrainingConfig(**training),
                         seeds=seeds, model_options=options, causal=causal, report=report, workers=workers,
                         devices=devices, log=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result["summary"]))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List every model (built-ins and installed plug-ins) with its options, defaults and a
    line of description. Choose one with --model NAME and set options with --model-option KEY=VALUE."""
    from vafusion.fusion.models import ALIASES, list_models

    specs, problems = list_models()
    aliases = {target: [a for a, t in ALIASES.items() if t == target] for target in set(ALIASES.values())}
    if as_json:
        click.echo(json.dumps([{"name": s.name, "ref": s.ref, "origin": s.origin, "description": s.description,
                                "aliases": aliases.get(s.name, []), "closed_form": s.closed_form,
                                "options": [{"name": o.name, "type": o.type_name, "default": o.default, "help": o.help}
                                            for o in s.options.values()]} for s in specs], indent=2))
    else:
        for spec in specs:
            also = f", also '{', '.join(aliases[spec.name])}'" if spec.name in aliases else ""
            click.echo(f"{spec.name}  ({spec.origin}{also})\n  {spec.description}")
            width = max([len(f"{o.name}={o.shown(o.default)}") for o in spec.options.values()] or [0])
            for o in spec.options.values():
                about = f"{o.help} ({o.type_name})" if o.help else f"({o.type_name})"
                click.echo(f"    {f'{o.name}={o.shown(o.default)}':<{width}}  {about}")
            click.echo("")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--cache", "cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Cache to evaluate on [default: the one RUN was trained on].")
@click.option("--partition", type=click.Choice(["validation", "train"]), default="validation", show_default=True,
              help="The run's own validation (or training) ids.")
@click.option("--device", default="auto", show_default=True, type=DEVICE, help=DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_compute_options()
def evaluate(run_dir: Path, cache_dir: Path | None, partition: str, device: str, as_json: bool) -> None:
    """Score RUN on a partition the challenge way: CCC_V, CCC_A, P over all its frames,
    plus a per-id table."""
    from vafusion.fusion.predict import evaluate_run

    scores = evaluate_run(run_dir, cache_dir, partition, device)
    if as_json:
        click.echo(json.dumps(scores, indent=2))
        return
    click.echo(f"{'id':<28} {'frames':>7} {'CCC_V':>8} {'CCC_A':>8} {'P':>8}")
    for row in scores["per_id"]:
        click.echo(f"{row['id']:<28} {row['frames']:>7} {row['ccc_v']:>8.4f} {row['ccc_a']:>8.4f} {row['p']:>8.4f}")
    _print_scores(f"{partition} ({scores['ids']} ids)", scores)


@cli.command()
@click.argument("run_dirs", metavar="RUN [RUN ...]", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cache", "cache_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Directory for the <video_id>.txt prediction files and predictions.json (what made them), "
                   "which appear together once all are written (a set there before is replaced); with --sample, "
                   "the one submission file.")
@click.option("--sample", type=click.Path(path_type=Path),
              help="The organisers' *_ABAW_VA_test_set_sample.txt: write the single file the challenge takes "
                   "(image_location,valence,arousal; its rows, in its order) for its videos.")
@click.option("--ids", default=None, help="test (the cache's test ids), all, or a FILE of ids  [default: test; with "
              "--sample: the sample's videos].")
@click.option("--post", default="auto", show_default=True, metavar="auto|none|FILE",
              help="Post-processing: auto applies the post.json that `vafusion cv` wrote beside the runs (in their "
                   "common folder, above fold-K/seed-S folders), if there is one; none: raw predictions; FILE: that "
                   "post.json.")
@click.option("--smooth", default=None, type=click.IntRange(1),
              help="Overrides --post: a centred moving average over N frames of both dimensions (1 = none).")
@click.option("--device", default="auto", show_default=True, type=DEVICE, help=DEVICE_HELP)
@_compute_options()
def predict(run_dirs: tuple[Path, ...], cache_dir: Path, out: Path, sample: Path | None, ids: str | None, post: str,
            smooth: int | None, device: str) -> None:
    """Write ABAW-format predictions, clipped to [-1, 1]: one <video_id>.txt per id (header
    valence,arousal; one row per frame), or with --sample the single submission file.

    Every RUN is averaged, each weighing the same: give run directories or directories holding
    runs (RUNS, RUNS/fold-*, RUNS/fold-*/seed-* of `vafusion cv` all mean every seed of every
    fold); a run named twice is an error. With --sample, a video's rows past its last frame
    repeat its last prediction and frames the sample does not list are dropped; each video
    whose count differs is listed. Check the file with `vafusion check-submission`.
    """
    from vafusion.fusion.predict import predict_submission, predict_to_dir
    from vafusion.fusion.prediction_files import MANIFEST

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if sample is None:
        written = predict_to_dir(list(run_dirs), cache_dir, out, ids=ids or "test", smooth=smooth, post=post,
                                 device=device, log=log)
        click.echo(f"wrote {len(written)} prediction files and {MANIFEST} to {out}")
        return
    if ids is not None:
        raise VafusionError(f"--ids {ids} and --sample: the sample names the videos; give one of them")
    differences = predict_submission(list(run_dirs), cache_dir, sample, out, smooth=smooth, post=post, device=device,
                                     log=log)
    if differences:
        click.echo(f"{len(differences)} video(s) whose sample row count differs from the cache's frames:", err=True)
        for d in differences:
            click.echo(f"  {d.describe()}", err=True)
    click.echo(f"wrote {out}; check it with: vafusion check-submission {out} --sample {sample}")


@cli.command("check-submission")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--sample", required=True, type=click.Path(path_type=Path),
              help="The organisers' *_ABAW_VA_test_set_sample.txt the file must match.")
def check_submission_cmd(file: Path, sample: Path) -> None:
    """Check a submission FILE against the organisers' sample: header image_location,valence,arousal;
    exactly the sample's rows, in its order, each once; two numbers per row, finite, in [-1, 1].
    Every problem is listed with its line (the first 10 of each kind, then a count); exit code 1
    on any."""
    from vafusion.fusion.submission import check_submission, read_sample

    parsed = read_sample(sample)
    result = check_submission(file, parsed)
    for line in result.lines():
        click.echo(f"problem: {line}", err=True)
    if not result.ok:
        click.echo(f"{file}: {result.total} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{file}: ok ({result.rows} rows, {len(parsed.videos)} videos, as in {sample})")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--cache", "cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Cache to predict the validation ids from [default: the one RUN was trained on].")
@click.option("--ids", "n_ids", default=3, show_default=True, type=click.IntRange(0),
              help="Validation ids shown over time (spread over the ranking by P: best, median, worst).")
@click.option("--device", default="auto", show_default=True, type=DEVICE, help=DEVICE_HELP)
@_compute_options()
def report(run_dir: Path, cache_dir: Path | None, n_ids: int, device: str) -> None:
    """Write RUN/report.html (with figures in RUN/figures/): configuration, learning curves,
    predictions against labels over time and in the valence-arousal plane, per-id CCC.
    Opens offline in any browser."""
    from vafusion.fusion.report import write_report

    click.echo(write_report(run_dir, cache_dir, n_ids=n_ids, device=device))


@cli.command()
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Empty or new directory for the corpus, cache, runs and report.")
@click.option("--size", default="demo", show_default=True, type=click.Choice(["tiny", "small", "demo", "large"]),
              help="Corpus size preset (vafusion.synth.SIZES).")
@click.option("--device", default="auto", show_default=True, type=DEVICE, help=DEVICE_HELP)
@click.option("--seed", default=0, show_default=True, type=_ranged(TrainingConfig, "seed"),
              help="Seed of the corpus and of every run.")
def demo(out: Path, size: str, device: str, seed: int) -> None:
    """Generate a corpus, extract features (random backbone weights), and compare the paper's
    model (imf) with the ridge baseline on all features and on each stream alone, on held-out ids."""
    from vafusion.demo import run_demo
    from vafusion.fusion.compare import format_table

    result = run_demo(out, size=size, device=device, seed=seed, echo=lambda m: click.echo(m, err=True))
    click.echo(format_table(result["summary"]))


def reference_markdown() -> str:
    """Every command's ``--help``, as the README's CLI reference (a test keeps them equal)."""
    sections = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
        sections.append(f"### `{' '.join(path)}`\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], path + [name], ctx)

    walk(cli, ["vafusion"], None)
    return "\n".join(sections)


def main() -> None:
    # Before torch loads OpenMP: idle threads sleep instead of spinning, so a core another process
    # needs is not taken from it (BENCHMARKS.md, section 8). A value set by the user is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cli(prog_name="vafusion")


if __name__ == "__main__":
    sys.exit(main())
