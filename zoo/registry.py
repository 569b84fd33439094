"""Model names: the shipped defaults under ``assets/<name>/`` and user-configured hub repo ids.

``FUNDUS_ZOO_MODELS`` adds hub models, comma-separated, each ``name=org/repo`` (or just ``org/repo``,
named by its id), optionally ``@revision``: ``FUNDUS_ZOO_MODELS="dr=me/dr-grading@v1,org/other"``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
ENV_VAR = "FUNDUS_ZOO_MODELS"


@dataclass(frozen=True)
class Entry:
    name: str
    source: str  # "shipped" | "hub"
    location: str  # folder path or hub repo id
    revision: str | None = None


def assets_dir() -> Path:
    """The shipped models' folder (``FUNDUS_ZOO_ASSETS`` overrides it, e.g. in tests)."""
    return Path(os.environ.get("FUNDUS_ZOO_ASSETS", ASSETS_DIR))


def shipped() -> dict[str, Entry]:
    """Shipped models: every ``assets/<name>/`` holding a ``config.json``."""
    root = assets_dir()
    if not root.is_dir():
        return {}
    return {
        d.name: Entry(d.name, "shipped", str(d))
        for d in sorted(root.iterdir())
        if d.is_dir() and (d / "config.json").is_file()
    }


def configured() -> dict[str, Entry]:
    """Hub models named in ``FUNDUS_ZOO_MODELS``.

    Raises:
        ValueError: a malformed entry.
    """
    entries = {}
    for raw in os.environ.get(ENV_VAR, "").split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, repo = item.rpartition("=")
        repo, _, revision = repo.partition("@")
        name = name.strip() or repo.strip()
        if repo.count("/") != 1:
            raise ValueError(f"{ENV_VAR} entry {item!r}: expected name=org/repo[@revision]")
        entries[name] = Entry(name, "hub", repo.strip(), revision.strip() or None)
    return entries


def known() -> dict[str, Entry]:
    """All named models: configured hub ids, then shipped ones (a shipped name wins)."""
    return {**configured(), **shipped()}


def shipped_config(entry: Entry) -> dict:
    """The config.json of a shipped model as a dict."""
    return json.loads((Path(entry.location) / "config.json").read_text())
