"""Model names (what ``zoo.load`` takes besides a folder or a hub repo id): the shipped defaults under
``assets/<name>/`` and user-configured hub repo ids; ``catalog`` lists them with the architectures and papers
(``python -m zoo list``). Architectures are registered in ``zoo.architectures.registry``, not here.

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


def _model_row(entry: Entry) -> dict:
    row = {"name": entry.name, "source": f"{entry.source} ({entry.location}"
           + (f"@{entry.revision}" if entry.revision else "") + ")"}
    config = None
    if entry.source == "shipped":
        config = shipped_config(entry)
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(entry.location, "config.json", revision=entry.revision)
        if isinstance(cached, str):
            config = json.loads(Path(cached).read_text())
    if config is None:
        return {**row, "paper": None, "task": None, "labels": None, "pretrained": None, "arch": None,
                "note": "hub model not downloaded yet: `python -m zoo info NAME` fetches it"}
    return {**row, **{k: config.get(k) for k in ("paper", "task", "labels", "pretrained", "arch", "input_size",
                                                   "datasets", "metrics", "description")}}


def catalog() -> dict:
    """Everything ``python -m zoo list`` shows: named models, the papers' architectures, the papers.

    Returns:
        ``{"models": [...], "architectures": [...], "papers": [...]}``; each model and architecture
        row has at least ``name, paper, task, labels, source, pretrained``.
    """
    from zoo.architectures.registry import ARCHITECTURES  # filled when the zoo package is imported
    from zoo.papers import PAPERS

    models = [_model_row(entry) for entry in known().values()]
    architectures = []
    for spec in ARCHITECTURES.values():
        for paper_id in spec.papers:
            paper = PAPERS[paper_id]
            architectures.append({
                "name": spec.name, "paper": paper_id, "task": paper.task, "labels": list(paper.labels),
                "source": "architecture (untrained)", "pretrained": spec.pretrained_weights,
                "head": spec.default_head(paper_id) or None, "heads": list(spec.heads) or None,
                "input_size": spec.input_size if spec.fixed_input or paper.input_size is None else paper.input_size,
                "description": spec.description,
            })
    papers = [{"id": p.id, "title": p.title, "dataset": p.dataset, "task": p.task, "labels": list(p.labels),
               "architectures": list(p.architectures), "recipe": p.recipe} for p in PAPERS.values()]
    return {"models": models, "architectures": architectures, "papers": papers}
