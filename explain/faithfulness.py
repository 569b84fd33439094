"""Faithfulness of a map: does the model rely on what the map shows? ROAD, through pytorch-grad-cam.

ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML) removes the
pixels a map ranks highest (MoRF) or lowest (LeRF) and fills them by noisy linear imputation from their neighbours,
so that the filled photo carries no trace of the removed pixels' shape. pytorch-grad-cam's ``ROADCombined``
(``pytorch_grad_cam.metrics.road``) averages, over the removal percentiles, (Δ score LeRF − Δ score MoRF) / 2: the
score falls more when the map's strongest pixels go than when its weakest go, so higher is more faithful, 0 is a
map the model does not care about. A map that points at lesions the model ignores is as misleading as one that
misses them.

The score is the one the maps explain: the model's raw output cells of the explained target, summed as the
integrated map sums them (paper 000 eq. 4).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

ROAD_PERCENTILES = (20, 40, 60, 80)  # of the map's pixels removed; the paper's 10 … 90 costs twice as much


class _Outputs(nn.Module):
    """The model with its outputs as one (B, C) tensor, whatever it returns (ROAD indexes them per image)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from explain.explainer import _as_outputs

        return _as_outputs(self.model(x), x.shape[0])


class CellsScore:
    """ROAD's target: the sum of an output's explained cells."""

    def __init__(self, cells: Sequence[int]) -> None:
        self.cells = [int(c) for c in cells]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.cells].sum(dim=-1)


def road_scores(model: nn.Module, tensor: torch.Tensor, maps: dict[str, np.ndarray], cells: Sequence[int], *,
                percentiles: Sequence[int] = ROAD_PERCENTILES, seed: int = 0) -> dict[str, float]:
    """ROADCombined of each map for one photo.

    Args:
        model: the zoo model (in eval mode).
        tensor: (1, 3, H, W) the photo as the model takes it.
        maps: name -> (H, W) map at the input's size.
        cells: the output cells the maps explain.
        percentiles: removal percentiles averaged over.
        seed: the imputation noise's seed (each map gets the same draws).

    Returns:
        name -> (Δ LeRF − Δ MoRF) / 2 in the units of the model's raw output.

    Raises:
        ValueError: a map whose size is not the input's.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined

    metric = ROADCombined(percentiles=list(percentiles))
    wrapped = _Outputs(model).eval()
    size = tuple(tensor.shape[-2:])
    scores = {}
    for name, saliency in maps.items():
        values = np.asarray(saliency, np.float32)
        if values.shape != size:
            raise ValueError(f"map {name!r} is {values.shape}, the input {size}")
        torch.manual_seed(seed)
        scores[name] = float(metric(tensor.detach().float().cpu(), values[None], [CellsScore(cells)], wrapped)[0])
    return scores
