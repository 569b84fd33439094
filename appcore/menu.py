"""The model menu's order and labels: the models grouped by paper (``zoo.papers``), and the default model.

Everything comes from each model's own config.json (its ``paper`` field), read without loading any weights.
The only model named here is the preferred default, ``dr-grading``. Models without a paper follow the papers'
groups; hub models whose config is not downloaded yet (their paper unknown) come last.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appcore.catalogue import ModelChoice

log = logging.getLogger(__name__)

PREFERRED_DEFAULT = "dr-grading"
NO_PAPER = "No paper"


def config_file(choice: ModelChoice, registry: dict) -> Path | None:
    """The config.json of a menu choice, without downloading anything: an operator's folder's or a shipped
    model's file, a hub model's cached copy; None where it is not at hand (a hub model not downloaded yet).

    Args:
        registry: ``zoo.registry.known()``: how the registry's names are stored.
    """
    if choice.kind == "folder":
        return Path(choice.location) / "config.json"
    entry = registry.get(choice.id)
    if entry is not None and entry.source == "shipped":
        return Path(entry.location) / "config.json"
    repo, revision = (entry.location, entry.revision) if entry is not None else (choice.id, choice.revision)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def paper_of(choice: ModelChoice, registry: dict) -> str | None:
    """The paper id in a model's config ("" when it has none); None when its config is not at hand or unreadable."""
    path = config_file(choice, registry)
    if path is None:
        return None
    try:
        paper = json.loads(path.read_text()).get("paper")
    except (OSError, ValueError, AttributeError) as exc:  # a broken model still gets a menu entry; loading says why
        log.warning("model %r: config.json unreadable for the menu: %s", choice.key, exc)
        return None
    return paper if isinstance(paper, str) else None


def config_of(choice: ModelChoice):
    """The ``zoo.config.ModelConfig`` of a menu choice from its config.json, loading no weights and downloading
    nothing; None where it is not at hand or not a valid config (loading the model says why)."""
    from zoo import registry
    from zoo.config import ModelConfig

    path = config_file(choice, registry.known())
    try:
        return ModelConfig.load(path) if path is not None else None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("model %r: config.json unreadable: %s", choice.key, exc)
        return None


def short_title(paper_id: str) -> str:
    """A paper's title in a few words ("" for an id ``zoo.papers`` does not know): its ``extra["short_title"]``,
    else its title up to a colon, a parenthesis or "with …" ("ELLG", "Multi-label DR lesion classification")."""
    from zoo.papers import PAPERS

    paper = PAPERS.get(paper_id)
    if paper is None:
        return ""
    return re.split(r": | \(| with ", paper.extra.get("short_title") or paper.title, maxsplit=1)[0].strip()


def heading(paper: str | None) -> str:
    """The group a model is listed under: "Paper 004 · ELLG", "No paper", or "" (paper unknown)."""
    if paper is None:
        return ""
    if not paper:
        return NO_PAPER
    title = short_title(paper)
    return f"Paper {paper} · {title}" if title else f"Paper {paper}"


def with_papers(choices: Iterable[ModelChoice], registry: dict) -> list[ModelChoice]:
    """The choices with their ``paper`` read from their configs."""
    return [dataclasses.replace(choice, paper=paper_of(choice, registry)) for choice in choices]


def grouped(choices: Iterable[ModelChoice]) -> list[ModelChoice]:
    """The papers' models in paper order, then the models without a paper, then those whose paper is unknown;
    within a group the given order stays."""
    def rank(choice: ModelChoice) -> tuple[int, str]:
        if choice.paper is None:
            return 2, ""
        return (0, choice.paper) if choice.paper else (1, "")

    return sorted(choices, key=rank)


def default_choice(choices: Sequence[ModelChoice]) -> ModelChoice | None:
    """The model a new page opens with: ``PREFERRED_DEFAULT`` when offered, else the first that loads offline
    (not a hub download), else the first; None for an empty menu."""
    preferred = [choice for choice in choices if choice.key == PREFERRED_DEFAULT]
    local = [choice for choice in choices if choice.kind != "hub"]
    return next(iter(preferred or local or choices), None)
