"""Which zoo models the app offers and may load, and a lazily filled cache of the loaded ones.

A running app loads only three kinds of model (``Catalogue.resolve``):

- the zoo's model names (``zoo.model_names.known()``: the shipped defaults in ``assets/`` and the named hub
  ids configured in ``FUNDUS_ZOO_MODELS``);
- hub repo ids ``org/name[@revision]``, always fetched from the hub (never read as a local path);
- folders (or hub ids) its operator listed at start-up (``python app.py --models …``), offered under the
  folder's name, never under its path.

Any other text is refused with one message, whatever exists on the server's disk, and no message of
this module names a file or folder of the server (details go to the server log).

What a visitor may have a public server download is the operator's choice (``HubPolicy``, from ``FUNDUS_APP_HUB``,
``FUNDUS_APP_HUB_ALLOW`` and ``FUNDUS_APP_HUB_MAX_MB``): a switch that turns typed hub ids off, an allow-list of
repo ids (on a Space, by default, only the app's own: the named hub repos and ``--models``), and a size limit
checked on the hub's file list before anything is downloaded.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appcore.menu import grouped, with_papers
from appcore.model_choice import ModelChoice

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


def shown(text: object) -> str:
    """A user's text as a message may quote it: one line, at most SHOWN_CHARS characters, no backticks."""
    flat = " ".join(str(text).split()).replace("`", "'")
    return flat if len(flat) <= SHOWN_CHARS else flat[:SHOWN_CHARS - 1] + "…"


def not_offered_message(key: object) -> str:
    """The one answer to any text that is not a model of this app: the same whether or not it exists as a
    file or folder on the server."""
    return (f"`{shown(key)}` is not one of this app's models: pick one from the menu, or type a hub repo id "
            "(org/name or org/name@revision).")


class HubRepoTooLarge(ModelUnavailable):
    """A hub repo whose model files are over the server's size limit (``HubPolicy.max_mb``); nothing downloaded."""


_OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class HubPolicy:
    """Which hub repos a visitor may make this server download by typing a repo id (``load_hub_model``, or
    ``select_model`` with any ``org/name``). The app's own models (shipped, the named hub repos, the operator's
    ``--models``) are not limited by it.

    Args:
        enabled: False: no typed hub repo id is loaded at all.
        allow: repo id patterns (``fnmatch``, case-insensitive: ``"fundus-org/*"``); ``("*",)`` any repo; ``()``
            none beyond the app's own hub repos.
        max_mb: the most a repo's model files (``HUB_FILES``) may hold, read from the hub's file list before any
            download; None: no limit.
    """

    enabled: bool = True
    allow: tuple[str, ...] = ("*",)
    max_mb: float | None = 200.0

    @classmethod
    def from_environment(cls, environ=None) -> "HubPolicy":
        """The operator's settings: ``FUNDUS_APP_HUB=off`` turns typed hub ids off; ``FUNDUS_APP_HUB_ALLOW`` a comma
        list of repo ids or patterns (unset: any repo, except on a Hugging Face Space, ``SPACE_ID`` set, where only
        the app's own); ``FUNDUS_APP_HUB_MAX_MB`` the size limit in MB (default 200; ``none``: no limit).

        Raises:
            ValueError: a size limit that is not a positive number (the operator's console shows it).
        """
        environ = os.environ if environ is None else environ
        enabled = environ.get("FUNDUS_APP_HUB", "on").strip().lower() not in _OFF
        listed = environ.get("FUNDUS_APP_HUB_ALLOW")
        if listed is None:
            allow = () if environ.get("SPACE_ID") else ("*",)  # a public Space: only what its operator deployed
        else:
            allow = tuple(item.strip() for item in listed.split(",") if item.strip())
        text = environ.get("FUNDUS_APP_HUB_MAX_MB", "200").strip().lower()
        if text in ("none", ""):
            return cls(enabled, allow, None)
        try:
            max_mb = float(text)
        except ValueError:
            max_mb = -1.0
        if not max_mb > 0:
            raise ValueError(f"FUNDUS_APP_HUB_MAX_MB must be a positive number of MB or 'none', got {text!r}")
        return cls(enabled, allow, max_mb)

    def allows(self, repo_id: str) -> bool:
        """Whether the allow-list takes this repo id."""
        return any(fnmatch.fnmatchcase(repo_id.lower(), pattern.lower()) for pattern in self.allow)

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_mb is None else int(self.max_mb * 1e6)


def hub_off_message(key: object) -> str:
    return (f"This server does not load models from the hub, so `{shown(key)}` cannot be loaded: pick a model from "
            "the menu.")


def hub_not_allowed_message(repo_id: object) -> str:
    return (f"Hub repo `{shown(repo_id)}` is not one of the hub models this server may load: pick a model from the "
            "menu.")


def _named_models() -> dict:
    from zoo import model_names

    return model_names.known()


def _named_choice(name: str, entry) -> ModelChoice:
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
    """The models an app may load: the zoo's model names, hub repo ids and the operator's listed models.

    Args:
        operator: folders or hub repo ids (``org/name[@revision]``) or model names the operator listed at
            start-up; folders are offered under their folder's name (made unique), never under their path.
        hub: which typed hub repo ids visitors may load (default ``HubPolicy.from_environment()``).

    Raises:
        ValueError: an operator entry that is none of these (the operator's console may name the path).
    """

    def __init__(self, operator: Iterable[str] | None = None, hub: HubPolicy | None = None) -> None:
        self.hub = hub if hub is not None else HubPolicy.from_environment()
        self._operator: list[ModelChoice] = []
        named = _named_models()
        taken = set(named)
        for raw in operator or []:
            entry = str(raw).strip()
            if entry in named:
                choice = _named_choice(entry, named[entry])
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
        operator's models, then the shipped defaults, then the named hub ids (``FUNDUS_ZOO_MODELS``), then ``added``
        (menu values a session added; values this app does not offer are left out)."""
        named = _named_models()
        by_name = [_named_choice(name, entry) for name, entry in named.items()]
        # Shipped models before hub ids: the default must load offline, a hub id downloads only when picked.
        choices = self._operator + sorted(by_name, key=lambda choice: choice.kind != "shipped")
        for key in added:
            try:
                choices.append(self.resolve(key))
            except ModelNotOffered:
                continue
        unique: dict[str, ModelChoice] = {}
        for choice in choices:
            unique.setdefault(choice.key, choice)
        return grouped(with_papers(unique.values(), named))

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
        named = _named_models()
        if key in named:
            return _named_choice(key, named[key])
        try:
            choice = parse_hub_id(key)
        except ModelNotOffered:
            raise ModelNotOffered(not_offered_message(key)) from None
        return self._hub_allowed(choice, named)

    def is_own(self, choice: ModelChoice, named: dict | None = None) -> bool:
        """Whether a hub choice is one of the app's own hub repos (the operator's ``--models``, the named hub
        names: the deploy's list), which ``hub`` does not limit."""
        named = _named_models() if named is None else named
        own = {c.id.lower() for c in self._operator if c.kind == "hub"}
        own |= {entry.location.lower() for entry in named.values() if entry.source == "hub"}
        return choice.id.lower() in own

    def download_limit(self, choice: ModelChoice) -> int | None:
        """The most a load of this choice may download (bytes): ``hub.max_bytes`` for a visitor's hub repo, None for
        the app's own models."""
        return None if choice.kind != "hub" or self.is_own(choice) else self.hub.max_bytes

    def _hub_allowed(self, choice: ModelChoice, named: dict) -> ModelChoice:
        """A typed hub id, if ``hub`` lets visitors load it: the app's own hub repos always, others when hub loading
        is on and the allow-list takes them (checked before anything is downloaded).

        Raises:
            ModelNotOffered: hub loading is off, or the repo is not on the allow-list.
        """
        if self.is_own(choice, named):
            return choice
        if not self.hub.enabled:
            raise ModelNotOffered(hub_off_message(choice.key))
        if not self.hub.allows(choice.id):
            raise ModelNotOffered(hub_not_allowed_message(choice.id))
        return choice


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def available_models(extra: list[str] | None = None) -> list[ModelChoice]:
    """The model menu, grouped by paper: ``extra`` (the operator's folders / hub ids), the shipped defaults and
    the named hub ids (``Catalogue(extra).menu()``)."""
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
                model = _load(choice, self.device, self.catalogue.download_limit(choice))
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


def hub_download_size(choice: ModelChoice) -> int | None:
    """The bytes ``_hub_folder`` would download at most: the sizes of the repo's ``HUB_FILES`` in the hub's file
    list (``model_info(files_metadata=True)``, nothing downloaded); None where the hub cannot be reached (offline:
    only the hub cache can serve it, and nothing is downloaded).

    Raises:
        whatever the hub answers for a repo or revision that is not there (``_explain_failure`` says it).
    """
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(choice.id, revision=choice.revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - offline goes on to the cache; anything else is the hub's answer
        if {type(e).__name__ for e in _chain(exc)} & set(_OFFLINE):
            return None
        raise
    sizes = {s.rfilename: s.size if s.size is not None else (s.lfs.size if s.lfs else 0)
             for s in info.siblings or []}
    return sum(sizes.get(name) or 0 for name in HUB_FILES)


def _hub_folder(choice: ModelChoice, max_bytes: int | None = None) -> Path:
    """The local snapshot of a hub repo id (downloaded unless cached); never a local folder of that name.

    Raises:
        HubRepoTooLarge: its model files are over ``max_bytes`` (checked before any download).
    """
    from huggingface_hub import snapshot_download

    if max_bytes is not None:
        size = hub_download_size(choice)
        if size is not None and size > max_bytes:
            raise HubRepoTooLarge(
                f"Hub repo `{shown(choice.key)}` holds {size / 1e6:.0f} MB of model files, over this server's "
                f"limit of {max_bytes / 1e6:g} MB: nothing was downloaded. Pick a model from the menu.")
    return Path(snapshot_download(choice.id, revision=choice.revision, allow_patterns=HUB_FILES))


def _load(choice: ModelChoice, device: str, max_bytes: int | None = None):
    import zoo

    try:
        if choice.kind == "folder":
            model = zoo.load(Path(choice.location), device=device)
        elif choice.kind == "hub" and choice.id not in _named_models():
            model = zoo.load(_hub_folder(choice, max_bytes), device=device)
        else:  # a model name: zoo resolves it (a shipped folder, or its configured hub id)
            model = zoo.load(choice.id, revision=choice.revision, device=device)
    except HubRepoTooLarge:
        log.warning("hub model %r refused: over the size limit", choice.key)
        raise
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
