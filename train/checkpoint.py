"""The loop's checkpoints under ``out_dir/checkpoints``: written atomically, read back by ``resume``.

``step-N-eE-bB/`` holds the weights (safetensors), the optimizer, scheduler and scaler state (``torch.save``,
our own local file, read back with ``weights_only=True``) and ``state.json`` (``train.loop_state.RunState``);
it is built under a temporary name, then renamed, and ``latest.json`` is replaced last. ``best.safetensors``
holds the weights of the best epoch (validation loss, or ``LoopConfig.select_on``'s metric). Rank 0 writes, every rank can read.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model

LATEST = "latest.json"
BEST_WEIGHTS = "best.safetensors"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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
