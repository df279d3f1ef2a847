"""The extraction run: corpus in, feature cache out, resumable, one bad video never stops it.

A thin orchestrator: resolve the extractors (:mod:`.registry`), open one writer per
feature, run every frame extractor through its own frame pass (:mod:`.frame_pass`) and
all track extractors through one track pass (:mod:`.track_pass`), finalize. An extractor
that breaks the contract or raises stops its own feature (reported at the end, exit 1);
the other features are still written, and the failed one resumes from what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vafusion.cache import schema, split
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index, write_corpus_index
from vafusion.cache.writer import FeatureWriter
from vafusion.device import precision, resolve_device
from vafusion.errors import VafusionError, show_chain
from vafusion.extract import registry
from vafusion.extract.assembly import Failure, Outcome
from vafusion.extract.contract import ExtractorError, to_device
from vafusion.extract.corpus import Corpus, discover_corpus
from vafusion.extract.frame_pass import frame_pass
from vafusion.extract.like import first_difference
from vafusion.extract.options import ExtractOptions
from vafusion.extract.registry import Resolved
from vafusion.extract.track_pass import track_pass

__all__ = ["ExtractOptions", "ExtractReport", "Failure", "extract"]


@dataclass
class ExtractReport:
    cache: Path
    written: dict[str, Path] = field(default_factory=dict)
    extracted: dict[str, int] = field(default_factory=dict)  # videos newly extracted per feature
    skipped: dict[str, int] = field(default_factory=dict)  # already in the cache
    failures: list[Failure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # corpus problems (malformed annotations ...)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems


def _provenance(resolved: Resolved, device: torch.device) -> dict:
    """The extractor's provenance, plus ``precision`` when the CPU computes in bf16 (``--precision``).

    Only then: fp32 provenance stays byte-identical to what it always was, so existing caches
    keep their fingerprints, while bf16 and fp32 features never mix in one file.
    """
    prov = resolved.provenance()
    if device.type == "cpu" and precision() != "fp32":
        prov = dict(prov, precision=precision())
    return prov


def _require_like(opts: ExtractOptions, entry: str, resolved: Resolved, device: torch.device) -> None:
    """With ``--like``: the feature's provenance must be the model cache's, to the byte (its fingerprint)."""
    expected = opts.like.get(entry)
    if expected is None:
        return
    prov = _provenance(resolved, device)
    if schema.fingerprint(prov) != expected["fingerprint"]:
        raise VafusionError(
            f"--like: {resolved.name} would not be extracted as in that cache "
            f"({first_difference(expected['provenance'], prov)}); give the setting that differs "
            f"(--weights {entry}=PATH, --extractor-option {entry}.KEY=VALUE, --precision)"
        )


def _build_all(
    opts: ExtractOptions, report: ExtractReport, note: Callable[[str], None], device: torch.device
) -> list[Resolved]:
    """Build every extractor before anything is written (a bad weights file fails the run early).

    A user's extractor that cannot be imported, built or moved fails its own feature only.
    """
    built: list[Resolved] = []
    for entry in opts.features:
        try:
            resolved = registry.build(entry, opts.extractor_settings())
            resolved.extractor = to_device(resolved.extractor, device, resolved.source)
            weights = resolved.provenance().get("weights")
        except ExtractorError as e:
            show_chain(e)
            report.failures.append(Failure(None, entry, str(e)))
            continue
        except VafusionError as e:
            if registry.is_builtin(entry):
                raise
            show_chain(e)
            report.failures.append(Failure(None, entry, str(e)))
            continue
        _require_like(opts, entry, resolved, device)
        if weights == "random":
            note(f"{resolved.name} uses RANDOM weights (fine for tests and demos, not for real results)")
        built.append(resolved)
    names = [r.name for r in built]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VafusionError(f"--features: two extractors write the feature {twice[0]!r}; keep one")
    return built


def _prepare_cache(cache: Path, index: CorpusIndex, source: str, opts: ExtractOptions) -> None:
    corpus_file = cache / schema.CORPUS_FILE
    if corpus_file.exists():
        existing = read_corpus_index(cache)
        if existing.fingerprint == index.fingerprint:
            return
        if not opts.overwrite:
            changes = existing.differences(index)
            detail = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
            raise VafusionError(
                f"{corpus_file}: the cache was made from another corpus ({detail or 'other content'}); "
                f"use a new --cache directory, or --overwrite to start this one afresh"
            )
    write_corpus_index(cache, index, source=source)


def _open_writers(
    cache: Path,
    built: list[Resolved],
    corpus_fingerprint: str,
    opts: ExtractOptions,
    ids: list[str],
    device: torch.device,
) -> dict[str, FeatureWriter]:
    """One writer per feature, each refusing a shard whose files hold ids it does not own (another split)."""
    writers: dict[str, FeatureWriter] = {}
    try:
        for r in built:
            writers[r.name] = FeatureWriter(
                cache,
                r.name,
                r.extractor.dim,
                _provenance(r, device),
                corpus_fingerprint,
                shard=opts.shard,
                overwrite=opts.overwrite,
                compression=opts.compression,
                split=schema.SPLIT_RULE,
                kind=r.extractor.kind,
            )
            writers[r.name].require_owned(ids)
    except VafusionError:
        for writer in writers.values():
            writer.close()
        raise
    return writers


def _record(
    report: ExtractReport, feature: str, writer: FeatureWriter, outcome: Outcome, note: Callable[[str], None]
) -> None:
    report.failures += outcome.failures
    underflow = outcome.underflow(feature)
    if underflow:
        note(underflow)
    report.extracted[feature] = outcome.written
    if not outcome.aborted:
        report.written[feature] = writer.finalize()
    else:  # a feature that stopped early keeps the parts it wrote (if any): a rerun resumes from them
        writer.close()


def extract(
    corpus: Corpus | str | Path,
    cache: str | Path,
    opts: ExtractOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> ExtractReport:
    """Extract ``opts.features`` for every video of ``corpus`` (or of ``opts.shard``) into ``cache``.

    Resumable: rerunning the same call after an interruption extracts only what is missing.
    Never raises for a single bad video or a broken plug-in: see ``report.failures``.
    """
    opts = opts or ExtractOptions()
    cache = Path(cache)
    if not isinstance(corpus, Corpus):
        corpus = discover_corpus(corpus)
    report = ExtractReport(cache=cache)
    report.problems = [str(p) for p in corpus.problems]
    warn_fn = warn or (lambda msg: None)

    def note(msg: str) -> None:
        report.warnings.append(msg)
        warn_fn(msg)

    for msg in corpus.warnings:
        note(msg)

    index = corpus.index()
    if not len(index):
        raise VafusionError("the corpus has no usable video ids (see the problems above)")
    device = resolve_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    built = _build_all(opts, report, note, device)
    _prepare_cache(cache, index, str(corpus.root or ""), opts)
    mine = set(split.shard_ids(index, opts.shard))
    videos = [v for v in corpus.videos if v.entry.id in mine]
    ids = [v.entry.id for v in videos]
    writers = _open_writers(cache, built, index.fingerprint, opts, ids, device)
    pending = {f: set(w.pending(ids)) for f, w in writers.items()}
    for f in writers:
        report.skipped[f] = len(ids) - len(pending[f])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vafusion-writer") as pool:
        for r in (r for r in built if r.extractor.kind == "frame"):
            todo = [v for v in videos if v.entry.id in pending[r.name]]
            outcome = frame_pass(todo, writers[r.name], r, opts, device, pool, note)
            _record(report, r.name, writers[r.name], outcome, note)
        tracks = {r.name: r for r in built if r.extractor.kind == "track"}
        if tracks:
            todo = [v for v in videos if any(v.entry.id in pending[f] for f in tracks)]
            outcomes = track_pass(todo, {f: writers[f] for f in tracks}, tracks, pending, opts, device, pool, note)
            for f, outcome in outcomes.items():
                _record(report, f, writers[f], outcome, note)
    return report
