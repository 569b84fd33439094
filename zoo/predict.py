"""``zoo.predict``: photos in, the task's answer out (probabilities, decisions, grade), with warnings."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from fundus.tasks import MULTICLASS, task_of
from zoo import ood
from zoo.model import FundusNet


def _describe(image: Any, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"image[{index}]"


def _result(model: FundusNet, out: torch.Tensor, source: str, warnings: list[str]) -> dict[str, Any]:
    config = model.config
    probs = model.probabilities(out.unsqueeze(0))[0]
    decision = model.decide(out.unsqueeze(0))[0]
    result: dict[str, Any] = {"source": source, "model": config.name, "task": config.task}
    task = task_of(config.task)
    if task.regression:
        grade = int(decision)
        result["value"] = float(probs[0])
        result["grade"] = grade
        result["grade_label"] = config.labels[grade] if grade < len(config.labels) else str(grade)
    else:
        result["probabilities"] = {label: float(p) for label, p in zip(config.labels, probs)}
        if task is MULTICLASS:
            result["predicted"] = config.labels[int(decision)]
        else:
            result["predicted"] = [label for label, on in zip(config.labels, decision.tolist()) if on]
    result["warnings"] = list(warnings)
    return result


@torch.no_grad()
def predict(model: FundusNet, images: Any, *, batch_size: int = 8,
            checks: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """Run a model on fundus photos, preprocessed as its config says.

    Args:
        model: a zoo model (put in eval mode here).
        images: one photo or a sequence of photos; each a path, encoded bytes, a PIL image or an
            ``(H, W, 3)`` array (anything ``fundus.load_image`` accepts).
        batch_size: photos per forward pass.
        checks: the photos' fundus checks (``zoo.fundus_check``) where the caller already made them, one per photo:
            their content distance is reused instead of running the content network again.

    Returns:
        One dict per photo: ``source``, ``model``, ``task``, then ``probabilities`` (label → p) and
        ``predicted`` (a label for multiclass, the labels over their thresholds for multilabel), or
        ``value``/``grade``/``grade_label`` for grade regression; ``warnings`` (list of str); and, for a model
        shipped with an unlike-training reference (``zoo.ood``), ``unlike_training`` (distance, threshold, flag,
        ``flagged_by``; for a model trained on the content reference's sources also ``content_distance`` and
        ``content_threshold``: ``zoo.fundus_check.content_verdicts``).

    Raises:
        TypeError: ``model`` is not a FundusNet.
        ValueError: no images; fundus.ImageError (a ValueError) for an unreadable photo, naming it.
    """
    if not isinstance(model, FundusNet):
        raise TypeError(f"model must be a zoo FundusNet, got {type(model).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, (str, Path, bytes, np.ndarray)) or not isinstance(images, Sequence):
        images = [images]
    if len(images) == 0:
        raise ValueError("predict needs at least one image")
    if checks is not None and len(checks) != len(images):
        raise ValueError(f"checks must give one fundus check per photo: {len(checks)} for {len(images)} photos")
    model.eval()
    results: list[dict[str, Any]] = []
    for start in range(0, len(images), batch_size):
        chunk_checks = None if checks is None else list(checks[start:start + batch_size])
        results += _predict_batch(model, images[start:start + batch_size], start, chunk_checks)
    return results


def _predict_batch(model: FundusNet, chunk: Sequence[Any], start: int,
                   checks: list[Any] | None) -> list[dict[str, Any]]:
    """One forward pass over ``chunk`` (photos ``start`` … of the call): each photo's result dict."""
    from fundus import ImageError, load_image, preprocess  # lazy: zoo stays importable on its own

    prepared = []
    for offset, image in enumerate(chunk):
        source = _describe(image, start + offset)
        try:
            rgb = load_image(image)
        except ImageError as err:
            raise ImageError(f"{source}: {err}") from err
        prepared.append((source, preprocess(rgb, model.config), rgb))
    batch = torch.cat([p.tensor for _, p, _ in prepared]).to(next(model.parameters()).device)
    with ood.pooled_features(model) if ood.reference_of(model) is not None else nullcontext([]) as found:
        outputs = model(batch).float().cpu()
    assessed = ood.assess(model, found[-1]) if found else None
    if assessed is not None:
        assessed = ood.with_content_verdicts(model.config, assessed, [rgb for _, _, rgb in prepared], checks)
    results = []
    for k, (out, (source, p, _)) in enumerate(zip(outputs, prepared)):
        result = _result(model, out, source, p.warnings)
        if assessed is not None:
            result["unlike_training"] = assessed[k]
            if ood.warning(assessed[k]):
                result["warnings"].append(ood.warning(assessed[k]))
        results.append(result)
    return results
