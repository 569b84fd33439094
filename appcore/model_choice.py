"""One model the app may load (``ModelChoice``) and how the menu names it: what it answers, the model, its paper.

Its own module so that the catalogue (which models may load) and the menu (their order and labels) both use it
without importing each other in a circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NO_PAPER = "no paper"


def heading(paper: str | None) -> str:
    """A model's paper in the menu, after the task: "paper 004", "no paper", or "" (paper unknown). The title is
    the card's: a menu cut at a laptop's width must still show the task and the model."""
    if paper is None:
        return ""
    return f"paper {paper}" if paper else NO_PAPER


@dataclass(frozen=True)
class ModelChoice:
    """One model the app may load."""

    id: str  # a registry name, a hub repo id, or (kind "folder") the menu name of an operator's folder
    revision: str | None = None
    kind: str = "shipped"  # "shipped" | "folder" | "hub"
    location: str | None = field(default=None, repr=False, compare=False)  # an operator folder's path
    paper: str | None = field(default=None, compare=False)  # from its config ("" none, None unknown): appcore.menu
    answers: str | None = field(default=None, compare=False)  # what it answers, from its config's labels (None unknown)

    @property
    def key(self) -> str:
        """The menu value: ``id`` or ``id@revision``."""
        return f"{self.id}@{self.revision}" if self.revision else self.id

    @property
    def label(self) -> str:
        """The menu text: what the model answers, the model, then its paper ("DR grade 0–4 — dr-grading · paper
        004"), short enough for a narrow menu; a model that is not shipped says its kind ("org/name (hub)")."""
        name = self.key if self.kind == "shipped" else f"{self.key} ({self.kind})"
        group = heading(self.paper)
        text = f"{self.answers} — {name}" if self.answers else name
        return f"{text} · {group}" if group else text
