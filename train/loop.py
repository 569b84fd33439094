"""The one training loop every recipe runs: stages, checkpoints, resume, early stopping, DDP.

Features (see docs/ARCHITECTURE.md):
- seeds and deterministic algorithms on CPU; AMP (bf16, or fp16 + GradScaler) and channels-last on CUDA;
- stages (e.g. paper 001: frozen backbone at lr 0.01, then everything at 0.001), each with its own
  optimizer and ReduceLROnPlateau on the validation loss;
- early stopping and a best checkpoint on the validation loss, or with ``select_on="metric"`` on a validation
  metric (higher is better: the DR graders' quadratic kappa); the best weights are restored at the end;
- a checkpoint at the end of each epoch and optionally every N steps, written atomically
  (``train.checkpoint``); ``resume=True`` continues mid-epoch at the exact batch;
- the same code under ``torchrun --nproc_per_node=N`` (a sharded sampler, gradients all-reduced by DDP,
  validation outputs gathered, only rank 0 writes);
- tqdm progress bars with the running loss and metric, a line per epoch and a CSV log rewritten each epoch
  (``train.callbacks``).

The loop in parts, as timm's train.py (``fit`` → ``_fit``)::

    run = RunContext.start(...)             what stays fixed: device, precision, inputs, data, checkpoints
    state = resume(run, model)              train.loop_state.RunState: fresh, or the latest checkpoint's
    for each stage from state.stage:
        tools = StageTools.start(...)       trainable parameters, DDP wrapper, optimizer, scheduler
        while the stage has epochs left:
            tally = train_one_epoch(...)    train_step per batch; callbacks (bar); checkpoint every N steps
            row = epoch_row(...)            training figures + validate(...)
            finish_epoch(...)               end_of_epoch decisions, best weights, scheduler, checkpoint, log
    the best weights back, their validation outputs → FitResult

Data items are ``(image_uint8 (3, S, S), target)`` or ``(image_uint8, metadata, target)`` tuples; the loop
turns images into floats on the device, applies the batched augmentation, then normalises (``Prepare``).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from train import ddp
from train.augment import identity
from train.callbacks import Callback, default_callbacks
from train.checkpoint import Checkpointer, unwrap
from train.loop_state import EpochTally, RunState, end_of_epoch
from train.metrics import Metric

__all__ = ["Stage", "LoopConfig", "FitResult", "fit", "evaluate_outputs", "Prepare", "ResumableBatchSampler",
           "seed_everything", "cpu_has_fast_bf16"]


@dataclass
class Stage:
    """One phase of training with its own learning rate and trainable parameters.

    ``trainable(model)`` returns the parameters to train (None: all); the others are frozen.
    """

    name: str
    epochs: int
    lr: float
    trainable: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None


@dataclass
class LoopConfig:
    """Everything the loop needs besides the model, data, loss and stages."""

    out_dir: Path
    batch_size: int = 16
    eval_batch_size: int | None = None
    seed: int = 0
    deterministic: bool = True
    device: str = "auto"
    workers: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps in total (quick runs, tests)
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    resume: bool = False
    optimizer: str = "adam"  # "adam", "adamw" or "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    patience: int = 10  # early stopping: epochs without a better validation loss (or score)
    # What picks the best epoch (its weights are kept and restored) and counts patience: "loss" (the lowest
    # validation loss) or "metric" (the highest validation value of ``select_metric``, default fit's ``metric``;
    # a tie goes to the lower loss). Without validation photos the training loss decides either way. The plateau
    # scheduler follows the validation loss in both cases.
    select_on: str = "loss"
    select_metric: Metric | None = None
    plateau_patience: int = 3  # ReduceLROnPlateau
    plateau_factor: float = 0.1
    min_lr: float = 0.0
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    # On CPUs (measured by benchmarks/train_throughput.py, where they win on this machine's kind):
    cpu_bf16: bool = False  # bf16 autocast, only where the CPU has AVX512-BF16 / AMX (else fp32)
    cpu_channels_last: bool = False
    grad_clip: float | None = None
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    progress: bool = True
    # An extra training loss on the model's class maps against the training set's lesion masks
    # (train.localisation.LocalisationTerm; None: off, the loop as it always was).
    localisation: Any = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.select_on not in ("loss", "metric"):
            raise ValueError(f"select_on must be 'loss' or 'metric', got {self.select_on!r}")


@dataclass
class FitResult:
    """What ``fit`` returns: the history and the best model's validation outputs."""

    history: list[dict[str, Any]]
    best_val_loss: float  # the best epoch's validation loss
    best_epoch: int
    global_step: int
    steps_run: int  # optimizer steps taken by this call (less than global_step after a resume)
    resumed_from: dict[str, int] | None
    stopped_early: bool
    val_outputs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    val_targets: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    images_per_s: float = float("nan")
    selected_on: str = "val_loss"  # the row's column that chose the best epoch (e.g. "val_quadratic_kappa")
    best_score: float = float("nan")  # its value at the best epoch (selecting on a metric)


# --------------------------------------------------------------------------------------- helpers


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on request use deterministic algorithms (warn where none exists)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _epoch_seed(seed: int, epoch: int, batch: int = 0) -> int:
    """The RNG seed of one (epoch, batch) of a run."""
    return (seed * 1_000_003 + epoch * 7919 + batch * 104_729) % 2**63


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled index batches per epoch, sharded over ranks, that can start at batch k of an epoch.

    The permutation depends only on (seed, epoch), so a resumed run sees the same batches the
    interrupted one would have. Like DistributedSampler, the index list is padded to a multiple of
    the world size. A trailing batch of one sample is dropped (BatchNorm cannot train on it).
    """

    def __init__(self, indices: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(indices) == 0:
            raise ValueError("cannot sample batches from an empty data set")
        self.indices = list(indices)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _batches(self) -> list[list[int]]:
        idx = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        per_rank = math.ceil(len(idx) / self.world_size)
        idx = (idx * math.ceil(per_rank * self.world_size / len(idx)))[: per_rank * self.world_size]
        mine = idx[self.rank :: self.world_size]
        batches = [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()
        return batches

    def batches_per_epoch(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start_batch :])

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)


def _make_optimizer(params: list[nn.Parameter], lr: float, cfg: LoopConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX, as torch's own CPU checks see it);
    elsewhere bf16 autocast is emulated, slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _set_trainable(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    if stage.trainable is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    chosen = {id(p) for p in stage.trainable(model)}
    if not chosen:
        raise ValueError(f"stage {stage.name!r} trains no parameter")
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    return [p for p in model.parameters() if id(p) in chosen]


def _forward(model: nn.Module, batch: Sequence[torch.Tensor], prepare: Callable, train: bool):
    x = prepare(batch[0], train)
    if len(batch) == 3:  # (image, metadata, target): paper 002's age/sex input
        return model(x, batch[1].to(x.device, non_blocking=True)), batch[2]
    return model(x), batch[1]


# --------------------------------------------------------------------------------------- inputs and precision


class Prepare:
    """Model inputs from the images of a batch: uint8 photos become floats in [0, 1] on the device, augmented
    while training, then normalised; cached features of frozen layers (``train.frozen``) pass as they are."""

    def __init__(self, device: torch.device | str, mean: Sequence[float], std: Sequence[float],
                 augment: Callable[[torch.Tensor], torch.Tensor] = identity, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.augment, self.channels_last = augment, channels_last

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.dtype != torch.uint8:
            x = images.to(self.device, non_blocking=True).float()
        else:
            x = images.to(self.device, non_blocking=True).float().div_(255.0)
            if train:
                x = self.augment(x)
            x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _amp_dtype(cfg: LoopConfig, device: torch.device) -> torch.dtype | None:
    """Autocast's type: bf16 (fp16 where unsupported) on CUDA with ``amp``; bf16 on a CPU that computes it
    natively with ``cpu_bf16``; None: fp32."""
    if device.type == "cuda":
        return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cfg.amp else None
    return torch.bfloat16 if cfg.cpu_bf16 and cpu_has_fast_bf16() else None


# --------------------------------------------------------------------------------------- the run's parts


@dataclass
class RunContext:
    """What stays fixed through one ``fit`` call: the settings, device, precision, inputs, data, checkpoints."""

    cfg: LoopConfig
    info: ddp.DistInfo
    stages: Sequence[Stage]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Metric | None
    select: Metric | None  # the metric whose validation value picks the best epoch (None: the loss)
    val_set: Dataset | None
    prepare: Prepare
    amp_dtype: torch.dtype | None
    scaler: Any  # torch.amp.GradScaler on CUDA (enabled for fp16 only); None on the CPU
    sampler: ResumableBatchSampler
    loader: DataLoader
    ckpt: Checkpointer
    stage_start: list[int]  # the first epoch of each stage, then the run's length

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def deterministic(self) -> bool:
        return self.cfg.deterministic and self.device.type != "cuda"

    @property
    def total_epochs(self) -> int:
        return self.stage_start[-1]

    @property
    def select_key(self) -> str:
        """The log row's column that picks the best epoch."""
        return "val_loss" if self.select is None else f"val_{self.select.name}"

    @classmethod
    def start(cls, model: nn.Module, loss_fn: Callable, train_set: Dataset, val_set: Dataset | None,
              cfg: LoopConfig, stages: Sequence[Stage], augment: Callable, metric: Metric | None,
              train_indices: Sequence[int] | None) -> "RunContext":
        """Join the DDP group, seed, move the model (and loss) to the device, choose the precision, batch the data.

        Raises:
            ValueError: ``select_on="metric"`` without a metric to select on.
        """
        select = None
        if cfg.select_on == "metric":
            select = cfg.select_metric or metric
            if select is None:
                raise ValueError("select_on='metric' needs a metric (LoopConfig.select_metric or fit's metric)")
        info = ddp.init_distributed(cfg.device)
        device = info.device
        cuda = device.type == "cuda"
        seed_everything(cfg.seed, cfg.deterministic and not cuda)
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        if info.is_main:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
        model.to(device)
        channels_last = cfg.channels_last if cuda else cfg.cpu_channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if isinstance(loss_fn, nn.Module):
            loss_fn.to(device)
        amp_dtype = _amp_dtype(cfg, device)
        indices = list(range(len(train_set))) if train_indices is None else list(train_indices)
        sampler = ResumableBatchSampler(indices, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        rank=info.rank, world_size=info.world_size)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=cuda,
                            persistent_workers=cfg.workers > 0)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16) if cuda else None
        prepare = Prepare(device, cfg.mean, cfg.std, augment, channels_last)
        return cls(cfg, info, stages, loss_fn, metric, select, val_set, prepare, amp_dtype, scaler, sampler, loader,
                   Checkpointer(cfg.out_dir), np.cumsum([0] + [s.epochs for s in stages]).tolist())


@dataclass
class StageTools:
    """One stage's trainable parameters, network (DDP-wrapped under torchrun), optimizer and plateau scheduler."""

    stage: Stage
    params: list[nn.Parameter]
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau

    @classmethod
    def start(cls, run: RunContext, model: nn.Module, stage: Stage) -> "StageTools":
        params = _set_trainable(unwrap(model), stage)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda"
                                                  else None) if run.info.distributed else model
        optimizer = _make_optimizer(params, stage.lr, run.cfg)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=run.cfg.plateau_factor, patience=run.cfg.plateau_patience,
            min_lr=run.cfg.min_lr)
        return cls(stage, params, net, optimizer, scheduler)

    def load(self, training_state: dict[str, Any], scaler: Any) -> None:
        """Continue from a checkpoint's optimizer, scheduler and scaler state."""
        self.optimizer.load_state_dict(training_state["optimizer"])
        self.scheduler.load_state_dict(training_state["scheduler"])
        if scaler is not None and training_state.get("scaler"):
            scaler.load_state_dict(training_state["scaler"])


@dataclass
class CallTotals:
    """What this ``fit`` call did (after a resume, only its own part)."""

    steps_run: int = 0
    images: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def add(self, tally: EpochTally) -> None:
        self.steps_run += tally.batches
        self.images += tally.images
        self.seconds += tally.seconds


def resume(run: RunContext, model: nn.Module) -> tuple[RunState, dict[str, Any] | None, dict[str, int] | None]:
    """A fresh state, or with ``cfg.resume`` the latest checkpoint's (its weights loaded into ``model``).

    Returns:
        (state, the optimizer/scheduler/scaler state of its stage, where it resumed from); None, None when fresh.
    """
    latest = run.ckpt.latest() if run.cfg.resume else None
    if latest is None:
        return RunState(), None, None
    saved, training_state = Checkpointer.load(latest, model, run.device)
    state = RunState.from_dict(saved)
    if run.select is not None and state.best_score == -math.inf and state.best_epoch > 0:
        # A state.json from before RunState.best_score, or from a run that selected on the loss: the best epoch so
        # far (whose weights best.safetensors holds) keeps its place, scored by the value its row logged.
        row = next((r for r in state.history if r.get("epoch") == state.best_epoch), {})
        logged = row.get(run.select_key)
        state.best_score = float(logged) if logged is not None else -math.inf
    # "Finished" depends on this call's budget: a resumed run may be given more epochs or steps.
    state.finished = state.epoch >= run.total_epochs or (
        run.cfg.max_steps is not None and state.global_step >= run.cfg.max_steps)
    if run.info.is_main:
        tqdm.write(f"resuming from {latest.name}: epoch {state.epoch}, batch {state.batch}, step {state.global_step}")
    return state, training_state, {"epoch": state.epoch, "batch": state.batch, "global_step": state.global_step}


def checkpoint(run: RunContext, tools: StageTools, state: RunState) -> None:
    """A checkpoint of the run as it stands (rank 0 writes)."""
    if run.info.is_main:
        run.ckpt.save(tools.net, tools.optimizer, tools.scheduler, run.scaler, state.to_dict())


# --------------------------------------------------------------------------------------- one step, one epoch


def train_step(run: RunContext, tools: StageTools, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """One optimizer step on one batch: forward and loss under autocast (+ λ · localisation term), backward
    (scaled for fp16), gradient clipping, step.

    Returns:
        (loss, outputs, targets, localisation term or None), detached.
    """
    term, optimizer = run.cfg.localisation, tools.optimizer
    if term is not None:
        batch = term.take(batch)
    part = None
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        out, target = _forward(tools.net, batch, run.prepare, train=True)
        target = target.to(run.device, non_blocking=True)
        loss = run.loss_fn(out.float(), target)
        if term is not None:  # total = classification + λ · localisation (train.localisation)
            part = term.loss(target)
            loss = loss + term.weight * part
            part = part.detach()
    optimizer.zero_grad(set_to_none=True)
    scaler = run.scaler if run.scaler is not None and run.scaler.is_enabled() else None
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if run.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(tools.params, run.cfg.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), out.detach().float(), target.detach(), part


def train_one_epoch(run: RunContext, tools: StageTools, state: RunState, callbacks: Sequence[Callback]) -> EpochTally:
    """The batches of epoch ``state.epoch`` from ``state.batch`` on; stops at ``max_steps`` (``state.finished``)."""
    cfg, epoch = run.cfg, state.epoch
    seed_everything(_epoch_seed(cfg.seed, epoch, state.batch), run.deterministic)
    run.sampler.set_epoch(epoch, state.batch)
    tools.net.train()
    tally = EpochTally()
    t0 = time.perf_counter()
    for cb in callbacks:
        cb.epoch_start(f"{tools.stage.name} epoch {epoch + 1}/{run.total_epochs}", state.batch,
                       run.sampler.batches_per_epoch())
    for batch in run.loader:
        # A seed per (epoch, batch): augmentation and dropout draw the same numbers whether or not the run was
        # interrupted and resumed, so a resumed run ends with the same weights (each DDP rank its own stream).
        torch.manual_seed((_epoch_seed(cfg.seed, epoch, state.batch) + 1_000_000_007 * run.info.rank) % 2**63)
        tally.add(*train_step(run, tools, batch))
        state.batch += 1
        state.global_step += 1
        for cb in callbacks:
            cb.batch_end(state, tally)
        if cfg.max_steps is not None and state.global_step >= cfg.max_steps:
            state.finished = True
            break
        if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
            checkpoint(run, tools, state)
    for cb in callbacks:
        cb.train_end()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    tally.seconds = time.perf_counter() - t0
    return tally


def validate(run: RunContext, net: nn.Module) -> dict[str, float]:
    """``val_loss``, ``val_<metric>`` and the selection metric's ``val_<name>`` over the whole validation set
    (gathered from every rank); {} without one."""
    if run.val_set is None or len(run.val_set) == 0:
        return {}
    v_out, v_tgt = evaluate_outputs(net, run.val_set, run.cfg, run.info, run.prepare, run.amp_dtype)
    loss = run.loss_fn(torch.from_numpy(v_out).to(run.device), torch.from_numpy(v_tgt).to(run.device))
    row = {"val_loss": float(loss)}
    if run.metric is not None:
        row[f"val_{run.metric.name}"] = run.metric(v_out, v_tgt)
    if run.select is not None and run.select_key not in row:
        row[run.select_key] = run.select(v_out, v_tgt)
    return row


def epoch_row(run: RunContext, tools: StageTools, state: RunState, epoch: int, tally: EpochTally) -> dict[str, Any]:
    """The epoch's log row: training figures (averaged over ranks), validation, speed."""
    info, metric = run.info, run.metric
    row: dict[str, Any] = {"epoch": epoch + 1, "stage": tools.stage.name, "global_step": state.global_step,
                           "lr": tools.optimizer.param_groups[0]["lr"],
                           "train_loss": ddp.all_reduce_mean(tally.mean_loss(), info)}
    if run.cfg.localisation is not None:
        row["train_localisation"] = ddp.all_reduce_mean(tally.mean_localisation(), info)
    if metric is not None and tally.batches:
        row[f"train_{metric.name}"] = tally.score(metric)
    row.update(validate(run, tools.net))
    row["seconds"] = round(tally.seconds, 3)
    row["images_per_s"] = round(tally.images * info.world_size / max(tally.seconds, 1e-9), 2)
    # Stopped by max_steps inside the epoch: log it, but resume at the same batch, not the next epoch.
    if state.batch < run.sampler.batches_per_epoch():
        row["partial_epoch"] = True
    return row


def finish_epoch(run: RunContext, tools: StageTools, state: RunState, row: dict[str, Any],
                 callbacks: Sequence[Callback]) -> bool:
    """Log the row, decide (``end_of_epoch``), keep the best weights, step the scheduler, checkpoint, report.

    Returns:
        True when early stopping ended the stage.
    """
    state.history.append(row)
    partial = bool(row.get("partial_epoch"))
    val_loss = row.get("val_loss", row["train_loss"])
    score = row.get(run.select_key) if run.select is not None else None  # None: by the loss (also without validation)
    outcome = end_of_epoch(state, val_loss, partial, run.cfg.patience, run.stage_start[state.stage + 1],
                           run.total_epochs, score=None if score is None else float(score))
    if outcome.improved and run.info.is_main:
        run.ckpt.save_best(tools.net)
    if not partial:
        tools.scheduler.step(val_loss)
    checkpoint(run, tools, state)
    for cb in callbacks:
        cb.epoch_end(row, state)
    return outcome.stopped_early


def train_stage(run: RunContext, model: nn.Module, index: int, state: RunState, training_state: dict[str, Any] | None,
                callbacks: Sequence[Callback], totals: CallTotals) -> None:
    """The epochs of stage ``index`` from where ``state`` stands (a resumed stage with its optimizer state)."""
    tools = StageTools.start(run, model, run.stages[index])
    if training_state is not None and state.stage == index:
        tools.load(training_state, run.scaler)
    else:
        state.epoch, state.batch, state.bad_epochs = max(state.epoch, run.stage_start[index]), 0, 0
    state.stage = index
    while state.epoch < run.stage_start[index + 1] and not state.finished:
        epoch = state.epoch
        tally = train_one_epoch(run, tools, state, callbacks)
        totals.add(tally)
        row = epoch_row(run, tools, state, epoch, tally)
        totals.stopped_early |= finish_epoch(run, tools, state, row, callbacks)


# --------------------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    loss_fn: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: LoopConfig,
    stages: Sequence[Stage],
    augment: Callable[[torch.Tensor], torch.Tensor] = identity,
    metric: Metric | None = None,
    train_indices: Sequence[int] | None = None,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``model`` through ``stages``; return the history and the best model's validation outputs.

    Args:
        model: any nn.Module; moved to the device (and wrapped in DDP under torchrun).
        loss_fn: (outputs, targets) -> scalar loss.
        train_set, val_set: datasets of ``(uint8 image, target)`` or ``(uint8 image, meta, target)``.
        cfg: the loop settings.
        stages: one or more ``Stage``; their epochs add up to the run's length.
        augment: batched augmentation on float images in [0, 1] (training only).
        metric: headline score logged next to the loss (higher is better).
        train_indices: indices of ``train_set`` to draw from (e.g. after undersampling; default: all).
        callbacks: more ``train.callbacks.Callback`` objects, called after the bar, the epoch line and the CSV
            log (on rank 0 only, as those).

    Raises:
        ValueError: no stage, a stage without epochs, or an empty training set.
    """
    if not stages:
        raise ValueError("fit needs at least one Stage")
    if any(s.epochs < 1 for s in stages):
        raise ValueError(f"every stage needs >= 1 epoch, got {[s.epochs for s in stages]}")
    # Deterministic algorithms are process-wide: restore the caller's setting afterwards.
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if cfg.localisation is None:
            return _fit(model, loss_fn, train_set, val_set, cfg, stages, augment, metric, train_indices, callbacks)
        # Items carry their index (for their masks); the augmentation moves the masks with the photos.
        with cfg.localisation.training(train_set, augment) as (indexed, follow):
            return _fit(model, loss_fn, indexed, val_set, cfg, stages, follow, metric, train_indices, callbacks)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _fit(model, loss_fn, train_set, val_set, cfg, stages, augment, metric, train_indices, extra) -> FitResult:
    run = RunContext.start(model, loss_fn, train_set, val_set, cfg, stages, augment, metric, train_indices)
    state, training_state, resumed_from = resume(run, model)
    callbacks = default_callbacks(cfg.out_dir, cfg.progress, run.info.is_main, metric)
    callbacks += list(extra) if run.info.is_main else []
    totals = CallTotals()
    for index in range(state.stage, len(stages)):
        if state.finished:
            break
        train_stage(run, model, index, state, training_state, callbacks, totals)
        training_state = None  # only the resumed stage continues its optimizer
    return _best_result(run, model, state, totals, resumed_from)


def _best_result(run: RunContext, model: nn.Module, state: RunState, totals: CallTotals,
                 resumed_from: dict[str, int] | None) -> FitResult:
    """The best weights (by validation loss, or ``select_on``'s metric) back in ``model`` (paper 000: "saving the
    best model"), every parameter trainable again, and their validation outputs."""
    ddp.barrier(run.info)
    run.ckpt.load_best(model, run.device)
    for p in unwrap(model).parameters():
        p.requires_grad_(True)
    v_out, v_tgt = np.zeros((0, 0)), np.zeros((0,))
    if run.val_set is not None and len(run.val_set) > 0:
        v_out, v_tgt = evaluate_outputs(model, run.val_set, run.cfg, run.info, run.prepare, run.amp_dtype)
    world = run.info.world_size
    return FitResult(history=state.history, best_val_loss=float(state.best_val_loss), best_epoch=int(state.best_epoch),
                     global_step=int(state.global_step), steps_run=totals.steps_run, resumed_from=resumed_from,
                     stopped_early=totals.stopped_early, val_outputs=v_out, val_targets=v_tgt,
                     images_per_s=totals.images * world / totals.seconds if totals.seconds else float("nan"),
                     selected_on=run.select_key if run.select is not None and run.val_set is not None
                     and len(run.val_set) else "val_loss",
                     best_score=float(state.best_score) if math.isfinite(state.best_score) else float("nan"))


@torch.no_grad()
def evaluate_outputs(model: nn.Module, dataset: Dataset, cfg: LoopConfig, info: ddp.DistInfo,
                     prepare: Callable[[torch.Tensor, bool], torch.Tensor],
                     amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs and targets for every item of ``dataset`` in order (sharded over ranks, then gathered)."""
    model.eval()
    mine = list(range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(torch.utils.data.Subset(dataset, mine), batch_size=cfg.eval_batch_size or cfg.batch_size,
                        shuffle=False, num_workers=cfg.workers)
    outs, tgts = [], []
    net = unwrap(model)
    for batch in loader:
        with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out, target = _forward(net, batch, prepare, train=False)
        outs.append(out.float().cpu().numpy())
        tgts.append(target.cpu().numpy())
    out_arr = np.concatenate(outs) if outs else np.zeros((0,))
    tgt_arr = np.concatenate(tgts) if tgts else np.zeros((0,))
    parts = ddp.all_gather_objects((mine, out_arr, tgt_arr), info)
    order = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    out_all = np.concatenate([p[1] for p in parts if len(p[0])])
    tgt_all = np.concatenate([p[2] for p in parts if len(p[0])])
    inv = np.argsort(order, kind="stable")
    return out_all[inv], tgt_all[inv]
