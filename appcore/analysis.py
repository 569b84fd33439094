"""One network pass per (image, model, target), cached: everything a slider changes is computed from it.

``Analyser.analyse`` loads nothing itself: it takes an RGB array (from ``fundus.load_image``), checks
that it is a fundus photograph (``zoo.fundus_check``: a photo that is not gets ``NotFundusError``, a
ValueError the front ends show, and no classification), preprocesses it for the model, runs the
explanation engine once, and keeps the result in a bounded LRU keyed by the image's hash, the model
and the target. Moving a slider reads the cached result. The unlike-training verdict of the pass (the model's
own distance, ``zoo.ood``) is joined here with the content distance the fundus check already measured
(``explain.pipeline.with_content_distance``, zoo.predict's rule): either one flags the photo.

Decisions are the model's own (``zoo.model.FundusNet.decide``): a no-disease label ("healthy", "normal",
"No DR") and the disease labels never both stand. "all predicted" explains the decided disease labels
only; regions (θ crop, τ lesion mask, lesion outlines) are drawn only for disease labels
(``Analysis.region_labels``): never for a no-disease answer.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from contextlib import nullcontext

import numpy as np

from appcore.catalogue import ModelCache
from appcore.gpu import model_device, network_pass
from appcore.user_errors import UserInputError
from explain.methods import panel_methods
from explain.pipeline import Analysis, require_rgb, with_content_distance
from explain.targets import Classes, Decided, Predicted, Target
from fundus.check import FundusCheck, NotFundusError
from fundus.tasks import ALL_PREDICTED, MULTILABEL, PREDICTED, target_class, task_of
from zoo.fundus_check import check_fundus_photo

# The page's four panels (the registry's main ones: paper 000's CAM/Grad-CAM/Guided Grad-CAM, paper 004's GMSM).
PANEL_METHODS = panel_methods("main")


def image_digest(rgb: np.ndarray) -> str:
    """A short content hash of an image array (shape and pixels), the cache key of an upload."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((rgb.shape, str(rgb.dtype))).encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def canonical_target(choice: str | None, config) -> str:
    """One menu value per distinct explanation, so equal requests share a cache entry: empty means the
    model's default, and for a multi-label model "predicted" is "all predicted" (every label over its
    threshold, integrated)."""
    task = task_of(config.task)
    if not choice:
        return task.default_target[1]
    if choice == PREDICTED and task is MULTILABEL:
        return ALL_PREDICTED
    return choice


def engine_target(choice: str, config) -> Target:
    """A target-menu value -> the explanation engine's target: "predicted" (``Predicted``), "all predicted"
    (``Decided``: the model's decided labels, its no-disease answer included) or "class:<index>" (``Classes``).

    Raises:
        UserInputError: (a ValueError) an unknown value or a class index outside the model's labels.
    """
    if choice in (None, "", PREDICTED):
        return Predicted()
    if choice == ALL_PREDICTED:
        if task_of(config.task) is not MULTILABEL:
            raise UserInputError("'all predicted' needs a multi-label model")
        return Decided(keep_no_disease=True)
    try:
        index = target_class(choice)
    except ValueError:
        index = None  # "class:x": not a class index, so an unknown target
    if index is not None:
        if not 0 <= index < len(config.labels):
            raise UserInputError(f"class index {index} is outside the model's {len(config.labels)} labels")
        return Classes((index,))
    raise UserInputError(f"unknown target {choice!r}: use 'predicted', 'all predicted' or 'class:<index>'")


class AnalysisCache:
    """A thread-safe LRU of Analysis objects, bounded by count and by the bytes they hold (``Analysis.nbytes``:
    from ~15 MB for a 320 px model to ~40 MB with many drawn pictures, so a count alone does not bound memory).
    The newest analysis always stays, whatever its size."""

    def __init__(self, capacity: int = 16, max_mb: float | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"analysis cache capacity must be >= 1, got {capacity}")
        if max_mb is not None and max_mb <= 0:
            raise ValueError(f"analysis cache budget must be > 0 MB, got {max_mb}")
        self.capacity = capacity
        self.max_bytes = None if max_mb is None else int(max_mb * 2**20)
        self._items: OrderedDict[tuple, Analysis] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Analysis | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, analysis: Analysis) -> None:
        with self._lock:
            self._items[analysis.key] = analysis
            self._items.move_to_end(analysis.key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            if self.max_bytes is None:
                return
            # Measured at each put: the analyses kept grow as sliders draw pictures.
            sizes = {key: item.nbytes for key, item in self._items.items()}
            total = sum(sizes.values())
            while total > self.max_bytes and len(self._items) > 1:
                oldest, _ = self._items.popitem(last=False)
                total -= sizes[oldest]

    def nbytes(self) -> int:
        """The bytes the kept analyses hold now."""
        return sum(item.nbytes for item in list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class Analyser:
    """Runs (or finds in the cache) the one network pass behind a view."""

    VERDICTS_SIZE = 256  # fundus-check verdicts kept by photo digest (a few hundred bytes each)

    def __init__(self, models: ModelCache | None = None, capacity: int = 16, fundus_check: bool = True,
                 max_mb: float | None = None, passes: int | None = None) -> None:
        """
        Args:
            models: the model cache (default: a new one).
            capacity: analyses kept.
            fundus_check: refuse photos that are not fundus photographs (``zoo.fundus_check``) before
                any classification. Off only for experiments on arbitrary images.
            max_mb: the most the kept analyses may hold (None: bounded by ``capacity`` only).
            passes: network passes run at once, over all models (None: one per model at a time). Each pass
                uses every core torch has and holds its activations and gradients (~0.2-0.5 GB) until it ends,
                so on a small server more at once add memory, not speed.
        """
        self.models = models or ModelCache()
        self.cache = AnalysisCache(capacity, max_mb)
        self._pass_slots = threading.BoundedSemaphore(passes) if passes else nullcontext()
        self.fundus_check = fundus_check
        self.passes = 0  # explanation runs (network passes) so far; tests and benchmarks read it
        self._count_lock = threading.Lock()
        self._verdicts: OrderedDict[str, FundusCheck] = OrderedDict()

    def check(self, rgb: np.ndarray, digest: str | None = None) -> FundusCheck:
        """The fundus check of a photo, remembered by the photo's digest (no model is needed for it).

        Raises:
            NotFundusError: (a ValueError) the photo is not a fundus photograph; the message says why.
        """
        digest = digest or image_digest(rgb)
        with self._count_lock:
            verdict = self._verdicts.get(digest)
            if verdict is not None:
                self._verdicts.move_to_end(digest)
        if verdict is None:
            verdict = check_fundus_photo(rgb)
            with self._count_lock:
                self._verdicts[digest] = verdict
                while len(self._verdicts) > self.VERDICTS_SIZE:
                    self._verdicts.popitem(last=False)
        if not verdict.is_fundus:
            raise NotFundusError(verdict)
        return verdict

    def cached(self, digest: str, model_key: str, target: str = PREDICTED) -> Analysis | None:
        """The cached analysis of an image (by its ``image_digest``), or None; never runs the network.

        A slider move needs only this: the photo is not even decoded again.

        Raises:
            ModelUnavailable: the model cannot be loaded (its config decides the canonical target).
        """
        model, _lock = self.models.get(model_key)
        return self.cache.get((digest, model_key, canonical_target(target, model.config)))

    def analyse(self, rgb: np.ndarray, model_key: str, target: str = PREDICTED,
                digest: str | None = None) -> Analysis:
        """The analysis of a photo by a model for a target, from the cache or by one network pass.

        Args:
            rgb: (H, W, 3) uint8 RGB photo, as ``fundus.load_image`` returns it.
            model_key: a model menu value (``appcore.catalogue.parse_model_key``).
            target: "predicted", "all predicted" or "class:<index>".
            digest: the photo's ``image_digest`` when already known.

        Raises:
            TypeError: ``rgb`` is not an (H, W, 3) uint8 array.
            NotFundusError: (a ValueError) the photo is not a fundus photograph: nothing is classified.
            UserInputError: (a ValueError) an invalid target.
            ModelUnavailable: the model cannot be loaded.
        """
        require_rgb(rgb)
        digest = digest or image_digest(rgb)
        verdict = self.check(rgb, digest) if self.fundus_check else None  # before any model is loaded or run
        model, run_lock = self.models.get(model_key)
        config = model.config
        target = canonical_target(target, config)
        key = (digest, model_key, target)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        with self._pass_slots, run_lock:  # one call per model at a time
            # appcore.gpu: on the GPU where there is one (ZeroGPU: inside @spaces.GPU), CPU tensors back; the
            # default gate's maps computed there too, rather than on a slider move
            analysis = network_pass(rgb, model, engine_target(target, config), model_key=model_key, request=target,
                                    key=key)
        with_content_distance(analysis, rgb, verdict)
        with self._count_lock:
            self.passes += 1
        self.cache.put(analysis)
        return analysis


def server_analyser(catalogue=None) -> Analyser:
    """The analyser of a web app (Gradio or Streamlit), bounded so that the server stays under 2 GB
    (``benchmarks/app_soak.py --probe``): at most 3 loaded models; at most 12 cached analyses holding at most
    160 MB (~15 MB each for the shipped 320 px models, more at 512 px and with many drawn pictures); one network
    pass at a time (each holds ~0.2-0.5 GB of activations and gradients while it runs and uses every core: a
    second one at once adds memory, not speed). ``FUNDUS_APP_MODELS_CACHED``, ``FUNDUS_APP_ANALYSES_CACHED``,
    ``FUNDUS_APP_ANALYSES_MB`` and ``FUNDUS_APP_PASSES`` change them."""
    models = ModelCache(int(os.environ.get("FUNDUS_APP_MODELS_CACHED", 3)), device=model_device(), catalogue=catalogue)
    return Analyser(models, int(os.environ.get("FUNDUS_APP_ANALYSES_CACHED", 12)),
                    max_mb=float(os.environ.get("FUNDUS_APP_ANALYSES_MB", 160)),
                    passes=int(os.environ.get("FUNDUS_APP_PASSES", 1)))
