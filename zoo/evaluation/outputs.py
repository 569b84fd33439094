"""A model's raw outputs over labelled photos, in batches (each ensemble member's too)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def ensemble_members(model: Any) -> list[tuple[str, Any]]:
    """(name, member) of an ensemble (paper 000's fusion: g1.<i>, g2.<i>); [] for a single model."""
    out = []
    for group in ("g1", "g2"):
        for i, m in enumerate(getattr(model, group, None) or []):
            out.append((f"{group}.{i} ({m.config.arch})", m))
    return out


def collect_outputs(model: Any, items: Sequence[Any], batch_size: int = 16, workers: int = 0,
                    device: str = "cpu", progress: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Run the model (and each ensemble member) over items with ``.image`` and ``.label``.

    Returns:
        ``({"model": outputs, member name: outputs, …}, targets, n_unreadable)``: an unreadable photo is counted
        and skipped, never fatal.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from fundus import preprocess
    from fundus.datasets import ImageDataset, collate_skip_none

    cfg = model.config
    ds = ImageDataset(items, transform=lambda rgb: preprocess(rgb, cfg).tensor[0])
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_none)
    members = ensemble_members(model)
    outs: dict[str, list[np.ndarray]] = {"model": [], **{name: [] for name, _ in members}}
    targets = []
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
            if batch is None:
                continue
            x, y = batch
            x = x.to(device)
            outs["model"].append(model(x).float().cpu().numpy())
            for name, m in members:
                outs[name].append(m(x).float().cpu().numpy())
            targets.append(y.numpy())
    arrays = {k: np.concatenate(v) if v else np.zeros((0, cfg.num_outputs)) for k, v in outs.items()}
    return arrays, (np.concatenate(targets) if targets else np.zeros((0,))), ds.skipped
