"""Training a model from a cache into a run directory.

The cache is loaded into RAM once. A model trained by gradient steps (a ``torch.nn.Module``)
trains each epoch on shuffled windows (a grid shifted at random per video and epoch, or the
fixed grid of the ``v1`` recipe) on 1 - CCC, then scores the validation ids the challenge
way (overlap-averaged per frame, CCC over the whole partition); the best epoch by
P = (CCC_V + CCC_A) / 2 is kept in ``best.pt``, and ``last.pt`` holds everything needed to
resume exactly (optimiser, schedule, RNG state, precision). A model fitted in closed form (the
ridge) is fitted once on the training videos and scored the same way. Which of the two a model
is comes from its class (:mod:`vafusion.fusion.models`), never from its name.

Time is part of the result: every metrics.jsonl row holds the epoch's wall ``seconds`` and the
``elapsed`` seconds of the run so far (start-up included; a resumed run adds its own), and
summary.json ``train_seconds`` and ``seconds_to_best``. ``on_epoch`` (a tuner's pruner, say)
sees each epoch's row and can stop the run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vafusion.atomic import atomic_path
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.device import (
    autocast,
    device_precision,
    precision,
    precision_asked,
    precision_in_force,
    resolve_device,
)
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, remove_stale_temporaries
from vafusion.fusion.data.batches import Batch, iterate_batches
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import LoadedCache, load_cache
from vafusion.fusion.data.scores import partition_score
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import phase_windows, random_windows, windows_with_labels
from vafusion.fusion.metrics import ccc_loss
from vafusion.fusion.models import contract, count_parameters
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import CONFIG_FILE, FusionConfig, TrainingConfig, replace
from vafusion.fusion.runs.infer import predict_loaded, video_streams
from vafusion.fusion.runs.run_dir import RunState, clear_partial, one_trainer_at_a_time, read_summary, run_state
from vafusion.fusion.runs.schedule import lr_factor, stop_reason

EpochHook = Callable[[dict[str, Any]], Any]
"""``on_epoch(row)``: called after each epoch with its metrics.jsonl row; a true return stops the run
(finished); raising :class:`PauseTraining` ends this session with the run left to resume."""


class PauseTraining(Exception):
    """Raised by an ``on_epoch`` hook to end the session after this epoch with the run resumable, not
    finished (a tuner's deadline): the epoch is kept (last.pt, with no stop of the caller's in it) and the
    exception goes on to the caller; ``train(..., resume=True)`` continues at the next epoch. If the run
    stops there anyway (its last epoch, an early stop), it is finished as usual and nothing is raised."""


@dataclass
class TrainResult:
    run_dir: Path
    best: dict[str, Any]  # metrics of the best epoch: epoch, ccc_v, ccc_a, p, ...
    epochs_run: int
    parameters: int
    seconds: float | None = None  # wall seconds of the training (all sessions of a resumed run)
    seconds_to_best: float | None = None  # elapsed seconds when the best epoch was scored
    precision: str = "fp32"


def _fingerprints(loaded: LoadedCache) -> dict[str, Any]:
    return {
        "corpus": loaded.corpus_fingerprint,
        "features": dict(loaded.feature_fingerprints),
        "cache": str(Path(loaded.cache_dir).resolve()),
    }


def _cache_for(
    cache_dir: Path, config: FusionConfig, ids: list[str], index: CorpusIndex, progress: bool, given: LoadedCache | None
) -> LoadedCache:
    """The run's data: ``given`` (read once by a caller that trains many runs on it), else read now."""
    gate = config.data.audio_where_speech
    if given is None:
        return load_cache(cache_dir, config.data.features, ids, index=index, progress=progress, audio_where_speech=gate)
    ours = (cache_dir.resolve(), tuple(config.data.features), ids, index.fingerprint, gate)
    theirs = (Path(given.cache_dir).resolve(), given.features, given.ids, given.corpus_fingerprint)
    if (*theirs, given.audio_where_speech) != ours:
        raise ValueError(f"train(loaded=...): not this run's ids and features of {cache_dir} (or not its audio gate)")
    return given


def _prepare_run_dir(
    run_dir: Path, config: FusionConfig, resume: bool, log: Callable[[str], None]
) -> tuple[RunState, FusionConfig]:
    """Apply the rules of :mod:`vafusion.fusion.runs.run_dir`: start (again), resume, or nothing left to do; the
    configuration to train (a run continued keeps its own: settings it predates keep the values it used)."""
    state = run_state(run_dir, config, resume)
    if state is not RunState.NEW:
        config = replace(FusionConfig.load(run_dir), device=config.training.device)
    if state is RunState.NEW:
        if resume and (run_dir / CONFIG_FILE).is_file():
            log(f"{run_dir}: the interrupted run stopped before its first {ckpt_mod.LAST}: starting it again")
        elif resume:
            log(f"{run_dir}: nothing to resume yet: starting the run")
        make_dir(run_dir, "run directory")
        clear_partial(run_dir)
        config.save(run_dir)
    remove_stale_temporaries(run_dir)
    return state, config


def _finished(run_dir: Path, log: Callable[[str], None]) -> TrainResult:
    summary = read_summary(run_dir) or {}
    best = summary["best"]
    log(f"{run_dir}: finished before, not trained again (P {best['p']:.4f})")
    return TrainResult(
        run_dir,
        best,
        int(summary.get("epochs_run") or 0),
        int(summary.get("parameters") or 0),
        summary.get("train_seconds"),
        summary.get("seconds_to_best"),
        str(summary.get("precision") or "fp32"),
    )


@one_trainer_at_a_time
def train(
    cache_dir: str | Path,
    run_dir: str | Path,
    config: FusionConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_trained: Callable[[Path, LoadedCache], None] | None = None,
    on_epoch: EpochHook | None = None,
    loaded: LoadedCache | None = None,
) -> TrainResult:
    """Train ``config`` on ``cache_dir``, writing checkpoints and metrics into ``run_dir``.

    ``on_trained(run_dir, loaded)``: what the caller adds to a run once trained, before ``summary.json``
    (e.g. its report, :func:`vafusion.fusion.reports.run.report_on_trained`: training itself writes no
    page and needs no matplotlib), given the cache the trainer loaded so nothing is read twice.
    ``summary.json`` is written last, so its presence means the run is finished, ``on_trained`` included;
    a run found finished is not trained again and ``on_trained`` is not called.
    ``resume``: finish what ``run_dir`` holds of this same configuration (resume from ``last.pt``,
    start again, or nothing left to do; see :mod:`vafusion.fusion.runs.run_dir`); without it a
    directory holding checkpoints is an error. ``on_epoch(row)`` is called after every epoch
    with its metrics row (``epoch``, ``loss``, ``ccc_v``, ``ccc_a``, ``p``, ``lr``, ``seconds``,
    ``elapsed``); returning a true value stops the run there (it is then finished, like an early stop);
    raising :class:`PauseTraining` ends this session after the epoch, the run left to resume.
    ``loaded``: this run's ids and features of ``cache_dir``, already read (a tuner's trials share one
    read); else read here.
    """
    started = time.perf_counter()
    log = log or (lambda msg: None)
    cache_dir, run_dir = Path(cache_dir), Path(run_dir)
    index = read_corpus_index(cache_dir)
    train_ids, val_ids = split_ids(index, config.data)
    state, config = _prepare_run_dir(run_dir, config, resume, log)
    if state is RunState.FINISHED:
        return _finished(run_dir, log)
    loaded = _cache_for(cache_dir, config, train_ids + val_ids, index, progress, loaded)
    standardizer = Standardizer.fit(loaded, train_ids)
    log(
        f"{len(train_ids)} train ids ({int(loaded.lengths[loaded.positions(train_ids)].sum())} frames), "
        f"{len(val_ids)} validation ids; features "
        f"{', '.join(f'{f} ({d})' for f, d in zip(loaded.features, loaded.dims))}"
    )
    ids = (train_ids, val_ids)
    if config.model.spec.closed_form:
        result = _fit_closed_form(loaded, standardizer, config, run_dir, ids, started)
    else:
        clock = _Clock(started)
        result = _train_by_gradient(
            loaded, standardizer, config, run_dir, ids, state is RunState.RESUMABLE, progress, log, clock, on_epoch
        )
    if on_trained is not None:
        on_trained(run_dir, loaded)
    _write_summary(run_dir, config, result)
    return result


def _write_summary(run_dir: Path, config: FusionConfig, result: TrainResult) -> None:
    """summary.json, the run's last file (its presence means the run is finished)."""
    summary = {
        "best": result.best,
        "model": config.model.name,
        "features": list(config.data.features),
        "parameters": result.parameters,
        "epochs_run": result.epochs_run,
        "split": config.data.split,
        "fold": config.data.fold if config.data.split == "folds" else None,
        "precision": result.precision,
        "train_seconds": result.seconds,
        "seconds_to_best": result.seconds_to_best,
    }
    with atomic_path(run_dir / ckpt_mod.SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def _fit_closed_form(
    loaded: LoadedCache,
    standardizer: Standardizer,
    config: FusionConfig,
    run_dir: Path,
    ids: tuple[list[str], list[str]],
    started: float,
) -> TrainResult:
    """One ``fit`` on the training videos (nothing to resume: a rerun fits again)."""
    train_ids, val_ids = ids
    model = config.build_model(list(loaded.dims))
    feats, present = video_streams(loaded, standardizer, train_ids)
    labels = [loaded.labels[loaded.rows(v)] for v in train_ids]
    contract.guarded(config.model.name, "fit", model.fit, feats, present, labels, seed=config.training.seed)
    scores = partition_score(loaded, predict_loaded(model, config, standardizer, loaded, val_ids), val_ids)
    best = {"epoch": 0, "ccc_v": scores["ccc_v"], "ccc_a": scores["ccc_a"], "p": scores["p"]}
    if not math.isfinite(best["p"]):  # as a gradient run without a finite score: no best.pt, one line
        stop = f"{contract.label(config.model.name)} predicted non-finite values"
        _require_a_best(run_dir, {}, config.training, 1, stop, "fix its fit or predict, then train again")
    seconds = time.perf_counter() - started
    ckpt_mod.append_metrics(run_dir, dict(best, loss=None, seconds=seconds, elapsed=seconds))
    checkpoint = ckpt_mod.make_checkpoint(
        config, list(loaded.dims), standardizer, model, _fingerprints(loaded), best, 0
    )
    ckpt_mod.save_atomic(checkpoint, run_dir / ckpt_mod.BEST)
    return TrainResult(run_dir, best, 0, count_parameters(model, config.model.name), seconds, seconds, precision())


@dataclass
class _Clock:
    """Wall seconds of a run: ``elapsed()`` since it started, over all its sessions (a resume adds ``before``)."""

    started: float  # time.perf_counter() when this session's train() began
    before: float = 0.0  # elapsed seconds of the sessions before this one (from the last kept metrics row)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started


def _train_by_gradient(
    loaded: LoadedCache,
    standardizer: Standardizer,
    config: FusionConfig,
    run_dir: Path,
    ids: tuple[list[str], list[str]],
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    clock: _Clock,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Epochs of gradient steps, each scored on the validation ids and checkpointed, until ``epochs`` or a stop.

    The steps of an epoch (train, validate, keep) are methods of :class:`_GradientRun`, which also
    holds what last.pt saves, so this function reads as the recipe and a resumed run takes the
    same path as a straight one. The epochs run in the run's precision (:meth:`_GradientRun.resume`).
    """
    train_ids, val_ids = ids
    run = _GradientRun.start(loaded, standardizer, config, run_dir, train_ids)
    start_epoch = run.resume(log, clock) if resume else 1
    with precision_in_force(run.precision):
        epoch = _epochs(run, start_epoch, val_ids, progress, log, clock, on_epoch)
    rows = ckpt_mod.read_metrics(run_dir)
    seconds = rows[-1].get("elapsed") if rows else None
    at_best = next((r.get("elapsed") for r in rows if r["epoch"] == run.best.get("epoch")), None)
    return TrainResult(run_dir, run.best, epoch, run.parameters, seconds, at_best, run.recorded_precision)


def _epochs(
    run: _GradientRun,
    start_epoch: int,
    val_ids: list[str],
    progress: bool,
    log: Callable[[str], None],
    clock: _Clock,
    on_epoch: EpochHook | None,
) -> int:
    """Train, validate and keep epoch after epoch until the last one or a stop; the last epoch run."""
    tc, config, run_dir = run.config.training, run.config, run.run_dir
    log(
        f"model {config.model.name}: {run.parameters:,} parameters, {len(run.windows)} training windows of "
        f"{config.data.window} frames{_every(config.training.stride)} ({tc.windows} grid, {tc.schedule} schedule), "
        f"device {run.device}, "
        f"{torch.get_num_threads()} threads, {run.recorded_precision}, "
        f"features {'in RAM' if run.loaded.in_memory else 'streamed'}"
    )
    bar = tqdm(
        range(start_epoch, tc.epochs + 1),
        desc="train",
        unit="epoch",
        disable=None if progress else True,
        initial=start_epoch - 1,
        total=tc.epochs,
        dynamic_ncols=True,
    )
    epoch = start_epoch - 1
    for epoch in bar if not run.stop else ():
        began = time.perf_counter()
        loss = run.train_epoch(epoch)
        row = run.validate(epoch, loss, val_ids, seconds=time.perf_counter() - began, elapsed=clock.elapsed())
        try:
            asked = bool(on_epoch and on_epoch(dict(row)))
        except PauseTraining:
            run.keep(row, epoch)
            if not run.stop and epoch < tc.epochs:
                raise
        else:
            run.keep(row, epoch, stopped_by_caller=asked)
        bar.set_postfix(
            loss=f"{row['loss']:.3f}",
            ccc_v=f"{row['ccc_v']:.3f}",
            ccc_a=f"{row['ccc_a']:.3f}",
            best_p=f"{run.best['p']:.3f}",
        )
        if run.stop:
            log(f"stopped after epoch {epoch}: {run.stop}")
            break
    bar.close()
    _require_a_best(run_dir, run.best, tc, epoch, run.stop)
    return epoch


def _every(stride: int) -> str:
    """How the log line names a stride (nothing for 1)."""
    return f" (stride {stride}: one phase per video and epoch)" if stride > 1 else ""


def gradient_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    batch: Batch,
    tc: TrainingConfig,
    device: torch.device,
    name: str = "",
) -> float:
    """One optimiser step on 1 - CCC (autocast and loss scaling as configured); the batch's loss.

    The one training step: the trainer's, and the one benchmarks/bench_train.py times. ``name``:
    the model as its configuration names it, for the contract's messages.
    """
    with autocast(device, tc.amp):
        pred = contract.forward(name or type(model).__name__, model, batch.streams, batch.present, batch.valid)
    loss = ccc_loss(pred.float(), batch.labels, batch.valid, mse_weight=tc.mse_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if tc.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(loss.detach())


@dataclass(eq=False)
class _GradientRun:
    """One training by gradient steps: what it reads, the objects an epoch changes, and where it stands.

    ``best`` (metrics of the best epoch so far), ``stale`` (epochs since), ``stop`` (why no
    more epochs, "" = go on) and ``precision`` (fp32 or bf16: a run never changes it) are saved in
    last.pt with the optimiser, schedule and torch RNG, so a resume continues exactly where the
    killed run would have.
    """

    loaded: LoadedCache
    standardizer: Standardizer
    config: FusionConfig
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    windows: np.ndarray  # the fixed grid of training windows (with labels, every phase); random ones drawn per epoch
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    fingerprints: dict[str, Any]  # of the cache, written into every checkpoint
    best: dict[str, Any] = field(default_factory=lambda: {"p": -math.inf})
    stale: int = 0
    stop: str = ""
    precision: str = field(default_factory=precision)  # the CPU precision the epochs run in

    @classmethod
    def start(
        cls, loaded: LoadedCache, standardizer: Standardizer, config: FusionConfig, run_dir: Path, train_ids: list[str]
    ) -> _GradientRun:
        """Seed, build the model, cut the training windows and set up the optimiser (in this order: the
        model's initial weights are the first draws of the seeded torch RNG)."""
        data, tc = config.data, config.training
        device = resolve_device(tc.device)
        torch.manual_seed(tc.seed)
        model = config.build_model(list(loaded.dims))
        contract.check_module(config.model.name, model)
        model = contract.guarded(config.model.name, "to(device)", model.to, device)
        every_phase = phase_windows(loaded.offsets, data.window, data.hop, loaded.positions(train_ids), tc.stride)
        windows = windows_with_labels(loaded, every_phase, tc.stride)
        if len(windows) == 0:
            raise VafusionError("no training window holds a label; check the annotations of the training ids")
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        # an epoch trains one phase per video; random windows: about as many (+- 1 per video)
        per_epoch = math.ceil(len(windows) / tc.stride / tc.batch_size)
        factor = lr_factor(tc.schedule, per_epoch * tc.epochs, per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        scaler_enabled = device.type == "cuda" and tc.amp and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=scaler_enabled)
        return cls(
            loaded,
            standardizer,
            config,
            run_dir,
            device,
            model,
            windows,
            optimizer,
            scheduler,
            scaler,
            _fingerprints(loaded),
        )

    @property
    def parameters(self) -> int:
        """Trainable parameters (logged, and kept in the summary to compare models by size)."""
        return count_parameters(self.model)

    @property
    def recorded_precision(self) -> str:
        """The precision the summary records: the CPU's for this run, the autocast dtype on CUDA."""
        return device_precision(self.device, self.config.training.amp) if self.device.type != "cpu" else self.precision

    @property
    def on_gpu(self) -> bool:
        """Batches are pinned and prefetched a step ahead only where a copy to the device can overlap compute."""
        return self.device.type == "cuda"

    def resume(self, log: Callable[[str], None], clock: _Clock) -> int:
        """Load last.pt (weights, optimiser, schedule, torch RNG, standing, precision), drop later metrics
        rows of the killed run, carry its elapsed seconds on; returns the first epoch still to train.

        Under ``--precision auto`` the run keeps the precision it recorded (fp32 for a run that
        recorded none: every run before precisions were recorded was fp32); an explicit
        ``--precision`` is obeyed.
        """
        last = ckpt_mod.read_checkpoint(self.run_dir / ckpt_mod.LAST)
        self.model.load_state_dict(last["weights"])
        self.optimizer.load_state_dict(last["optimizer"])
        self.scheduler.load_state_dict(last["scheduler"])
        torch.set_rng_state(last["torch_rng"])
        start_epoch, self.best, self.stale = int(last["epoch"]) + 1, json.loads(last["best"]), int(last["stale"])
        if precision_asked() == "auto":
            self.precision = str(last.get("precision", "fp32"))
        self.stop = str(last.get("stop", "")) or stop_reason(
            0.0, start_epoch - 1, self.stale, self.config.training.patience, self.config.training.min_epochs
        )
        ckpt_mod.truncate_metrics(self.run_dir, start_epoch - 1)
        rows = ckpt_mod.read_metrics(self.run_dir)
        clock.before = float(rows[-1].get("elapsed") or 0.0) if rows else 0.0
        log(
            f"resuming after epoch {start_epoch - 1} (best P {self.best['p']:.4f}, {self.precision})"
            + (f"; it had stopped ({self.stop}): no more epochs" if self.stop else "")
        )
        return start_epoch

    def epoch_windows(self, rng: np.random.Generator, epoch: int) -> np.ndarray:
        """The training windows of an epoch: the grid shifted by ``rng`` per video (``windows: random``), or
        the fixed grid (``grid``, the v1 recipe); with a stride, of one phase per video (:meth:`phases`)."""
        data, tc, loaded = self.config.data, self.config.training, self.loaded
        videos = np.unique(self.windows[:, 0])  # the training videos that hold a label
        if tc.stride > 1:
            phases = self.phases(videos, epoch)
            if tc.windows == "grid":
                return self.windows[
                    self.windows[:, 1] % tc.stride == phases[np.searchsorted(videos, self.windows[:, 0])]
                ]
            drawn = phase_windows(loaded.offsets, data.window, data.hop, videos, tc.stride, phases, rng)
            return windows_with_labels(loaded, drawn, tc.stride)
        if tc.windows == "grid":
            return self.windows
        return windows_with_labels(loaded, random_windows(loaded.offsets, data.window, data.hop, videos, rng))

    def phases(self, videos: np.ndarray, epoch: int) -> np.ndarray:
        """The phase each of ``videos`` trains on in ``epoch``: a random start per video (from the seed) plus
        the epoch, modulo the stride, so any ``stride`` epochs in a row train every frame of every video."""
        stride = self.config.training.stride
        start = np.random.default_rng([self.config.training.seed, 0, stride]).integers(0, stride, len(self.loaded.ids))
        return (start[videos] + epoch) % stride

    def train_epoch(self, epoch: int) -> float:
        """One pass over the epoch's shuffled training windows; the mean training loss. Windows and shuffle
        are drawn from ``(seed, epoch)`` alone (stateless per epoch), so a resumed epoch sees the same ones."""
        tc, data = self.config.training, self.config.data
        self.model.train()
        rng = np.random.default_rng([tc.seed, epoch])  # stateless per epoch: resume-exact
        windows = self.epoch_windows(rng, epoch)
        losses = []
        # On a GPU: batches assembled a step ahead in pinned memory, so the copy overlaps compute.
        for batch in iterate_batches(
            self.loaded,
            self.standardizer,
            windows,
            tc.batch_size,
            shuffle=True,
            generator=rng,
            window=data.window,
            prefetch=int(self.on_gpu),
            pin_memory=self.on_gpu,
            stride=tc.stride,
        ):
            losses.append(self._step(batch.to(self.device, non_blocking=True)))
        return float(np.mean(losses))

    def _step(self, batch: Batch) -> float:
        return gradient_step(
            self.model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            batch,
            self.config.training,
            self.device,
            self.config.model.name,
        )

    def validate(
        self, epoch: int, loss: float, val_ids: list[str], seconds: float = 0.0, elapsed: float | None = None
    ) -> dict[str, Any]:
        """Score ``val_ids`` the challenge way and append the epoch's row to metrics.jsonl; the row.

        ``seconds`` (the epoch's training) and ``elapsed`` (the run's, when that training ended; see
        :class:`_Clock`) are wall seconds; the row holds them with this validation added.
        """
        began = time.perf_counter()
        preds = predict_loaded(self.model, self.config, self.standardizer, self.loaded, val_ids, self.device)
        scores = partition_score(self.loaded, preds, val_ids)
        spent = time.perf_counter() - began
        row = {
            "epoch": epoch,
            "loss": loss,
            "ccc_v": scores["ccc_v"],
            "ccc_a": scores["ccc_a"],
            "p": scores["p"],
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": seconds + spent,
            "elapsed": None if elapsed is None else elapsed + spent,
        }
        ckpt_mod.append_metrics(self.run_dir, row)
        return row

    def keep(self, row: dict[str, Any], epoch: int, stopped_by_caller: bool = False) -> None:
        """After an epoch's score: best.pt when P improved, the stop decision (``stopped_by_caller``: the
        ``on_epoch`` hook asked to stop), then last.pt (written last, so a kill before it reruns this
        epoch from the previous last.pt)."""
        tc = self.config.training
        if row["p"] > self.best["p"]:
            self.best, self.stale = {k: row[k] for k in ("epoch", "ccc_v", "ccc_a", "p", "loss")}, 0
            ckpt_mod.save_atomic(self._checkpoint(epoch), self.run_dir / ckpt_mod.BEST)
        else:
            self.stale += 1
        self.stop = stop_reason(row["loss"], epoch, self.stale, tc.patience, tc.min_epochs)
        if stopped_by_caller and not self.stop:
            self.stop = "stopped by the caller (on_epoch)"
        last = self._checkpoint(epoch)
        last.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            torch_rng=torch.get_rng_state(),
            best=json.dumps(self.best),
            stale=self.stale,
            stop=self.stop,
            precision=self.precision,
        )
        ckpt_mod.save_atomic(last, self.run_dir / ckpt_mod.LAST)

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        """best.pt's contents (last.pt adds the optimiser's state): everything predict needs, no pickle."""
        return ckpt_mod.make_checkpoint(
            self.config, list(self.loaded.dims), self.standardizer, self.model, self.fingerprints, self.best, epoch
        )


def _require_a_best(
    run_dir: Path, best: dict[str, Any], tc: TrainingConfig, epochs: int, stop: str, remedy: str = ""
) -> None:
    """A run without a single finite validation score has no best.pt: say why, instead of failing later."""
    if "epoch" in best:
        return
    why = f"; {stop}" if stop else ""
    raise VafusionError(
        f"{run_dir}: no epoch gave a finite validation score (P was NaN in all {epochs} epoch(s){why}); "
        f"{remedy or f'train again with a lower --lr (now {tc.lr:g})'} into a new --run directory "
        "(or delete this one)"
    )


__all__ = ["EpochHook", "PauseTraining", "TrainResult", "gradient_step", "train"]
