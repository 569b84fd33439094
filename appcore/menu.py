"""The model menu's order and labels: the models grouped by paper (``zoo.papers``), each labelled by what it answers
first ("DR grade 0–4 — dr-grading · paper 004": a clinician picks by task, the paper is the provenance), and
the default model.

Everything comes from each model's own config.json (its ``paper`` field), read without loading any weights.
The only model named here is the preferred default, ``dr-grade-classifier``. Models without a paper follow the papers'
groups; hub models whose config is not downloaded yet (their paper unknown) come last.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from appcore.model_choice import ModelChoice

log = logging.getLogger(__name__)

# The better of the two DR graders on every test source but eyepacs-1k (a tie), and the steadier on squashed
# and small photos (docs/MODELS.md): most visitors come for a DR grade.
PREFERRED_DEFAULT = "dr-grade-classifier"


def config_file(choice: ModelChoice, named: dict) -> Path | None:
    """The config.json of a menu choice, without downloading anything: an operator's folder's or a shipped
    model's file, a hub model's cached copy; None where it is not at hand (a hub model not downloaded yet).

    Args:
        named: ``zoo.model_names.known()``: where the zoo's model names are stored.
    """
    if choice.kind == "folder":
        return Path(choice.location) / "config.json"
    entry = named.get(choice.id)
    if entry is not None and entry.source == "shipped":
        return Path(entry.location) / "config.json"
    repo, revision = (entry.location, entry.revision) if entry is not None else (choice.id, choice.revision)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    return Path(cached) if isinstance(cached, str) else None


def _config_json(choice: ModelChoice, named: dict) -> dict | None:
    """A model's config.json as a dict; None when it is not at hand or unreadable."""
    path = config_file(choice, named)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a broken model still gets a menu entry; loading says why
        log.warning("model %r: config.json unreadable for the menu: %s", choice.key, exc)
        return None
    return data if isinstance(data, dict) else None


def paper_of(choice: ModelChoice, named: dict) -> str | None:
    """The paper id in a model's config ("" when it has none); None when its config is not at hand or unreadable."""
    paper = (_config_json(choice, named) or {}).get("paper")
    return paper if isinstance(paper, str) else None


def answers_of(choice: ModelChoice, named: dict) -> str | None:
    """What a model answers, in a clinician's words ("DR grade 0–4", "DR lesions": ``what_it_answers``), from its
    config's labels; None when its config is not at hand."""
    from fundus.datasets.labels import what_it_answers

    labels = (_config_json(choice, named) or {}).get("labels")
    if not isinstance(labels, list) or not labels:
        return None
    return what_it_answers([str(label) for label in labels])


def config_of(choice: ModelChoice):
    """The ``zoo.config.ModelConfig`` of a menu choice from its config.json, loading no weights and downloading
    nothing; None where it is not at hand or not a valid config (loading the model says why)."""
    from zoo import model_names
    from zoo.config import ModelConfig

    path = config_file(choice, model_names.known())
    try:
        return ModelConfig.load(path) if path is not None else None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("model %r: config.json unreadable: %s", choice.key, exc)
        return None


def with_papers(choices: Iterable[ModelChoice], named: dict) -> list[ModelChoice]:
    """The choices with their ``paper`` and ``answers`` read from their configs."""
    return [dataclasses.replace(choice, paper=paper_of(choice, named), answers=answers_of(choice, named))
            for choice in choices]


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
