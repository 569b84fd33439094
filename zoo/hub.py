"""Files and the hub: a saved model is a folder (config.json + model.safetensors + README.md), local or on a hub.

One code path for every source (timm-style): a shipped name, a local folder or a hub repo id is resolved to a
local folder (``huggingface_hub.snapshot_download`` for hub ids, which honours HF_HUB_OFFLINE, HF_ENDPOINT,
HF_HOME and the cache); this module reads and writes the folder's files and uploads it. It knows nothing of
models: ``zoo.factory`` builds a model from the folder's config and fills it with the weights read here.
Weights are never unpickled.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo import model_names
from zoo.card import write_card
from zoo.config import ModelConfig
from zoo.errors import HubUnavailableError, UnknownModelError, WeightsError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_repo_id(repo_id: str) -> None:
    """Raise ValueError unless ``repo_id`` looks like ``org/name``."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")


def write_folder(state: Mapping[str, torch.Tensor], config: ModelConfig, folder: str | Path, *,
                 dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` (the state dict) and ``README.md`` (the card) into ``folder``.

    Args:
        state: a model's state dict.
        config: its config.
        folder: target folder, created if missing.
        dtype: floating-point storage dtype (``torch.float16`` for shipping); default fp32.

    Raises:
        TypeError: dtype not a floating-point torch dtype.
    """
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    store = dtype or torch.float32
    tensors = {
        key: (t.detach().to("cpu", store) if t.is_floating_point() else t.detach().cpu()).contiguous()
        for key, t in state.items()
    }
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "library": "fundus-cam-zoo",
                                                              "dtype": str(store).removeprefix("torch.")})
    config.save(folder / CONFIG_NAME)
    write_card(config, folder / CARD_NAME)
    return folder


def _offline_help(repo_id: str) -> str:
    return (
        f"hub model {repo_id!r} is not in the local cache and the hub is offline (HF_HUB_OFFLINE=1). "
        f"To get it: unset HF_HUB_OFFLINE, or run `huggingface-cli download {repo_id}` / "
        f"`huggingface_hub.snapshot_download({repo_id!r})` where the hub is reachable, or point HF_ENDPOINT "
        "at a reachable mirror."
    )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
        )
    except RevisionNotFoundError as err:
        raise UnknownModelError(f"hub model {repo_id!r} has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise UnknownModelError(
            f"hub repo {repo_id!r} not found at {constants.ENDPOINT} (or it is private: pass a token / log in); "
            f"known names: {', '.join(sorted(model_names.known())) or 'none'}"
        ) from err
    except LocalEntryNotFoundError as err:
        if constants.HF_HUB_OFFLINE:
            raise HubUnavailableError(_offline_help(repo_id)) from err
        raise HubUnavailableError(
            f"hub model {repo_id!r} could not be fetched from {constants.ENDPOINT} and is not cached ({err}). "
            "Check the connection or HF_ENDPOINT, or download it where the hub is reachable."
        ) from err
    return Path(path)


def resolve(source: str | Path, *, revision: str | None = None) -> Path:
    """The local folder holding a model: a shipped name, a configured name, a folder or a hub repo id
    (``org/name``, or ``org/name@revision``).

    Raises:
        UnknownModelError: none of these (the message lists the known names).
        HubUnavailableError: a hub id that cannot be fetched now.
    """
    if not isinstance(source, (str, Path)) or not str(source):
        raise TypeError(f"source must be a model name, folder or hub repo id, got {source!r}")
    entries = model_names.known()
    if isinstance(source, str) and source in entries:  # a name wins over a same-named folder in the cwd
        entry = entries[source]
        if entry.source == "shipped":
            return Path(entry.location)
        return _download(entry.location, revision or entry.revision)
    if isinstance(source, Path) or Path(source).is_dir():
        folder = Path(source)
        if not (folder / CONFIG_NAME).is_file():
            raise UnknownModelError(f"{folder} is not a saved zoo model: no {CONFIG_NAME} in it")
        return folder
    repo_id, _, at_revision = source.partition("@")  # "org/name@v1" names a revision too
    if _REPO_ID.match(repo_id):
        if at_revision and revision and at_revision != revision:
            raise ValueError(f"{source!r} names revision {at_revision!r} but revision={revision!r} was given")
        return _download(repo_id, revision or at_revision or None)
    raise UnknownModelError(
        f"unknown model {source!r}: not a shipped name, a folder or a hub repo id (org/name). "
        f"Known names: {', '.join(sorted(entries)) or 'none'}"
    )


def load_config(folder: str | Path) -> ModelConfig:
    """Read a saved model's ``config.json``.

    Raises:
        WeightsError: missing or invalid config (names the file).
    """
    path = Path(folder) / CONFIG_NAME
    try:
        return ModelConfig.load(path)
    except FileNotFoundError as err:
        raise WeightsError(f"{path} is missing") from err
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{path} is not a valid zoo config: {err}") from err


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, floating-point ones cast to fp32, each in storage of its own.

    Raises:
        WeightsError: a missing or unreadable file (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file: {err}") from err
    # Every tensor gets storage of its own from torch's allocator: safetensors' buffers are only 8-byte
    # aligned, and oneDNN picks other kernels (1e-5 apart) for them than for a freshly built model's.
    return {k: (v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()) for k, v in state.items()}


def upload_folder(folder: str | Path, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
                  private: bool = False, commit_message: str | None = None):
    """Upload a saved model folder to a hub repo (created if missing).

    Args:
        folder: a folder written by ``zoo.save_pretrained``.
        repo_id: ``org/name``.
        token, endpoint: passed to ``huggingface_hub.HfApi`` (default: the logged-in token, HF_ENDPOINT).
        private: create the repo private.
        commit_message: default "Upload <name> (fundus-cam-zoo)".

    Returns:
        huggingface_hub's CommitInfo of the upload.

    Raises:
        ValueError: a bad repo id or a folder that is not a saved model.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    folder = Path(folder)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a saved zoo model: missing {', '.join(missing)}")
    name = load_config(folder).name
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=str(folder),
        allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
        commit_message=commit_message or f"Upload {name} (fundus-cam-zoo)",
    )
