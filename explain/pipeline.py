"""The one analysis pipeline: a photo to pictures. ``load_fundus_photo`` → ``analyse`` (preprocess, one explanation
pass, the prediction) → ``Analysis.maps`` → ``explain.views.render`` (θ/τ regions, the pictures).

The Gradio app, the Streamlit app (through ``appcore.Analyser``, which caches analyses) and ``python -m explain``
all go through it, so the command a downloaded view records draws the page's picture exactly.

    rgb, check = load_fundus_photo("eye.jpg")           # refuses what is not a fundus photograph
    analysis = analyse(rgb, model, Decided())           # one network pass
    view = render(analysis, ViewParams.from_config(model.config))
    view.grid()                                         # the panels and the enlarged θ crop, titled

A model shipped with an unlike-training reference (``zoo.ood``) gets its verdict on the photo from the same pass:
the distance of the target layer's pooled features, which the Explainer captures anyway, to the training photos'
(``Analysis.unlike_training``, also ``prediction["unlike_training"]`` as ``zoo.predict`` reports it);
``with_content_distance`` joins the model-independent content distance to it by ``zoo.predict``'s rule.

Decisions are the model's own (``zoo.model.FundusNet.decide``): a no-disease label ("healthy", "normal", "No DR")
and the disease labels never both stand. Regions (θ crop, τ lesion mask, outlines) are drawn only for disease
labels (``Analysis.region_labels``), and for a target the model chose (``Target.decided_only``) only for the
labels it decided.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from explain.explainer import Explainer, Explanation
from explain.methods import panel_methods
from explain.targets import Target, as_target
from explain.views import View, ViewParams, render
from fundus.datasets.labels import is_no_disease
from fundus.tasks import MULTILABEL, finding_thresholds, task_of

DISPLAY_SIDE = 768  # the original photo is kept at most this large, for the preprocessing view


def load_fundus_photo(source) -> tuple[np.ndarray, Any]:
    """A photo (path, bytes, PIL image or array) as (H, W, 3) uint8 RGB and its fundus check.

    Raises:
        fundus.ImageError: (a ValueError) not a usable image.
        fundus.NotFundusError: (a ValueError) not a fundus photograph.
    """
    from fundus import load_image
    from zoo.fundus_check import require_fundus_photo

    rgb = load_image(source)
    return rgb, require_fundus_photo(rgb, source=str(source) if not isinstance(source, (bytes, np.ndarray)) else "photo")


def require_rgb(rgb) -> None:
    """Raises TypeError unless ``rgb`` is an (H, W, 3) uint8 array (what ``fundus.load_image`` returns)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise TypeError("photo must be an (H, W, 3) uint8 RGB array; load it with fundus.load_image")


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
    task = task_of(config.task)
    if task.regression:
        grade = int(decision[0])
        label = config.labels[grade] if grade < len(config.labels) else f"grade {grade}"
        return {"task": config.task, "value": float(probabilities[0]), "grade": grade, "label": label,
                "grade_cutoffs": [float(c) for c in config.grade_cutoffs], "labels": list(config.labels)}
    result: dict[str, Any] = {
        "task": config.task,
        "probabilities": {label: float(p) for label, p in zip(config.labels, probabilities)},
    }
    if task is MULTILABEL:
        # the thresholds the decision used (``fundus.tasks.finding_thresholds``: floored), as the page shows them
        result["thresholds"] = {label: th for label, th in zip(config.labels, finding_thresholds(config.thresholds))}
        result["predicted"] = [label for label, yes in zip(config.labels, decision) if yes]
        result["overruled"] = [label for label, p, yes in zip(config.labels, probabilities, decision)
                               if not yes and p >= result["thresholds"][label]]
    else:
        result["predicted"] = [config.labels[int(decision[0])]]
    return result


def held_bytes(value: Any, seen: set | None = None) -> int:
    """Bytes of the numpy arrays and torch tensors reachable through dataclasses, dicts, lists and tuples (each
    buffer once; a view counts as its base). Written here because sys.getsizeof sees neither kind's buffer."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return held_bytes(value.base, seen) if isinstance(value.base, np.ndarray) else value.nbytes
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        key = ("storage", storage.data_ptr())  # views of one tensor share it
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(value, dict):
        return sum(held_bytes(item, seen) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(held_bytes(item, seen) for item in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(held_bytes(getattr(value, name, None), seen) for name in value.__dataclass_fields__)
    return 0


NO_DISEASE_ANSWER = "no-disease answer"  # NoRegions.kind: the explained label says there is no disease
NOTHING_DECIDED = "nothing decided"  # NoRegions.kind: no label reached its threshold


@dataclass(frozen=True)
class NoRegions:
    """Why an analysis draws no region (θ crop, τ mask, outlines): which case, a few words (the crop's tile) and the
    page's sentence."""

    kind: str  # NO_DISEASE_ANSWER | NOTHING_DECIDED
    reason: str  # "a no-disease answer"
    note: str  # the sentence under the panels (View.regions["note"])


@dataclass
class Analysis:
    """The result of one network pass, and the maps derived from it per GMSM gate t (thread-safe)."""

    key: tuple  # the cache key of the caller (appcore: photo digest, model, target value)
    model_key: str
    config: Any
    photo: np.ndarray  # the original photo, downscaled to <= DISPLAY_SIDE for display
    photo_scale: float  # photo pixels per original pixel
    pre: Any  # fundus.Preprocessed
    explanation: Explanation
    prediction: dict[str, Any]
    target: Target  # what was explained
    request: str  # the target in the caller's words (the app's menu value, the command line's --target)
    timings: dict[str, float]
    unlike_training: dict[str, Any] | None = None  # zoo.ood.assess of this photo; None: the model has no reference
    _maps: dict[float, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _by_label: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
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

    @property
    def nbytes(self) -> int:
        """The bytes of the arrays and tensors this analysis holds now (photo, pass, maps, drawn pictures): what
        a cache of analyses budgets (``appcore.analysis.AnalysisCache``). It grows as sliders draw new pictures."""
        with self._lock:
            return held_bytes([self.photo, self.pre, self.explanation, self._maps, self._by_label,
                               list(self._memo.values())])

    def maps(self, t: float) -> dict[str, np.ndarray]:
        """{method: (S, S) float32 map in [0, 1]} for GMSM gate t; no network pass (a few t's cached)."""
        t = round(float(t), 3)
        with self._lock:
            if t not in self._maps:
                if len(self._maps) >= 4:
                    self._maps.pop(next(iter(self._maps)))
                self._maps[t] = self.explanation.maps(t=t)
            return self._maps[t]

    def maps_by_label(self, method: str) -> dict[str, np.ndarray]:
        """A method's map of each explained class, for outlines in one colour per label (paper 001 Fig. 6c); one
        map under the decision's name when a single class (or a grade) was explained; cached."""
        with self._lock:
            if method not in self._by_label:
                classes = list(self.explanation.targets[0])
                t = self.config.t
                if len(classes) == 1:
                    name = self.prediction.get("label") or _label(self.config, classes[0])
                    self._by_label[method] = {name: self.explanation.maps(t)[method]}
                else:
                    self._by_label[method] = {_label(self.config, c): self.explanation.maps(t, target=c)[method]
                                              for c in classes}
            return self._by_label[method]

    @property
    def explained_labels(self) -> list[str]:
        """The labels whose evidence the maps show (a grade model: its predicted grade's label)."""
        if task_of(self.config.task).regression:
            return [self.prediction["label"]]
        return [_label(self.config, c) for c in self.explanation.targets[0]]

    @property
    def region_labels(self) -> list[str]:
        """The explained labels that get regions (θ crop, τ lesion mask, outlines): disease labels only, and for a
        target the model chose (``Target.decided_only``) only the decided ones. Empty: no regions
        (``regions_note`` says why)."""
        labels = [label for label in self.explained_labels if not is_no_disease(label)]
        if self.target.decided_only:
            labels = [label for label in labels if label in self.prediction.get("predicted", [])]
        return labels

    @property
    def no_regions(self) -> NoRegions | None:
        """Why no region is drawn (None when regions are drawn)."""
        if self.region_labels:
            return None
        explained = self.explained_labels
        if any(is_no_disease(label) for label in explained):
            return NoRegions(NO_DISEASE_ANSWER, "a no-disease answer", (
                f"No regions: '{explained[0]}' is a no-disease answer, so there is no lesion to outline. "
                "The maps show what the model based that answer on; pick a disease label under "
                "'Explain which output' to see where its evidence lies."))
        return NoRegions(NOTHING_DECIDED, "no label reached its threshold", (
            f"No regions: no label reached its threshold; the maps show the most probable label "
            f"('{explained[0]}'). Pick a label under 'Explain which output' to draw its regions."))

    @property
    def regions_note(self) -> str:
        """Why no region is drawn, for the page ('' when regions are drawn)."""
        why = self.no_regions
        return why.note if why else ""

    @property
    def unavailable(self) -> dict[str, str]:
        return dict(self.explanation.unavailable)


def analyse(rgb: np.ndarray, model, target: Target | Any = "predicted", *, methods=None, model_key: str = "",
            request: str = "", key: tuple = (), lock=None) -> Analysis:
    """Preprocess a photo for a zoo model, explain it in one network pass, and summarise the prediction.

    Args:
        rgb: (H, W, 3) uint8 RGB photo (``load_fundus_photo`` or ``fundus.load_image``); not checked here.
        model: a zoo model (``config``, ``probabilities``, ``decide``).
        target: a ``explain.targets.Target`` (or what ``as_target`` takes).
        methods: the methods to prepare (default: the page's main and optional panels).
        model_key: the model's name for the record (default its config's name).
        request: the target in the caller's words (default "").
        key: the caller's cache key.
        lock: held while the model runs (one call per shared model at a time).

    Raises:
        TypeError: ``rgb`` is not an (H, W, 3) uint8 array.
        ValueError: an invalid target for this model.
    """
    from fundus import preprocess

    require_rgb(rgb)
    config = model.config
    target = as_target(target)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pre = preprocess(rgb, config)
    timings["preprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    layer = ood_layer(model)
    with lock or nullcontext(), Explainer(model) as explainer:  # hooks are per call
        explanation = explainer.explain(pre.tensor, target, fov_mask=pre.fov_mask,
                                        methods=methods or panel_methods("main") + panel_methods("optional"),
                                        pooled=(layer,) if layer else ())
    timings["explain"] = time.perf_counter() - start
    prediction = summarise(config, _as_numpy(explanation.probabilities[0]), _as_numpy(model.decide(explanation.outputs)[0]))
    unlike = unlike_training(model, explanation)
    if unlike is not None:
        prediction["unlike_training"] = unlike
    photo, scale = _display_copy(rgb)
    return Analysis(key=key, model_key=model_key or config.name, config=config, photo=photo, photo_scale=scale,
                    pre=pre, explanation=explanation, prediction=prediction, target=target, request=request,
                    timings=timings, unlike_training=unlike)


def ood_layer(model) -> str | None:
    """The layer of a model's unlike-training reference (``zoo.ood``; as ``zoo.ood.pooled_features`` picks it), or
    None when the model has none."""
    from zoo import ood

    if getattr(model, "config", None) is None or ood.reference_of(model) is None:
        return None
    return model.config.ood.get("layer") or model.config.target_layer


def unlike_training(model, explanation: Explanation, image: int = 0) -> dict[str, Any] | None:
    """How unlike the model's training photos an explained photo is (``zoo.ood.assess``: distance, threshold,
    ``unlike_training``), from the explanation's own pooled features: no second forward. None without a reference.

    Raises:
        ValueError: the explanation was made without the reference layer's pooled features.
    """
    from zoo import ood

    layer = ood_layer(model)
    if layer is None:
        return None
    if layer not in explanation.pooled:
        raise ValueError(f"the explanation has no pooled features of {layer!r}: explain with pooled=({layer!r},)")
    return ood.assess(model, explanation.pooled[layer])[image]


def with_content_distance(analysis: Analysis, rgb: np.ndarray, check: Any = None) -> None:
    """Join the analysis's unlike-training verdict with the photo's content distance (``check``'s, the fundus check
    of ``load_fundus_photo``, else measured now) by ``zoo.ood.with_content_verdicts``, in place; nothing for a model
    without a verdict or one the content reference does not speak for."""
    from zoo import ood

    if analysis.unlike_training is None:
        return
    analysis.unlike_training = ood.with_content_verdicts(analysis.config, [analysis.unlike_training], [rgb],
                                                         [check])[0]
    analysis.prediction["unlike_training"] = analysis.unlike_training


def unlike_training_warning(unlike: dict[str, Any] | None) -> str:
    """The warning ``zoo.predict`` adds for a photo unlike the training photos ('' when it is not, or no verdict)."""
    from zoo.ood import warning

    return warning(unlike)


__all__ = ["Analysis", "NoRegions", "View", "ViewParams", "analyse", "load_fundus_photo", "render", "summarise",
           "unlike_training", "with_content_distance"]


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
