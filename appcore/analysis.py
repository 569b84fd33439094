"""One network pass per (image, model, target), cached: everything a slider changes is computed from it.

``Analyser.analyse`` loads nothing itself: it takes an RGB array (from ``fundus.load_image``), checks
that it is a fundus photograph (``fundus.check_fundus``: a photo that is not gets ``NotFundusError``, a
ValueError the front ends show, and no classification), preprocesses it for the model, runs the
explanation engine once, and keeps the result in a bounded LRU keyed by the image's hash, the model
and the target. Moving a slider reads the cached result.

Decisions are the model's own (``zoo.model.FundusNet.decide``): a no-disease label ("healthy", "normal",
"No DR") and the disease labels never both stand. "all predicted" explains the decided disease labels
only; regions (θ crop, τ lesion mask, lesion outlines) are drawn only for disease labels
(``Analysis.region_labels``): never for a no-disease answer.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appcore.catalogue import ModelCache
from fundus.check import FundusCheck, NotFundusError, check_fundus  # noqa: F401 - NotFundusError: re-exported
from zoo.model import is_no_disease

# The four panels of the page (paper 000: CAM/Grad-CAM/Guided Grad-CAM; paper 004: GMSM).
PANEL_METHODS = ("cam", "gradcam", "guided_gradcam", "gmsm")

# Target choices besides a class index: the predicted class, or (multi-label) every predicted label
# integrated into one Guided Grad-CAM (paper 001 eq. 4).
PREDICTED = "predicted"
ALL_PREDICTED = "all predicted"
DISPLAY_SIDE = 768  # the original photo is kept at most this large, for the preprocessing view


def image_digest(rgb: np.ndarray) -> str:
    """A short content hash of an image array (shape and pixels), the cache key of an upload."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((rgb.shape, str(rgb.dtype))).encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def target_choices(config) -> list[tuple[str, str]]:
    """(label, value) pairs of the target menu for a model config; the first is the default.

    Multi-label models explain every label over its threshold, integrated (paper 001 eq. 4), by default.
    """
    if config.task == "multilabel":
        choices = [("all predicted labels (integrated)", ALL_PREDICTED)]
    elif config.task == "grade-regression":
        choices = [("the predicted grade", PREDICTED)]
    else:
        choices = [("the predicted class", PREDICTED)]
    if config.task != "grade-regression":
        choices += [(label, f"class:{i}") for i, label in enumerate(config.labels)]
    return choices


def canonical_target(choice: str | None, config) -> str:
    """One menu value per distinct explanation, so equal requests share a cache entry: empty means the
    model's default, and for a multi-label model "predicted" is "all predicted" (every label over its
    threshold, integrated)."""
    if not choice:
        return target_choices(config)[0][1]
    if choice == PREDICTED and config.task == "multilabel":
        return ALL_PREDICTED
    return choice


def engine_target(choice: str, config) -> Any:
    """A target-menu value -> the explanation engine's ``target`` argument.

    Raises:
        ValueError: an unknown value or a class index outside the model's labels.
    """
    if choice in (None, "", PREDICTED):
        return "predicted"
    if choice == ALL_PREDICTED:
        if config.task != "multilabel":
            raise ValueError("'all predicted' needs a multi-label model")
        return "all-predicted"
    if isinstance(choice, str) and choice.startswith("class:"):
        index = int(choice.split(":", 1)[1])
        if not 0 <= index < len(config.labels):
            raise ValueError(f"class index {index} is outside the model's {len(config.labels)} labels")
        return index
    raise ValueError(f"unknown target {choice!r}: use 'predicted', 'all predicted' or 'class:<index>'")


def summarise(config, probabilities, decision) -> dict[str, Any]:
    """A JSON-ready prediction: the probabilities (or grade value) and the model's decision.

    Multi-label predictions also list ``overruled``: labels that reached their threshold but lost to the other
    side of the no-disease rule (``zoo.model.FundusNet.decide``), so that the page can say so.

    Args:
        config: the model's ModelConfig.
        probabilities: (num_outputs,) ``model.probabilities`` of the raw outputs.
        decision: ``model.decide`` of the raw outputs for this image (index, bool per label, or grade).
    """
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    decision = np.asarray(decision).ravel()
    if config.task == "grade-regression":
        grade = int(decision[0])
        label = config.labels[grade] if grade < len(config.labels) else f"grade {grade}"
        return {"task": config.task, "value": float(probabilities[0]), "grade": grade, "label": label,
                "grade_cutoffs": [float(c) for c in config.grade_cutoffs], "labels": list(config.labels)}
    result: dict[str, Any] = {
        "task": config.task,
        "probabilities": {label: float(p) for label, p in zip(config.labels, probabilities)},
    }
    if config.task == "multilabel":
        result["thresholds"] = {label: float(th) for label, th in zip(config.labels, config.thresholds)}
        result["predicted"] = [label for label, yes in zip(config.labels, decision) if yes]
        result["overruled"] = [label for label, p, yes in zip(config.labels, probabilities, decision)
                               if not yes and p >= result["thresholds"][label]]
    else:
        result["predicted"] = [config.labels[int(decision[0])]]
    return result


@dataclass
class Analysis:
    """The cached result of one network pass, and the maps derived from it per GMSM gate t."""

    key: tuple
    model_key: str
    config: Any
    photo: np.ndarray  # the original photo, downscaled to <= DISPLAY_SIDE for display
    photo_scale: float  # photo pixels per original pixel
    pre: Any  # fundus.Preprocessed
    explanation: Any  # explain.Explanation
    prediction: dict[str, Any]
    target: str  # the target-menu value
    timings: dict[str, float]
    _maps: dict[float, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _guided: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _memo: OrderedDict = field(default_factory=OrderedDict, repr=False)

    MEMO_SIZE = 16  # drawn pictures kept per analysis (~0.8 MB each at 512 px)

    def memo(self, key: tuple, compute):
        """A drawn picture or region of this analysis, cached by its parameters (bounded LRU).

        Slider moves change one parameter at a time: what depends only on the others is reused.
        """
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self.MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    def maps(self, t: float) -> dict[str, np.ndarray]:
        """{method: (S, S) float32 map in [0, 1]} for GMSM gate t; no network pass (a few t's cached)."""
        t = round(float(t), 3)
        with self._lock:
            if t not in self._maps:
                if len(self._maps) >= 4:
                    self._maps.pop(next(iter(self._maps)))
                self._maps[t] = self.explanation.maps(t=t)
            return self._maps[t]

    def guided_by_label(self) -> dict[str, np.ndarray]:
        """Guided Grad-CAM of each explained class, for outlines in one colour per label (paper 001 Fig. 6c).

        One map under the decision's name when a single class (or a grade) was explained; cached.
        """
        with self._lock:
            if self._guided is None:
                classes = list(self.explanation.targets[0])
                if len(classes) == 1:
                    name = self.prediction.get("label") or _label(self.config, classes[0])
                    self._guided = {name: self.explanation.maps(self.config.t)["guided_gradcam"]}
                else:
                    self._guided = {_label(self.config, c): self.explanation.maps(self.config.t, target=c)["guided_gradcam"]
                                    for c in classes}
            return self._guided

    @property
    def explained_labels(self) -> list[str]:
        """The labels whose evidence the maps show (a grade model: its predicted grade's label)."""
        if self.config.task == "grade-regression":
            return [self.prediction["label"]]
        return [_label(self.config, c) for c in self.explanation.targets[0]]

    @property
    def region_labels(self) -> list[str]:
        """The explained labels that get regions (θ crop, τ lesion mask, outlines): disease labels only, and
        for "all predicted" only the decided ones. Empty: no regions (``regions_note`` says why)."""
        labels = [label for label in self.explained_labels if not is_no_disease(label)]
        if self.target == ALL_PREDICTED:
            labels = [label for label in labels if label in self.prediction.get("predicted", [])]
        return labels

    @property
    def regions_note(self) -> str:
        """Why no region is drawn ('' when regions are drawn)."""
        if self.region_labels:
            return ""
        explained = self.explained_labels
        if any(is_no_disease(label) for label in explained):
            return (f"No regions: '{explained[0]}' is a no-disease answer, so there is no lesion to outline. "
                    "The maps show what the model based that answer on; pick a disease label under "
                    "'Explain which output' to see where its evidence lies.")
        return (f"No regions: no label reached its threshold; the maps show the most probable label "
                f"('{explained[0]}'). Pick a label under 'Explain which output' to draw its regions.")

    @property
    def unavailable(self) -> dict[str, str]:
        return dict(getattr(self.explanation, "unavailable", {}) or {})

    @property
    def method_timings(self) -> dict[str, float]:
        """Seconds each explanation method took (the engine's own timings)."""
        return dict(getattr(self.explanation, "timings", {}) or {})


class AnalysisCache:
    """A bounded, thread-safe LRU of Analysis objects."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"analysis cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
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

    def __len__(self) -> int:
        return len(self._items)


class Analyser:
    """Runs (or finds in the cache) the one network pass behind a view."""

    VERDICTS_SIZE = 256  # fundus-check verdicts kept by photo digest (a few hundred bytes each)

    def __init__(self, models: ModelCache | None = None, capacity: int = 16, fundus_check: bool = True) -> None:
        """
        Args:
            models: the model cache (default: a new one).
            capacity: analyses kept.
            fundus_check: refuse photos that are not fundus photographs (``fundus.check_fundus``) before
                any classification. Off only for experiments on arbitrary images.
        """
        self.models = models or ModelCache()
        self.cache = AnalysisCache(capacity)
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
            verdict = check_fundus(rgb)
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
            ValueError: an invalid target.
            ModelUnavailable: the model cannot be loaded.
        """
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise TypeError("photo must be an (H, W, 3) uint8 RGB array; load it with fundus.load_image")
        digest = digest or image_digest(rgb)
        if self.fundus_check:
            self.check(rgb, digest)  # before any model is loaded or run
        model, run_lock = self.models.get(model_key)
        config = model.config
        target = canonical_target(target, config)
        key = (digest, model_key, target)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        from explain import Explainer
        from explain.targets import decided_targets
        from fundus import preprocess

        wanted = engine_target(target, config)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        pre = preprocess(rgb, config)
        timings["preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        with run_lock, Explainer(model) as explainer:  # hooks are per call; one call per model at a time
            if wanted == "all-predicted":
                wanted = decided_targets(model, pre.tensor)
            explanation = explainer.explain(pre.tensor, target=wanted, fov_mask=pre.fov_mask, methods=PANEL_METHODS)
        timings["explain"] = time.perf_counter() - start
        with self._count_lock:
            self.passes += 1
        prediction = summarise(config, _as_numpy(explanation.probabilities[0]),
                               _as_numpy(model.decide(explanation.outputs)[0]))
        photo, scale = _display_copy(rgb)
        analysis = Analysis(
            key=key, model_key=model_key, config=config, photo=photo, photo_scale=scale, pre=pre,
            explanation=explanation, prediction=prediction, target=target, timings=timings,
        )
        analysis.maps(config.t)  # the default gate's maps, computed once here rather than on a slider move
        self.cache.put(analysis)
        return analysis


def _label(config, index: int) -> str:
    return config.labels[index] if index < len(config.labels) else str(index)


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _display_copy(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    side = max(rgb.shape[:2])
    if side <= DISPLAY_SIDE:
        return rgb, 1.0
    scale = DISPLAY_SIDE / side
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale
