"""Lesion masks and boxes in the model's frame, small, one per (training photo, label), cached on disk.

The localisation term (``train.localisation``) compares a class map with where the lesions are, so the
annotations must go through the photo's own geometry: the field-of-view crop and the resize of
``fundus.preprocess``. That is what ``python -m explain evaluate`` already does
(``explain.cli.lesion_truth``: IDRiD masks read from their TIFFs, YOLO boxes rasterised by
``explain.metrics.boxes_to_mask``, both through ``Preprocessed.to_model``), so it is reused here. The
(S, S) result is shrunk by "any lesion pixel" to ``S // 8`` (four times the class map's side for the
stride-32 backbones), stored as uint8 (1 = lesion), one ``(L, m, m)`` array per photo.

- lesion masks (idrid-seg): the MA, HE, EX, SE masks; lesion boxes (idrid-grading-boxes, diaretdb1-boxes): the
  ``hard_exudates`` boxes mark HEX and the ``haemorrhage`` boxes HM. Those sets bundle microaneurysms
  into ``haemorrhage``, so HM's region there includes microaneurysms (a looser region: less penalised,
  never wrongly), and BP/MA gets no region from them: its target is unknown in those sets
  (``fundus.datasets.labels.sample_target``), and an unknown label adds nothing. ``optic_disc`` boxes are
  not lesions and mark nothing.
- An empty mask means "no region known" (no annotation, a label without a lesion code such as healthy,
  or a lesion lost in the crop): the term leaves that (photo, label) out.

The disk cache lives beside the preprocessed photos (``train.data``): its key is the photo's own cache key
(file, input size, preprocessing, preprocessing code) plus the annotation files or boxes, the labels, the
mask size and the source of the code that draws the masks, so a change to any of them makes a new entry.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from fundus.datasets.labels import lesion_code
from fundus.datasets.registry import LESION_MASKS, annotated_formats, format_of
from train.data import cache_key, load_cached, map_jobs, save_cached

# Stored masks: this fraction of the input size (4× the class map of a stride-32 backbone).
MASK_FRACTION = 8


def mask_size(input_size: int) -> int:
    """Side of the stored masks for a model input of ``input_size`` pixels."""
    return max(1, int(input_size) // MASK_FRACTION)


@functools.lru_cache(maxsize=1)
def _mask_code_version() -> str:
    """Hash of the code that draws the masks: a change must not reuse stale cached masks."""
    from explain import cli, metrics
    from fundus.datasets import idrid_seg, labels

    digest = hashlib.sha1(Path(__file__).read_bytes())
    for part in (cli.lesion_truth, labels.lesion_code, metrics.boxes_to_mask, idrid_seg.load_mask):
        digest.update(inspect.getsource(part).encode())
    digest.update(json.dumps(labels.LESION_ALIASES, sort_keys=True).encode())  # the boxes' class names
    return digest.hexdigest()[:12]


def _annotation_ident(fmt: str, sample: Any) -> list:
    if format_of(fmt).annotation == LESION_MASKS:
        files = sorted((sample.masks or {}).items())
        return [[kind, str(p), p.stat().st_size, p.stat().st_mtime_ns] for kind, p in files]
    return [list(box) for box in sample.boxes or []]


def masks_cache_key(image: Path, config: dict[str, Any], fmt: str, sample: Any, labels: Sequence[str],
                    size: int) -> str:
    """Key of one photo's cached masks (see the module docstring)."""
    ident = json.dumps([cache_key(Path(image), config["input_size"], config["preprocessing"]), fmt,
                        _annotation_ident(fmt, sample), list(labels), size, _mask_code_version()])
    return hashlib.sha1(ident.encode()).hexdigest()


def shrink_any(mask: np.ndarray, size: int) -> np.ndarray:
    """An (S, S) bool mask as (size, size) uint8: 1 where a cell holds any lesion pixel."""
    area = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (area > 0).astype(np.uint8)


def photo_masks(image: Path, fmt: str, sample: Any, config: Any, labels: Sequence[str], size: int) -> np.ndarray:
    """One photo's ``(L, size, size)`` uint8 masks in the model's frame (all zero for a label without region).

    Raises:
        ValueError, OSError: the photo or a mask file cannot be read.
    """
    from explain.cli import lesion_truth
    from fundus import load_image, preprocess

    pre = preprocess(load_image(image), config)
    out = np.zeros((len(labels), size, size), np.uint8)
    for k, label in enumerate(labels):
        code = lesion_code(label)
        if code is not None:
            out[k] = shrink_any(lesion_truth(sample, code, fmt, pre), size)
    return out


def _masks_job(job: tuple) -> np.ndarray | None:
    """Worker: one photo's masks through the disk cache (None when unreadable)."""
    image, fmt, sample, config_dict, labels, size, cache_file = job
    masks = load_cached(cache_file)
    if masks is not None:
        return masks
    from zoo.config import ModelConfig

    try:
        masks = photo_masks(image, fmt, sample, ModelConfig.from_dict(config_dict), labels, size)
    except (ValueError, OSError):
        return None
    save_cached(cache_file, masks)
    return masks


def lesion_masks(annotations: Sequence[tuple[str, Any] | None], images: Sequence[Path], config: Any,
                 labels: Sequence[str], workers: int = 0, cache_dir: Path | None = None,
                 progress: bool = True) -> torch.Tensor:
    """Masks of a training set's photos, in its order, for ``CachedImages.lesions``.

    Args:
        annotations: per photo ``(format, fundus Sample)`` of an annotated layout, or None (no masks).
        images: the photo files, in the same order.
        config: the model's ``ModelConfig`` (input size, preprocessing).
        labels: the model's labels (their lesion codes pick the masks).
        workers: processes (0 or 1: this process).
        cache_dir: where the ``.npy`` masks are cached (None: no disk cache).

    Returns:
        ``(N, L, m, m)`` uint8, m = ``mask_size(config.input_size)``; zeros where nothing is known.

    Raises:
        ValueError: ``annotations`` and ``images`` differ in length.
    """
    if len(annotations) != len(images):
        raise ValueError(f"{len(annotations)} annotations for {len(images)} photos")
    cfg = config.to_dict()
    size = mask_size(cfg["input_size"])
    out = torch.zeros((len(images), len(labels), size, size), dtype=torch.uint8)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jobs, rows, annotated = [], [], annotated_formats()
    for i, (found, image) in enumerate(zip(annotations, images)):
        if found is None or found[0] not in annotated:
            continue
        fmt, sample = found
        key = masks_cache_key(image, cfg, fmt, sample, labels, size) if cache_dir is not None else None
        jobs.append((str(image), fmt, sample, cfg, list(labels), size,
                     str(Path(cache_dir) / f"{key}.lesions.npy") if key else None))
        rows.append(i)
    for i, masks in zip(rows, map_jobs(_masks_job, jobs, workers, f"lesion masks {size} px", progress)):
        if masks is not None:
            out[i] = torch.from_numpy(masks)
    return out
