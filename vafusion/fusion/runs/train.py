"""Training a model from a cache into a run directory.

The cache is loaded into RAM once. A model trained by gradient steps (a ``torch.nn.Module``)
shuffles windows each epoch, trains on 1 - CCC, then scores the validation ids the challenge
way (overlap-averaged per frame, CCC over the whole partition); the best epoch by
P = (CCC_V + CCC_A) / 2 is kept in ``best.pt``, and ``last.pt`` holds everything needed to
resume exactly (optimiser, schedule, RNG state). A model fitted in closed form (the ridge)
is fitted once on the training videos and scored the same way. Which of the two a model is
comes from its class (:mod:`vafusion.fusion.models`), never from its name. ``on_epoch`` (a
tuner's pruner, say) sees each epoch's row and can stop the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vafusion.atomic import atomic_path
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.device import autocast, precision, resolve_device
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, remove_stale_temporaries
from vafusion.fusion.data.batches import Batch, iterate_batches
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import LoadedCache, load_cache
from vafusion.fusion.data.scores import partition_score
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import make_windows, windows_with_labels
from vafusion.fusion.metrics import ccc_loss
from vafusion.fusion.models import contract, count_parameters
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import CONFIG_FILE, FusionConfig, TrainingConfig
from vafusion.fusion.runs.infer import predict_loaded, video_streams
from vafusion.fusion.runs.run_dir import RunState, clear_partial, one_trainer_at_a_time, read_summary, run_state

EpochHook = Callable[[dict[str, Any]], Any]
"""``on_epoch(row)``: called after each epoch with its metrics.jsonl row; a true return stops the run."""


@dataclass
class TrainResult:
    run_dir: Path
    best: dict[str, Any]  # metrics of the best epoch: epoch, ccc_v, ccc_a, p, ...
    epochs_run: int
    parameters: int


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


def _prepare_run_dir(run_dir: Path, config: FusionConfig, resume: bool, log: Callable[[str], None]) -> RunState:
    """Apply the rules of :mod:`vafusion.fusion.runs.run_dir`: start (again), resume, or nothing left to do."""
    state = run_state(run_dir, config, resume)
    if state is RunState.NEW:
        if resume and (run_dir / CONFIG_FILE).is_file():
            log(f"{run_dir}: the interrupted run stopped before its first {ckpt_mod.LAST}: starting it again")
        elif resume:
            log(f"{run_dir}: nothing to resume yet: starting the run")
        make_dir(run_dir, "run directory")
        clear_partial(run_dir)
        config.save(run_dir)
    remove_stale_temporaries(run_dir)
    return state


def _finished(run_dir: Path, log: Callable[[str], None]) -> TrainResult:
    summary = read_summary(run_dir) or {}
    best = summary["best"]
    log(f"{run_dir}: finished before, not trained again (P {best['p']:.4f})")
    return TrainResult(run_dir, best, int(summary.get("epochs_run") or 0), int(summary.get("parameters") or 0))


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
    with its metrics row (``epoch``, ``loss``, ``ccc_v``, ``ccc_a``, ``p``, ``lr``); returning a
    true value stops the run there (it is then finished, like an early stop). ``loaded``: this run's
    ids and features of ``cache_dir``, already read (a tuner's trials share one read); else read here.
    """
    log = log or (lambda msg: None)
    cache_dir, run_dir = Path(cache_dir), Path(run_dir)
    index = read_corpus_index(cache_dir)
    train_ids, val_ids = split_ids(index, config.data)
    state = _prepare_run_dir(run_dir, config, resume, log)
    if state is RunState.FINISHED:
        return _finished(run_dir, log)
    loaded = _cache_for(cache_dir, config, train_ids + val_ids, index, progress, loaded)
    standardizer = Standardizer.fit(loaded, train_ids)
    log(
        f"{len(train_ids)} train ids ({int(loaded.lengths[loaded.positions(train_ids)].sum())} frames), "
        f"{len(val_ids)} validation ids; features "
        f"{', '.join(f'{f} ({d})' for f, d in zip(loaded.features, loaded.dims))}"
    )
    resumable = state is RunState.RESUMABLE
    if config.model.spec.closed_form:
        result = _fit_closed_form(loaded, standardizer, config, run_dir, train_ids, val_ids, resumable, progress, log)
    else:
        result = _train_by_gradient(
            loaded, standardizer, config, run_dir, train_ids, val_ids, resumable, progress, log, on_epoch
        )
    if on_trained is not None:
        on_trained(run_dir, loaded)
    summary = {
        "best": result.best,
        "model": config.model.name,
        "features": list(config.data.features),
        "parameters": result.parameters,
        "epochs_run": result.epochs_run,
        "split": config.data.split,
        "fold": config.data.fold if config.data.split == "folds" else None,
        "precision": precision(),
    }
    with atomic_path(run_dir / ckpt_mod.SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _fit_closed_form(
    loaded: LoadedCache,
    standardizer: Standardizer,
    config: FusionConfig,
    run_dir: Path,
    train_ids: list[str],
    val_ids: list[str],
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
) -> TrainResult:
    """One ``fit`` on the training videos (nothing to resume: a rerun fits again)."""
    model = config.build_model(list(loaded.dims))
    feats, present = video_streams(loaded, standardizer, train_ids)
    labels = [loaded.labels[loaded.rows(v)] for v in train_ids]
    contract.guarded(config.model.name, "fit", model.fit, feats, present, labels, seed=config.training.seed)
    scores = partition_score(loaded, predict_loaded(model, config, standardizer, loaded, val_ids), val_ids)
    best = {"epoch": 0, "ccc_v": scores["ccc_v"], "ccc_a": scores["ccc_a"], "p": scores["p"]}
    if not math.isfinite(best["p"]):  # as a gradient run without a finite score: no best.pt, one line
        stop = f"{contract.label(config.model.name)} predicted non-finite values"
        _require_a_best(run_dir, {}, config.training, 1, stop, "fix its fit or predict, then train again")
    ckpt_mod.append_metrics(run_dir, dict(best, loss=None))
    checkpoint = ckpt_mod.make_checkpoint(
        config, list(loaded.dims), standardizer, model, _fingerprints(loaded), best, 0
    )
    ckpt_mod.save_atomic(checkpoint, run_dir / ckpt_mod.BEST)
    return TrainResult(run_dir, best, 0, count_parameters(model, config.model.name))


def _lr_lambda(total_steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 5% of the peak rate."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _train_by_gradient(
    loaded: LoadedCache,
    standardizer: Standardizer,
    config: FusionConfig,
    run_dir: Path,
    train_ids: list[str],
    val_ids: list[str],
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Epochs of gradient steps, each scored on ``val_ids`` and checkpointed, until ``epochs`` or a stop.

    The steps of an epoch (train, validate, keep) are methods of :class:`_GradientRun`, which also
    holds what last.pt saves, so this function reads as the recipe and a resumed run takes the
    same path as a straight one.
    """
    tc = config.training
    run = _GradientRun.start(loaded, standardizer, config, run_dir, train_ids)
    start_epoch = run.resume(log) if resume else 1
    log(
        f"model {config.model.name}: {run.parameters:,} parameters, {len(run.windows)} training windows of "
        f"{config.data.window} frames, device {run.device}, {torch.get_num_threads()} threads, {precision()}, "
        f"features {'in RAM' if loaded.in_memory else 'streamed'}"
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
        row = run.validate(epoch, run.train_epoch(epoch), val_ids)
        run.keep(row, epoch, stopped_by_caller=bool(on_epoch and on_epoch(dict(row))))
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
    return TrainResult(run_dir, run.best, epoch, run.parameters)


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

    ``best`` (metrics of the best epoch so far), ``stale`` (epochs since) and ``stop`` (why no
    more epochs, "" = go on) are saved in last.pt with the optimiser, schedule and torch RNG, so
    a resume continues exactly where the killed run would have.
    """

    loaded: LoadedCache
    standardizer: Standardizer
    config: FusionConfig
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    windows: np.ndarray
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    fingerprints: dict[str, Any]  # of the cache, written into every checkpoint
    best: dict[str, Any] = field(default_factory=lambda: {"p": -math.inf})
    stale: int = 0
    stop: str = ""

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
        windows = windows_with_labels(
            loaded,
            make_windows(offsets=loaded.offsets, window=data.window, hop=data.hop, videos=loaded.positions(train_ids)),
        )
        if len(windows) == 0:
            raise VafusionError("no training window holds a label; check the annotations of the training ids")
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        total = math.ceil(len(windows) / tc.batch_size) * tc.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, max(1, min(total // 10, 200))))
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
    def on_gpu(self) -> bool:
        """Batches are pinned and prefetched a step ahead only where a copy to the device can overlap compute."""
        return self.device.type == "cuda"

    def resume(self, log: Callable[[str], None]) -> int:
        """Load last.pt (weights, optimiser, schedule, torch RNG, standing), drop later metrics rows of
        the killed run; returns the first epoch still to train."""
        last = ckpt_mod.read_checkpoint(self.run_dir / ckpt_mod.LAST)
        self.model.load_state_dict(last["weights"])
        self.optimizer.load_state_dict(last["optimizer"])
        self.scheduler.load_state_dict(last["scheduler"])
        torch.set_rng_state(last["torch_rng"])
        start_epoch, self.best, self.stale = int(last["epoch"]) + 1, json.loads(last["best"]), int(last["stale"])
        patience = self.config.training.patience
        self.stop = str(last.get("stop", "")) or ("early stop" if self.stale >= patience else "")
        ckpt_mod.truncate_metrics(self.run_dir, start_epoch - 1)
        log(
            f"resuming after epoch {start_epoch - 1} (best P {self.best['p']:.4f})"
            + (f"; it had stopped ({self.stop}): no more epochs" if self.stop else "")
        )
        return start_epoch

    def train_epoch(self, epoch: int) -> float:
        """One pass over the shuffled training windows; the mean training loss. The shuffle is drawn from
        ``(seed, epoch)`` alone (stateless per epoch), so a resumed epoch sees the same order."""
        tc, data = self.config.training, self.config.data
        self.model.train()
        rng = np.random.default_rng([tc.seed, epoch])  # stateless per epoch: resume-exact
        losses = []
        # On a GPU: batches assembled a step ahead in pinned memory, so the copy overlaps compute.
        for batch in iterate_batches(
            self.loaded,
            self.standardizer,
            self.windows,
            tc.batch_size,
            shuffle=True,
            generator=rng,
            window=data.window,
            prefetch=int(self.on_gpu),
            pin_memory=self.on_gpu,
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

    def validate(self, epoch: int, loss: float, val_ids: list[str]) -> dict[str, Any]:
        """Score ``val_ids`` the challenge way and append the epoch's row to metrics.jsonl; the row."""
        preds = predict_loaded(self.model, self.config, self.standardizer, self.loaded, val_ids, self.device)
        scores = partition_score(self.loaded, preds, val_ids)
        row = {
            "epoch": epoch,
            "loss": loss,
            "ccc_v": scores["ccc_v"],
            "ccc_a": scores["ccc_a"],
            "p": scores["p"],
            "lr": self.scheduler.get_last_lr()[0],
        }
        ckpt_mod.append_metrics(self.run_dir, row)
        return row

    def keep(self, row: dict[str, Any], epoch: int, stopped_by_caller: bool = False) -> None:
        """After an epoch's score: best.pt when P improved, the stop decision (``stopped_by_caller``: the
        ``on_epoch`` hook asked to stop), then last.pt (written last, so a kill before it reruns this
        epoch from the previous last.pt)."""
        if row["p"] > self.best["p"]:
            self.best, self.stale = {k: row[k] for k in ("epoch", "ccc_v", "ccc_a", "p", "loss")}, 0
            ckpt_mod.save_atomic(self._checkpoint(epoch), self.run_dir / ckpt_mod.BEST)
        else:
            self.stale += 1
        self.stop = _stop_reason(row, self.stale, self.config.training.patience)
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
        )
        ckpt_mod.save_atomic(last, self.run_dir / ckpt_mod.LAST)

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        """best.pt's contents (last.pt adds the optimiser's state): everything predict needs, no pickle."""
        return ckpt_mod.make_checkpoint(
            self.config, list(self.loaded.dims), self.standardizer, self.model, self.fingerprints, self.best, epoch
        )


def _stop_reason(row: dict[str, Any], stale: int, patience: int) -> str:
    """Why training stops after this epoch ("" = go on): no better P for ``patience`` epochs, or a
    non-finite loss (the weights are NaN now: no later epoch can recover)."""
    if not math.isfinite(row["loss"]):
        return f"the training loss is {row['loss']} (diverged)"
    if stale >= patience:
        return f"early stop: no better validation P for {patience} epochs"
    return ""


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


__all__ = ["EpochHook", "TrainResult", "gradient_step", "train"]
