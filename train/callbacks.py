"""What the loop reports as it goes: the progress bar, a line per epoch, the CSV log (``metrics.csv``).

Each is a ``Callback``; ``train.loop`` calls every callback's ``epoch_start`` / ``batch_end`` /
``train_end`` (the epoch's batches are done, validation follows) / ``epoch_end`` (the row is logged and
checkpointed). ``default_callbacks`` is what ``fit`` uses: the bar with ``LoopConfig.progress``, the line
and the CSV on rank 0 only.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from train.loop_state import EpochTally, RunState
from train.metrics import Metric

CSV_LOG = "metrics.csv"


class Callback:
    """Hooks of the training loop; each does nothing unless overridden."""

    def epoch_start(self, title: str, done: int, batches: int) -> None:
        """An epoch starts; ``done`` of its ``batches`` are done already (a resumed epoch)."""

    def batch_end(self, state: RunState, tally: EpochTally) -> None:
        """One optimizer step is done (``state.batch`` counts it)."""

    def train_end(self) -> None:
        """The epoch's batches are done; validation follows."""

    def epoch_end(self, row: dict[str, Any], state: RunState) -> None:
        """The epoch's row is in ``state.history`` and the state checkpointed."""


class ProgressBar(Callback):
    """tqdm bar over an epoch's batches with the running loss (every 5 batches) and metric.

    The metric needs every output of the epoch so far; it is computed again once the epoch has grown
    by a tenth (every 5 batches early on), so that its cost over an epoch stays linear.
    """

    EVERY = 5
    METRIC_GROWTH = 1.1

    def __init__(self, metric: Metric | None = None) -> None:
        self.metric = metric
        self.bar: Any = None
        self._metric_at, self._score = 1, float("nan")

    def epoch_start(self, title: str, done: int, batches: int) -> None:
        self.bar = tqdm(total=batches, initial=done, desc=title, leave=False)
        self._metric_at, self._score = 1, float("nan")

    def batch_end(self, state: RunState, tally: EpochTally) -> None:
        self.bar.update(1)
        if state.batch % self.EVERY and state.batch != 1:
            return
        shown = {"loss": f"{tally.running_loss():.4f}"}
        if self.metric is not None:
            if tally.batches >= self._metric_at:
                self._score = tally.score(self.metric)
                self._metric_at = max(tally.batches + self.EVERY, math.ceil(tally.batches * self.METRIC_GROWTH))
            shown[self.metric.name] = f"{self._score:.3f}"
        self.bar.set_postfix(shown)

    def train_end(self) -> None:
        self.bar.close()


class EpochLine(Callback):
    """One line per epoch: the row's values (``key=value``)."""

    def epoch_end(self, row: dict[str, Any], state: RunState) -> None:
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


class CsvLog(Callback):
    """The run's history as CSV, rewritten whole after each epoch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def epoch_end(self, row: dict[str, Any], state: RunState) -> None:
        write_csv(self.path, state.history)


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


def default_callbacks(out_dir: Path, progress: bool, is_main: bool, metric: Metric | None) -> list[Callback]:
    """The bar (with ``progress``), the epoch line and ``out_dir/metrics.csv``; on rank 0 only."""
    if not is_main:
        return []
    return ([ProgressBar(metric)] if progress else []) + [EpochLine(), CsvLog(Path(out_dir) / CSV_LOG)]
