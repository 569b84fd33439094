"""Which zoo models the app offers, and a lazily filled cache of the loaded ones.

The menu is the zoo registry (``zoo.registry.known()``: the shipped defaults in ``assets/`` and the hub
ids configured in ``FUNDUS_ZOO_MODELS``) plus any folders or hub repo ids the app was started with or a
user typed. A menu value is a registry name, a folder path, or ``org/name[@revision]``.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


class ModelUnavailable(RuntimeError):
    """A model cannot be had (not found, offline, broken); the message is meant for the user."""


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu."""

    id: str  # passed to zoo.load: a registry name, a folder, or a hub repo id
    revision: str | None = None
    kind: str = "shipped"  # "shipped" | "folder" | "hub"

    @property
    def key(self) -> str:
        """The menu value: ``id`` or ``id@revision``."""
        return f"{self.id}@{self.revision}" if self.revision else self.id

    @property
    def label(self) -> str:
        name = Path(self.id).name if self.kind == "folder" else self.key
        return f"{name} ({self.kind})"


def _registry() -> dict:
    from zoo import registry

    return registry.known()


def parse_model_key(key: str) -> ModelChoice:
    """A menu value or user text (``name``, ``/a/folder``, ``org/name``, ``org/name@rev``) → ModelChoice.

    Raises:
        ValueError: empty text, or text that is neither a known name, a folder nor ``org/name``.
    """
    key = (key or "").strip()
    if not key:
        raise ValueError("model id is empty: give a shipped model's name, a folder or a hub repo id (org/name)")
    known = _registry()
    if key in known:
        entry = known[key]
        return ModelChoice(key, None, "shipped" if entry.source == "shipped" else "hub")
    if Path(key).expanduser().is_dir():
        return ModelChoice(str(Path(key).expanduser().resolve()), None, "folder")
    ident, _, revision = key.partition("@")
    parts = ident.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ValueError(f"{key!r} is neither a shipped model, a folder, nor a hub repo id of the form org/name")
    return ModelChoice(ident.strip(), revision.strip() or None, "hub")


def available_models(extra: list[str] | None = None) -> list[ModelChoice]:
    """The model menu: ``extra`` first, then the shipped defaults, then the hub ids configured in the registry.

    Args:
        extra: additional folders or hub repo ids to offer.

    Raises:
        ValueError: an id that cannot be parsed (see ``parse_model_key``).
    """
    choices = [parse_model_key(key) for key in extra or []]
    registry = [ModelChoice(name, None, "shipped" if entry.source == "shipped" else "hub")
                for name, entry in _registry().items()]
    # Shipped models first: the default must load offline, a hub id downloads only when a user picks it.
    choices += sorted(registry, key=lambda choice: choice.kind != "shipped")
    unique: dict[str, ModelChoice] = {}
    for choice in choices:
        unique.setdefault(choice.key, choice)
    return list(unique.values())


class ModelCache:
    """Loaded models, at most ``capacity``, loaded on first use; thread-safe.

    Each model comes with its own lock: one explanation at a time per model keeps two requests'
    captured activations apart and CPU use predictable (the model object itself is never changed).
    """

    def __init__(self, capacity: int = 3, device: str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"model cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self._models: OrderedDict[str, tuple[object, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # how many times a model was actually loaded (tests and benchmarks read it)

    def __contains__(self, key: str) -> bool:
        return key in self._models

    def get(self, key: str) -> tuple[object, threading.Lock]:
        """The model for a menu value (see ``parse_model_key``) and its run lock, loading it if needed.

        Raises:
            ModelUnavailable: it cannot be loaded; the message says why in the user's words.
            ValueError: ``key`` cannot be parsed.
        """
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        choice = parse_model_key(key)
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per model even when many users ask for it at once
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = _load(choice, self.device)
            with self._lock:
                self._models[key] = (model, threading.Lock())
                self.loads += 1
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                return self._models[key]


def _load(choice: ModelChoice, device: str):
    import zoo

    try:
        model = zoo.load(choice.id, revision=choice.revision, device=device)
    except Exception as exc:  # every failure becomes one clear message in the page
        raise ModelUnavailable(_explain_failure(choice, exc)) from exc
    model.eval()
    return model


def _explain_failure(choice: ModelChoice, exc: Exception) -> str:
    name = type(exc).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if choice.kind == "hub":
        if name in ("HubUnavailableError", "LocalEntryNotFoundError", "OfflineModeIsEnabled") or offline:
            return (f"Model {choice.key!r} cannot be had offline: it is not in the local hub cache and the hub "
                    f"cannot be reached{' (HF_HUB_OFFLINE=1)' if offline else ''}. Pick a shipped model. ({exc})")
        if name in ("RepositoryNotFoundError", "GatedRepoError", "UnknownModelError"):
            return f"Hub repo {choice.id!r} was not found (or is private/gated). ({exc})"
        if name == "RevisionNotFoundError":
            return f"Hub repo {choice.id!r} has no revision {choice.revision!r}."
    return f"Model {choice.key!r} could not be loaded: {exc}"
