"""Which zoo models the app offers and may load, and a lazily filled cache of the loaded ones.

A running app loads only three kinds of model (``Catalogue.resolve``):

- the zoo registry's names (``zoo.registry.known()``: the shipped defaults in ``assets/`` and the named hub
  ids configured in ``FUNDUS_ZOO_MODELS``);
- hub repo ids ``org/name[@revision]``, always fetched from the hub (never read as a local path);
- folders (or hub ids) its operator listed at start-up (``python app.py --models …``), offered under the
  folder's name, never under its path.

Any other text is refused with one message, whatever exists on the server's disk, and no message of
this module names a file or folder of the server (details go to the server log).
"""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appcore.menu import grouped, heading, with_papers

log = logging.getLogger(__name__)

# A hub repo id as huggingface_hub accepts it: org/name, alphanumerics, "-", "_", ".", no ".." or "--".
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$")
HUB_FILES = ["config.json", "model.safetensors", "README.md"]
SHOWN_CHARS = 80  # at most this much of a user's text is echoed in a message


class ModelUnavailable(RuntimeError):
    """A model cannot be had (not offered, offline, broken); the message is meant for the user and
    never names a file or folder of the server."""


class ModelNotOffered(ModelUnavailable, ValueError):
    """Text that is none of the models this app may load (see ``Catalogue.resolve``)."""


@dataclass(frozen=True)
class ModelChoice:
    """One model the app may load."""

    id: str  # a registry name, a hub repo id, or (kind "folder") the menu name of an operator's folder
    revision: str | None = None
    kind: str = "shipped"  # "shipped" | "folder" | "hub"
    location: str | None = field(default=None, repr=False, compare=False)  # an operator folder's path
    paper: str | None = field(default=None, compare=False)  # from its config ("" none, None unknown): appcore.menu

    @property
    def key(self) -> str:
        """The menu value: ``id`` or ``id@revision``."""
        return f"{self.id}@{self.revision}" if self.revision else self.id

    @property
    def label(self) -> str:
        """The menu text: its paper's group, then the model ("Paper 004 · ELLG — dr-grading"); a model that is
        not shipped says its kind ("org/name (hub)")."""
        name = self.key if self.kind == "shipped" else f"{self.key} ({self.kind})"
        group = heading(self.paper)
        return f"{group} — {name}" if group else name


def shown(text: object) -> str:
    """A user's text as a message may quote it: one line, at most SHOWN_CHARS characters, no backticks."""
    flat = " ".join(str(text).split()).replace("`", "'")
    return flat if len(flat) <= SHOWN_CHARS else flat[:SHOWN_CHARS - 1] + "…"


def not_offered_message(key: object) -> str:
    """The one answer to any text that is not a model of this app: the same whether or not it exists as a
    file or folder on the server."""
    return (f"`{shown(key)}` is not one of this app's models: pick one from the menu, or type a hub repo id "
            "(org/name or org/name@revision).")


def _registry() -> dict:
    from zoo import registry

    return registry.known()


def _registry_choice(name: str, entry) -> ModelChoice:
    return ModelChoice(name, None, "shipped" if entry.source == "shipped" else "hub")


def parse_hub_id(text: str) -> ModelChoice:
    """``org/name`` or ``org/name@revision`` → a hub ModelChoice. Never looks at the local disk.

    Raises:
        ModelNotOffered: empty text or not a hub repo id.
    """
    key = (text or "").strip()
    if not key:
        raise ModelNotOffered("Type a hub repo id first (org/name or org/name@revision).")
    ident, at, revision = key.partition("@")
    ident, revision = ident.strip(), revision.strip()
    if not HUB_ID.match(ident) or "--" in ident or ".." in ident or (at and not REVISION.match(revision)) \
            or ".." in revision:
        raise ModelNotOffered(f"`{shown(key)}` is not a hub repo id of the form org/name or org/name@revision.")
    return ModelChoice(ident, revision or None, "hub")


class Catalogue:
    """The models an app may load: registry names, hub repo ids and the operator's listed models.

    Args:
        operator: folders or hub repo ids (``org/name[@revision]``) or registry names the operator listed at
            start-up; folders are offered under their folder's name (made unique), never under their path.

    Raises:
        ValueError: an operator entry that is none of these (the operator's console may name the path).
    """

    def __init__(self, operator: Iterable[str] | None = None) -> None:
        self._operator: list[ModelChoice] = []
        registry = _registry()
        taken = set(registry)
        for raw in operator or []:
            entry = str(raw).strip()
            if entry in registry:
                choice = _registry_choice(entry, registry[entry])
            elif Path(entry).expanduser().is_dir():
                folder = Path(entry).expanduser().resolve()
                if not (folder / "config.json").is_file():
                    raise ValueError(f"--models {entry}: not a saved zoo model (no config.json in it)")
                choice = ModelChoice(_unique(folder.name, taken), None, "folder", str(folder))
            else:
                try:
                    choice = parse_hub_id(entry)
                except ModelNotOffered:
                    raise ValueError(f"--models {entry!r}: neither a model folder, a shipped name nor a hub repo id "
                                     "(org/name[@revision])") from None
            taken.add(choice.key)
            self._operator.append(choice)
        self._folders = {c.key: c for c in self._operator if c.kind == "folder"}

    def menu(self, added: Iterable[str] = ()) -> list[ModelChoice]:
        """The models offered, each once, grouped by paper (``appcore.menu.grouped``); within a paper the
        operator's models, then the shipped defaults, then the hub ids configured in the registry, then ``added``
        (menu values a session added; values this app does not offer are left out)."""
        registry = _registry()
        named = [_registry_choice(name, entry) for name, entry in registry.items()]
        # Shipped models before hub ids: the default must load offline, a hub id downloads only when picked.
        choices = self._operator + sorted(named, key=lambda choice: choice.kind != "shipped")
        for key in added:
            try:
                choices.append(self.resolve(key))
            except ModelNotOffered:
                continue
        unique: dict[str, ModelChoice] = {}
        for choice in choices:
            unique.setdefault(choice.key, choice)
        return grouped(with_papers(unique.values(), registry))

    def session_added(self, added: list[str], key: str) -> list[str]:
        """A session's menu additions once it selected ``key``: ``key`` joins them unless the menu already has it
        (a hub id a visitor loads is in that visitor's menu only)."""
        return list(added) if key in {choice.key for choice in self.menu(added)} else [*added, key]

    def resolve(self, key: str) -> ModelChoice:
        """The model behind a menu value or a user's text, if this app may load it.

        Raises:
            ModelNotOffered: anything else, with one message whatever exists on the server's disk.
        """
        if not isinstance(key, str) or not key.strip():
            raise ModelNotOffered("No model is selected: pick one from the menu.")
        key = key.strip()
        if key in self._folders:
            return self._folders[key]
        registry = _registry()
        if key in registry:
            return _registry_choice(key, registry[key])
        try:
            return parse_hub_id(key)
        except ModelNotOffered:
            raise ModelNotOffered(not_offered_message(key)) from None


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def available_models(extra: list[str] | None = None) -> list[ModelChoice]:
    """The model menu, grouped by paper: ``extra`` (the operator's folders / hub ids), the shipped defaults and
    the hub ids configured in the registry (``Catalogue(extra).menu()``)."""
    return Catalogue(extra).menu()


class ModelCache:
    """Loaded models, at most ``capacity``, loaded on first use; thread-safe.

    Only what ``catalogue`` offers is ever loaded (default: a ``Catalogue`` without operator folders).
    Each model comes with its own lock: one explanation at a time per model keeps two requests'
    captured activations apart and CPU use predictable (the model object itself is never changed).
    """

    def __init__(self, capacity: int = 3, device: str = "cpu", catalogue: Catalogue | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"model cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self.catalogue = catalogue if catalogue is not None else Catalogue()
        self._models: OrderedDict[str, tuple[object, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, list] = {}  # key -> [lock, waiting users]: gone once nobody waits
        self.loads = 0  # how many times a model was actually loaded (tests and benchmarks read it)

    def __contains__(self, key: str) -> bool:
        return key in self._models

    def get(self, key: str) -> tuple[object, threading.Lock]:
        """The model for a menu value (see ``Catalogue.resolve``) and its run lock, loading it if needed.

        Raises:
            ModelNotOffered: ``key`` is not a model this app may load.
            ModelUnavailable: it cannot be loaded; the message says why in the user's words.
        """
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        choice = self.catalogue.resolve(key)
        with self._lock:
            slot = self._loading.setdefault(key, [threading.Lock(), 0])
            slot[1] += 1
        try:
            with slot[0]:  # one load per model even when many users ask for it at once
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
        finally:
            with self._lock:  # bogus keys must not pile up locks
                slot[1] -= 1
                if slot[1] == 0 and self._loading.get(key) is slot:
                    del self._loading[key]


def _hub_folder(choice: ModelChoice) -> Path:
    """The local snapshot of a hub repo id (downloaded unless cached); never a local folder of that name."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(choice.id, revision=choice.revision, allow_patterns=HUB_FILES))


def _load(choice: ModelChoice, device: str):
    import zoo

    try:
        if choice.kind == "folder":
            model = zoo.load(Path(choice.location), device=device)
        elif choice.kind == "hub" and choice.id not in _registry():
            model = zoo.load(_hub_folder(choice), device=device)
        else:  # a registry name: zoo resolves it (a shipped folder, or its configured hub id)
            model = zoo.load(choice.id, revision=choice.revision, device=device)
    except Exception as exc:  # every failure becomes one clear message in the page
        log.warning("model %r could not be loaded: %s: %s", choice.key, type(exc).__name__, exc,
                    exc_info=not isinstance(exc, (OSError, ValueError)))
        raise ModelUnavailable(_explain_failure(choice, exc)) from exc
    model.eval()
    return model


_OFFLINE = ("HubUnavailableError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError",
            "ConnectionError", "ConnectTimeout", "ReadTimeout", "TimeoutException")
_NOT_FOUND = ("RepositoryNotFoundError", "GatedRepoError", "DisabledRepoError", "HFValidationError")
_NOT_A_MODEL = ("UnknownModelError", "WeightsError", "EntryNotFoundError", "RemoteEntryNotFoundError")


def _explain_failure(choice: ModelChoice, exc: Exception) -> str:
    """One sentence per kind of failure; no exception text (it may hold the server's paths)."""
    names = {type(e).__name__ for e in _chain(exc)}
    key = shown(choice.key)
    if choice.kind == "hub":
        if "RevisionNotFoundError" in names:
            return f"Hub repo `{shown(choice.id)}` has no revision `{shown(choice.revision)}`."
        if names & set(_NOT_FOUND):
            return f"Hub repo `{shown(choice.id)}` was not found (or it is private or gated)."
        if names & set(_OFFLINE):
            return (f"Hub model `{key}` cannot be had offline: it is not in this server's hub cache and the hub "
                    "cannot be reached. Pick a model from the menu.")
        if names & set(_NOT_A_MODEL):
            return (f"Hub repo `{key}` is not a Fundus CAM Zoo model: it needs a config.json and a "
                    "model.safetensors that match.")
    if names & set(_NOT_A_MODEL):
        return f"Model `{key}` could not be loaded: its files are missing or do not match its config."
    return f"Model `{key}` could not be loaded ({type(exc).__name__}); the server log has the details."


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
