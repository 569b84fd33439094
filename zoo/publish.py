"""Publish the shipped models: each ``assets/<name>/`` folder to the hub model repo ``ORG/<name>``.

``python -m zoo publish ORG [NAME ...]`` (or ``fundus-zoo publish``). Every model goes through
``zoo.push_to_hub`` — the one upload path, which the training recipes' ``--push-to-hub`` use too
(``HfApi.create_repo`` + ``HfApi.upload_folder``: config.json, model.safetensors in fp16 and the card README.md;
the client stores the weights through Xet/LFS, as the hub requires for binary files). A folder whose weights are
not fp16 yet is re-saved in fp16 first (in a temporary folder; the shipped one is never changed).
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from zoo import model_names
from zoo.errors import UnknownModelError
from zoo.hub import CONFIG_NAME, WEIGHTS_NAME, check_repo_id

log = logging.getLogger(__name__)


def shipped_names() -> list[str]:
    """The shipped models' names (``assets/<name>/`` folders with a config.json), sorted."""
    return sorted(model_names.shipped())


def repo_ids(org: str, names: Sequence[str] | None = None) -> dict[str, str]:
    """``{name: "ORG/name"}`` for the named shipped models (default: all of them).

    Raises:
        UnknownModelError: a name that is not a shipped model (the message lists them).
        ValueError: ``org`` cannot make a repo id.
    """
    shipped = shipped_names()
    chosen = list(names) if names else shipped
    unknown = [name for name in chosen if name not in shipped]
    if unknown:
        raise UnknownModelError(f"not shipped models: {', '.join(unknown)}; shipped: {', '.join(shipped) or 'none'}")
    ids = {name: f"{org}/{name}" for name in dict.fromkeys(chosen)}
    for repo_id in ids.values():
        check_repo_id(repo_id)
    return ids


def is_fp16(weights: Path) -> bool:
    """Whether every floating-point tensor of a safetensors file is stored in fp16 (read from its header only)."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        dtypes = {str(handle.get_slice(key).get_dtype()) for key in handle.keys()}  # noqa: SIM118 - not iterable
    return not dtypes & {"F32", "F64", "BF16"}


def publish(org: str, names: Sequence[str] | None = None, *, token: str | None = None, endpoint: str | None = None,
            private: bool = False, report: Callable[[str], None] = print) -> dict[str, str]:
    """Push the shipped models (default: all) to ``ORG/<name>`` model repos.

    Args:
        org: the hub user or organisation.
        names: shipped model names (``python -m zoo list``); default every one.
        token, endpoint: for ``huggingface_hub.HfApi`` (default: the logged-in token, HF_ENDPOINT).
        private: create the repos private.
        report: one line per model as it goes.

    Returns:
        ``{name: commit_url}``.

    Raises:
        UnknownModelError, ValueError: a name or org that cannot be published (nothing pushed).
    """
    import torch

    from zoo.factory import load, push_to_hub

    ids = repo_ids(org, names)
    shipped = model_names.shipped()
    done = {}
    for number, (name, repo_id) in enumerate(ids.items(), 1):
        folder = Path(shipped[name].location)
        weights = folder / WEIGHTS_NAME
        size_mb = weights.stat().st_size / 1e6
        report(f"[{number}/{len(ids)}] {name} -> {repo_id} ({size_mb:.1f} MB of weights)")
        upload = dict(token=token, endpoint=endpoint, private=private,
                      commit_message=f"Publish {name} (fundus-cam-zoo, shipped model)")
        if (folder / CONFIG_NAME).is_file() and is_fp16(weights):
            info = push_to_hub(folder, repo_id, **upload)
        else:  # shipped in fp32: halve it for the hub, the shipped folder stays as it is
            with tempfile.TemporaryDirectory(prefix="fcz_publish_") as tmp:
                model = load(folder, device="cpu")
                info = push_to_hub(model.save_pretrained(Path(tmp) / name, dtype=torch.float16), repo_id, **upload)
        done[name] = str(getattr(info, "commit_url", info))
        log.info("published %s to %s", name, repo_id)
    return done
