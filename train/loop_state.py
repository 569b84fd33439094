"""What the training loop keeps: the run's state (saved with every checkpoint) and its end-of-epoch
decisions, and one epoch's tally of losses and outputs.

``end_of_epoch`` is the loop's only branching on validation values (best epoch, patience, early stop, the
run's end) as a function of the state: a scripted sequence of validation losses (and scores) is enough to test it.
The best epoch is the lowest validation loss, or with a selection score (``LoopConfig.select_on = "metric"``:
e.g. the DR graders' validation quadratic kappa) the highest score, ties going to the lower loss.
``EpochTally`` keeps an epoch's outputs for its figures and gives running ones on the way at the cost of
what the new batches add: outputs move to a host buffer once, never re-concatenated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from train.metrics import Metric


@dataclass
class RunState:
    """Where a run stands; ``state.json`` of each checkpoint, read back by ``resume``."""

    epoch: int = 0  # epochs done, counted over all stages (the next epoch to train, 0-based)
    batch: int = 0  # batches done of that epoch (a resumed run starts at the next one)
    global_step: int = 0  # optimizer steps in all
    stage: int = 0  # index of the stage being trained
    best_val_loss: float = math.inf  # the best epoch's validation loss (selecting on the loss: the lowest)
    best_epoch: int = -1  # 1-based best epoch (-1: none yet)
    bad_epochs: int = 0  # whole epochs since the best one: early stopping's patience counter
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (metrics.csv)
    finished: bool = False
    # The best epoch's selection score where the run selects on a metric (higher is better); -inf: none yet, or
    # the run selects on the loss. A state.json from before this field resumes with -inf (train.loop.resume).
    best_score: float = -math.inf

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values (the history shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "RunState":
        """A state from ``to_dict``'s keys (others ignored)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass(frozen=True)
class EpochOutcome:
    """What the loop does after an epoch, besides logging it."""

    improved: bool  # a new best epoch (validation loss, or score): save the best weights
    stopped_early: bool  # patience ran out: on to the next stage, if any


def end_of_epoch(state: RunState, val_loss: float, partial: bool, patience: int, stage_end: int,
                 total_epochs: int, score: float | None = None) -> EpochOutcome:
    """Update ``state`` after the epoch ``state.epoch``: best epoch, patience counter, next epoch, finished.

    Args:
        val_loss: the epoch's validation loss (the training loss without validation photos).
        partial: the epoch was cut short by ``max_steps``: its best counts, but a resumed run continues it
            (the epoch and the patience counter stay).
        patience: whole epochs without a better loss that end the stage.
        stage_end: the first epoch of the next stage (where an early stop continues).
        total_epochs: the run's length; reaching it finishes the run.
        score: the epoch's validation score to select on (higher is better; a tie goes to the lower loss, NaN is
            never best); None: select on ``val_loss`` (lower is better).
    """
    if score is None:
        improved = val_loss < state.best_val_loss
    else:
        improved = score > state.best_score or (score == state.best_score and val_loss < state.best_val_loss)
    if improved:
        state.best_val_loss, state.best_epoch = val_loss, state.epoch + 1
        if score is not None:
            state.best_score = score
        if not partial:
            state.bad_epochs = 0
    elif not partial:
        state.bad_epochs += 1
    stopped_early = False
    if not partial:
        state.epoch, state.batch = state.epoch + 1, 0
        if state.bad_epochs >= patience:
            stopped_early, state.epoch = True, stage_end
    if state.epoch >= total_epochs:
        state.finished = True
    return EpochOutcome(improved, stopped_early)


class HostRows:
    """Arrays appended batch by batch into one host array that doubles when full (linear in all)."""

    def __init__(self) -> None:
        self._data: np.ndarray | None = None
        self.n = 0

    def append(self, rows: np.ndarray) -> None:
        if self._data is None:
            self._data = np.empty((max(len(rows), 64),) + rows.shape[1:], rows.dtype)
        if self.n + len(rows) > len(self._data):
            grown = np.empty((max(2 * len(self._data), self.n + len(rows)),) + self._data.shape[1:], self._data.dtype)
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : self.n + len(rows)] = rows
        self.n += len(rows)

    def view(self) -> np.ndarray:
        """The rows so far (a view: valid until the next ``append``)."""
        return self._data[: self.n] if self._data is not None else np.zeros((0,))


class EpochTally:
    """One epoch's training losses and outputs.

    ``add`` keeps tensors on the device (no synchronisation per batch); ``score`` and ``running_loss``
    bring only what came since their last call to the host, so the running figures of an epoch cost
    linear time in all, and ``score`` equals the metric of all the epoch's outputs concatenated.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.images = 0
        self.seconds = 0.0
        self._losses: list[torch.Tensor] = []
        self._localisation: list[torch.Tensor] = []
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # outputs not on the host yet
        self._outputs, self._targets = HostRows(), HostRows()
        self._loss_sum, self._losses_summed = 0.0, 0

    def add(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor,
            localisation: torch.Tensor | None = None) -> None:
        """One batch's (detached) loss, outputs (float) and targets; the localisation term if on."""
        self.batches += 1
        self.images += len(target)
        self._losses.append(loss)
        self._pending.append((output, target))
        if localisation is not None:
            self._localisation.append(localisation)

    def mean_loss(self) -> float:
        """The epoch's mean batch loss (NaN without a batch)."""
        return torch.stack(self._losses).mean().item() if self._losses else float("nan")

    def mean_localisation(self) -> float:
        """The epoch's mean localisation term (NaN without one)."""
        return torch.stack(self._localisation).mean().item() if self._localisation else float("nan")

    def running_loss(self) -> float:
        """The mean batch loss so far, summing only the batches since the last call."""
        new = self._losses[self._losses_summed :]
        if new:
            self._loss_sum += torch.stack(new).sum().item()
            self._losses_summed = len(self._losses)
        return self._loss_sum / self._losses_summed if self._losses_summed else float("nan")

    def score(self, metric: Metric) -> float:
        """``metric`` over every output of the epoch so far."""
        for output, target in self._pending:
            self._outputs.append(output.cpu().numpy())
            self._targets.append(target.cpu().numpy())
        self._pending.clear()
        return metric(self._outputs.view(), self._targets.view())
