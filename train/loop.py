"""The one training loop every recipe runs: stages, checkpoints, resume, early stopping, DDP.

Features (see docs/ARCHITECTURE.md):
- seeds and deterministic algorithms on CPU; AMP (bf16, or fp16 + GradScaler) and channels-last on CUDA;
- stages (e.g. paper 001: frozen backbone at lr 0.01, then everything at 0.001), each with its own
  optimizer and ReduceLROnPlateau on the validation loss;
- early stopping and a best checkpoint on the validation loss (the best weights are restored at the end);
- a checkpoint at the end of each epoch and optionally every N steps, written atomically
  (``checkpoints/step-N/`` built under a temporary name, then renamed; ``latest.json`` replaced last);
  weights as safetensors, optimizer state with ``torch.save`` (our own local file, read back with
  ``weights_only=True``), progress as JSON; ``resume=True`` continues mid-epoch at the exact batch;
- the same code under ``torchrun --nproc_per_node=N`` (a sharded sampler, gradients all-reduced by DDP,
  validation outputs gathered, only rank 0 writes);
- tqdm progress bars with the running loss and metric; a CSV log rewritten each epoch.

Data items are ``(image_uint8 (3, S, S), target)`` or ``(image_uint8, metadata, target)`` tuples; the loop
turns images into floats on the device, applies the batched augmentation, then normalises.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from train import ddp
from train.augment import identity
from train.metrics import Metric

LATEST = "latest.json"
BEST_WEIGHTS = "best.safetensors"
CSV_LOG = "metrics.csv"


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
    patience: int = 10  # early stopping: epochs without a better validation loss
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


@dataclass
class FitResult:
    """What ``fit`` returns: the history and the best model's validation outputs."""

    history: list[dict[str, Any]]
    best_val_loss: float
    best_epoch: int
    global_step: int
    steps_run: int  # optimizer steps taken by this call (less than global_step after a resume)
    resumed_from: dict[str, int] | None
    stopped_early: bool
    val_outputs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    val_targets: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    images_per_s: float = float("nan")


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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


# --------------------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Atomic checkpoints under ``out_dir/checkpoints`` (rank 0 writes, every rank can read)."""

    def __init__(self, out_dir: Path, keep: int = 1) -> None:
        self.root = Path(out_dir) / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        folder = self.root / json.loads(pointer.read_text())["dir"]
        return folder if (folder / "state.json").is_file() else None

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
             state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"step-{state['global_step']:08d}-e{state['epoch']:04d}-b{state['batch']:06d}"
        tmp = self.root / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(unwrap(model), str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {}},
                   tmp / "training_state.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        final = self.root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.root / LATEST, json.dumps({"dir": name}))
        old = sorted(p for p in self.root.glob("step-*") if p.is_dir() and p != final and not p.name.endswith(".tmp"))
        stale = [p for p in self.root.glob("step-*.tmp") if p.is_dir()]  # left by a run killed mid-write
        for p in old[: max(0, len(old) - (self.keep - 1))] + stale:
            shutil.rmtree(p, ignore_errors=True)
        return final

    def save_best(self, model: nn.Module) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (BEST_WEIGHTS + ".tmp")
        save_model(unwrap(model), str(tmp))
        os.replace(tmp, self.root / BEST_WEIGHTS)

    def load_best(self, model: nn.Module, device: torch.device) -> bool:
        path = self.root / BEST_WEIGHTS
        if not path.is_file():
            return False
        load_model(unwrap(model), str(path), device=str(device))
        return True

    @staticmethod
    def load(folder: Path, model: nn.Module, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
        load_model(unwrap(model), str(folder / "model.safetensors"), device=str(device))
        training = torch.load(folder / "training_state.pt", map_location=device, weights_only=True)
        return json.loads((folder / "state.json").read_text()), training


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch log as CSV (rewritten whole, atomically)."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


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
            return _fit(model, loss_fn, train_set, val_set, cfg, stages, augment, metric, train_indices)
        # Items carry their index (for their masks); the augmentation moves the masks with the photos.
        with cfg.localisation.training(train_set, augment) as (indexed, follow):
            return _fit(model, loss_fn, indexed, val_set, cfg, stages, follow, metric, train_indices)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _fit(model, loss_fn, train_set, val_set, cfg, stages, augment, metric, train_indices) -> FitResult:
    info = ddp.init_distributed(cfg.device)
    device = info.device
    cuda = device.type == "cuda"
    seed_everything(cfg.seed, cfg.deterministic and not cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    if info.is_main:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(cfg.out_dir)

    model.to(device)
    channels_last = cfg.channels_last if cuda else cfg.cpu_channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    if cuda:
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cfg.amp else None
    else:
        amp_dtype = torch.bfloat16 if cfg.cpu_bf16 and cpu_has_fast_bf16() else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16) if cuda else None
    mean = torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, -1, 1, 1)

    def prepare(images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.dtype != torch.uint8:  # cached features of frozen layers (train.frozen): ready as they are
            x = images.to(device, non_blocking=True).float()
        else:
            x = images.to(device, non_blocking=True).float().div_(255.0)
            if train:
                x = augment(x)
            x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    indices = list(range(len(train_set))) if train_indices is None else list(train_indices)
    sampler = ResumableBatchSampler(indices, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                    rank=info.rank, world_size=info.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers, pin_memory=cuda,
                        persistent_workers=cfg.workers > 0)
    stage_start = np.cumsum([0] + [s.epochs for s in stages]).tolist()
    total_epochs = stage_start[-1]

    # ---- resume
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "global_step": 0, "stage": 0, "best_val_loss": math.inf,
                             "best_epoch": -1, "bad_epochs": 0, "history": [], "finished": False}
    training_state: dict[str, Any] | None = None
    resumed_from = None
    latest = ckpt.latest() if cfg.resume else None
    if latest is not None:
        state, training_state = Checkpointer.load(latest, model, device)
        resumed_from = {k: state[k] for k in ("epoch", "batch", "global_step")}
        # "Finished" depends on this call's budget: a resumed run may be given more epochs or steps.
        state["finished"] = state["epoch"] >= total_epochs or (
            cfg.max_steps is not None and state["global_step"] >= cfg.max_steps)
        if info.is_main:
            tqdm.write(f"resuming from {latest.name}: epoch {state['epoch']}, batch {state['batch']}, "
                       f"step {state['global_step']}")
    history: list[dict[str, Any]] = state["history"]

    term = cfg.localisation
    steps_run = 0
    stopped_early = False
    timed_images, timed_seconds = 0, 0.0
    stage_idx = state["stage"]
    while stage_idx < len(stages) and not state["finished"]:
        stage = stages[stage_idx]
        params = _set_trainable(unwrap(model), stage)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None) \
            if info.distributed else model
        optimizer = _make_optimizer(params, stage.lr, cfg)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
        if training_state is not None and state["stage"] == stage_idx:
            optimizer.load_state_dict(training_state["optimizer"])
            scheduler.load_state_dict(training_state["scheduler"])
            if scaler is not None and training_state.get("scaler"):
                scaler.load_state_dict(training_state["scaler"])
            training_state = None
        else:
            state.update(epoch=max(state["epoch"], stage_start[stage_idx]), batch=0, bad_epochs=0)
        state["stage"] = stage_idx

        def snapshot() -> None:
            if info.is_main:
                ckpt.save(net, optimizer, scheduler, scaler, {**state, "history": history})

        while state["epoch"] < stage_start[stage_idx + 1] and not state["finished"]:
            epoch = state["epoch"]
            seed_everything(_epoch_seed(cfg.seed, epoch, state["batch"]), cfg.deterministic and not cuda)
            sampler.set_epoch(epoch, state["batch"])
            net.train()
            losses, outs, tgts, parts = [], [], [], []
            t0 = time.perf_counter()
            n_images = 0
            bar = tqdm(loader, desc=f"{stage.name} epoch {epoch + 1}/{total_epochs}", leave=False,
                       disable=not (cfg.progress and info.is_main), initial=state["batch"],
                       total=sampler.batches_per_epoch())
            for batch in bar:
                # A seed per (epoch, batch): augmentation and dropout draw the same numbers whether or not
                # the run was interrupted and resumed, so a resumed run ends with the same weights (each DDP
                # rank its own stream).
                torch.manual_seed((_epoch_seed(cfg.seed, epoch, state["batch"]) + 1_000_000_007 * info.rank) % 2**63)
                if term is not None:
                    batch = term.take(batch)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out, target = _forward(net, batch, prepare, train=True)
                    target = target.to(device, non_blocking=True)
                    loss = loss_fn(out.float(), target)
                    if term is not None:  # total = classification + λ · localisation (train.localisation)
                        parts.append(term.loss(target))
                        loss = loss + term.weight * parts[-1]
                        parts[-1] = parts[-1].detach()
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if scaler is not None and scaler.is_enabled():
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                state["batch"] += 1
                state["global_step"] += 1
                steps_run += 1
                n_images += len(target)
                losses.append(loss.detach())
                outs.append(out.detach().float())
                tgts.append(target.detach())
                if cfg.progress and info.is_main and (state["batch"] % 5 == 0 or state["batch"] == 1):
                    post = {"loss": f"{torch.stack(losses).mean().item():.4f}"}
                    if metric is not None:
                        post[metric.name] = f"{metric(torch.cat(outs).cpu().numpy(), torch.cat(tgts).cpu().numpy()):.3f}"
                    bar.set_postfix(post)
                if cfg.max_steps is not None and state["global_step"] >= cfg.max_steps:
                    state["finished"] = True
                    break
                if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0:
                    snapshot()
            bar.close()
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            timed_images, timed_seconds = timed_images + n_images, timed_seconds + seconds

            train_loss = ddp.all_reduce_mean(torch.stack(losses).mean().item() if losses else float("nan"), info)
            row: dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name, "global_step": state["global_step"],
                                   "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss}
            if term is not None:
                row["train_localisation"] = ddp.all_reduce_mean(
                    torch.stack(parts).mean().item() if parts else float("nan"), info)
            if metric is not None and outs:
                row[f"train_{metric.name}"] = metric(torch.cat(outs).cpu().numpy(), torch.cat(tgts).cpu().numpy())
            if val_set is not None and len(val_set) > 0:
                v_out, v_tgt = evaluate_outputs(net, val_set, cfg, info, prepare, amp_dtype)
                val_loss = float(loss_fn(torch.from_numpy(v_out).to(device), torch.from_numpy(v_tgt).to(device)))
                row["val_loss"] = val_loss
                if metric is not None:
                    row[f"val_{metric.name}"] = metric(v_out, v_tgt)
            else:
                val_loss = train_loss
            row["seconds"] = round(seconds, 3)
            row["images_per_s"] = round(n_images * info.world_size / max(seconds, 1e-9), 2)
            # Stopped by max_steps inside the epoch: log it, but resume at the same batch, not the next epoch.
            partial = state["batch"] < sampler.batches_per_epoch()
            if partial:
                row["partial_epoch"] = True
            history.append(row)
            if val_loss < state["best_val_loss"]:
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1)
                if not partial:
                    state["bad_epochs"] = 0
                if info.is_main:
                    ckpt.save_best(net)
            elif not partial:
                state["bad_epochs"] += 1
            if not partial:
                scheduler.step(val_loss)
                state.update(epoch=epoch + 1, batch=0)
                if state["bad_epochs"] >= cfg.patience:
                    stopped_early = True
                    state["epoch"] = stage_start[stage_idx + 1]  # on to the next stage, if any
            if info.is_main:
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if state["epoch"] >= total_epochs:
                state["finished"] = True
            snapshot()
            if info.is_main:
                write_csv(cfg.out_dir / CSV_LOG, history)
        stage_idx += 1

    ddp.barrier(info)
    ckpt.load_best(model, device)  # the best weights by validation loss (paper 000: "saving the best model")
    for p in unwrap(model).parameters():
        p.requires_grad_(True)
    v_out, v_tgt = np.zeros((0, 0)), np.zeros((0,))
    if val_set is not None and len(val_set) > 0:
        v_out, v_tgt = evaluate_outputs(model, val_set, cfg, info, prepare, amp_dtype)
    return FitResult(history=history, best_val_loss=float(state["best_val_loss"]), best_epoch=int(state["best_epoch"]),
                     global_step=int(state["global_step"]), steps_run=steps_run, resumed_from=resumed_from,
                     stopped_early=stopped_early, val_outputs=v_out, val_targets=v_tgt,
                     images_per_s=timed_images * info.world_size / timed_seconds if timed_seconds else float("nan"))


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
