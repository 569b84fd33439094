"""Training data: preprocess each photo once, keep the result in memory and on disk.

``fundus.preprocess`` (field-of-view crop, CLAHE, resize) is the expensive part of reading a fundus
photo (a 3872×2592 JPEG takes ~0.3 s); doing it once per (file, size, preprocessing) and caching the
``(S, S, 3) uint8`` result makes every epoch after the first a memory copy, so data loading does not
starve the model. Augmentation then runs batched on the device (``train.augment``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm


def default_cache_dir() -> Path:
    """``$FCZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/fundus-cam-zoo/preprocessed`` (``~/.cache`` by default)."""
    if os.environ.get("FCZ_CACHE_DIR"):
        return Path(os.environ["FCZ_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "fundus-cam-zoo" / "preprocessed"


@functools.lru_cache(maxsize=1)
def _preprocessing_code_version() -> str:
    """Hash of the fundus preprocessing sources: a code change must not reuse stale cached crops."""
    import fundus

    root = Path(fundus.__file__).parent
    digest = hashlib.sha1()
    for name in ("preprocess.py", "fov.py", "imageio.py"):
        source = root / name
        if source.is_file():
            digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(path: Path, input_size: int, preprocessing: dict[str, Any]) -> str:
    """Key of one preprocessed image: the file (path, size, mtime), how it was preprocessed, and by which code."""
    st = path.stat()
    ident = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, input_size, preprocessing,
                        _preprocessing_code_version()], sort_keys=True)
    return hashlib.sha1(ident.encode()).hexdigest()


def load_cached(cache_file: str | None) -> np.ndarray | None:
    """The array cached in ``cache_file`` (a ``.npy``), None when there is none or it is damaged."""
    if cache_file and os.path.isfile(cache_file):
        try:
            return np.load(cache_file)
        except (OSError, ValueError):
            pass  # a damaged cache entry: the caller recomputes it
    return None


def save_cached(cache_file: str | None, array: np.ndarray) -> None:
    """Write ``array`` to ``cache_file`` atomically (a temporary file, then a rename); None: no cache."""
    if cache_file:
        tmp = f"{cache_file}.{os.getpid()}.tmp.npy"
        np.save(tmp, array)
        os.replace(tmp, cache_file)


def map_jobs(worker: Any, jobs: Sequence[Any], workers: int, desc: str, progress: bool) -> list[Any]:
    """``worker`` over ``jobs`` in order: in ``workers`` processes (> 1) or in this one, with a tqdm bar."""
    bar = dict(total=len(jobs), desc=desc, disable=not progress, leave=False)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(worker, jobs, chunksize=4), **bar))
    return [worker(j) for j in tqdm(jobs, **bar)]


def _preprocess_one(job: tuple[str, dict[str, Any], str | None]) -> tuple[np.ndarray | None, str]:
    """Worker: (path, config dict, cache file) -> (S, S, 3) uint8, or (None, reason) when unreadable."""
    path, config_dict, cache_file = job
    cached = load_cached(cache_file)
    if cached is not None:
        return cached, ""
    from fundus import load_image, preprocess
    from zoo.config import ModelConfig

    try:
        image = preprocess(load_image(path), ModelConfig.from_dict(config_dict)).image
    except (ValueError, OSError) as err:  # fundus.ImageError is a ValueError
        return None, f"{type(err).__name__}: {err}"
    image = np.ascontiguousarray(image, dtype=np.uint8)
    save_cached(cache_file, image)
    return image, ""


def preprocess_all(paths: Sequence[Path], config: Any, workers: int = 0, cache_dir: Path | None = None,
                   progress: bool = True) -> tuple[list[np.ndarray | None], dict[str, str]]:
    """Preprocess photos as the model will see them, in parallel, through the disk cache.

    Args:
        paths: image files.
        config: the model's ``zoo.config.ModelConfig`` (input size, preprocessing).
        workers: processes to use (0 or 1: this process).
        cache_dir: where preprocessed ``.npy`` files live (None: no disk cache).
        progress: show a tqdm bar.

    Returns:
        ``(images, unreadable)``: one ``(S, S, 3) uint8`` array per path (None where unreadable) and
        ``{path: reason}`` for the unreadable ones.
    """
    cfg = config.to_dict()
    pre = cfg["preprocessing"]
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), cfg, str(Path(cache_dir) / f"{cache_key(Path(p), cfg['input_size'], pre)}.npy")
             if cache_dir is not None else None) for p in paths]
    results = map_jobs(_preprocess_one, jobs, workers, f"preprocessing {cfg['input_size']} px", progress)
    unreadable = {j[0]: why for j, (img, why) in zip(jobs, results) if img is None}
    return [img for img, _ in results], unreadable


@dataclass
class CachedImages(Dataset):
    """In-memory training set: ``images`` (N, 3, S, S) uint8, ``targets`` (N, …), optional ``meta`` (N, M).

    Items are ``(image, target)`` or ``(image, meta, target)``, what ``train.loop.fit`` expects. Optional
    ``lesions`` (N, L, m, m) uint8: each photo's lesion region per label in the model's frame (1 = lesion,
    all zero = unknown; ``train.lesion_masks``), read by the loop's localisation term, never part of an item.
    """

    images: torch.Tensor
    targets: torch.Tensor
    meta: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)
    lesions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be (N, C, S, S) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        self._check_rows()

    def _check_rows(self) -> None:
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")
        if self.meta is not None and len(self.meta) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.meta)} metadata rows")
        if self.lesions is not None and (self.lesions.ndim != 4 or len(self.lesions) != len(self.images)):
            raise ValueError(f"lesions must be (N={len(self.images)}, L, m, m), got {tuple(self.lesions.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.meta is not None:
            return self.images[i], self.meta[i], self.targets[i]
        return self.images[i], self.targets[i]

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], targets: np.ndarray, meta: np.ndarray | None = None,
                    names: Sequence[str] = ()) -> "CachedImages":
        """Build from (S, S, 3) uint8 arrays; multiclass targets become int64, the others float32."""
        if len(images) == 0:
            arr = torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
        else:
            arr = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        t = np.asarray(targets)
        tt = torch.from_numpy(t.astype(np.int64) if t.dtype.kind in "iub" else t.astype(np.float32))
        m = None if meta is None else torch.from_numpy(np.asarray(meta, dtype=np.float32))
        return cls(arr, tt, m, list(names))

    def subset(self, indices: Sequence[int]) -> "CachedImages":
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return type(self)(self.images[idx], self.targets[idx], None if self.meta is None else self.meta[idx],
                          [self.names[i] for i in idx.tolist()] if self.names else [],
                          None if self.lesions is None else self.lesions[idx])

    def concat(self, other: "CachedImages") -> "CachedImages":
        """This set followed by ``other`` (e.g. DCGAN-generated images)."""
        if (self.meta is None) != (other.meta is None):
            raise ValueError("cannot concatenate a set with metadata and one without")
        meta = None if self.meta is None else torch.cat([self.meta, other.meta])
        return type(self)(torch.cat([self.images, other.images.to(self.images.dtype)]), torch.cat([self.targets, other.targets.to(self.targets.dtype)]),
                            meta, self.names + other.names, _concat_lesions(self, other))


def _concat_lesions(a: CachedImages, b: CachedImages) -> torch.Tensor | None:
    """Both sets' lesion masks, all zero (unknown) for the photos of a set without any."""
    if a.lesions is None and b.lesions is None:
        return None
    shape = (a.lesions if a.lesions is not None else b.lesions).shape[1:]
    fill = [x.lesions if x.lesions is not None else torch.zeros((len(x), *shape), dtype=torch.uint8) for x in (a, b)]
    return torch.cat(fill)
