"""How a model was trained and shipped: structured facts (``ModelConfig.training``) and the one human-readable line
(``ModelConfig.reproduce``) written from them.

    {"recipe": "aptos",                                           # python -m train RECIPE
     "args": ["--data", "../shared/data/aptos2019", "--format", "aptos", …],   # its arguments, as its parser reads them
     "ship": ["runs/defaults/dr-grading", "--out", "assets/dr-grading", "--theta", "48"]}   # python -m train ship …

A recipe's publish step writes ``recipe`` and ``args`` (``Recipe.parse_args`` records them); ``python -m train
ship`` reads them back (the recipe parses its own arguments again) and adds ``ship``. Configs written before the
field existed carry the command only as text: ``training_of`` reads it from their ``reproduce`` line.
"""
from __future__ import annotations

import shlex
from typing import Any, Sequence

TRAIN = ("python", "-m", "train")
STEPS = " && "  # between the training and the ship command in ``reproduce``


def recorded(recipe: str, argv: Sequence[str]) -> dict[str, Any]:
    """The training facts of ``python -m train RECIPE ARGV``; ``--resume`` only continues an interrupted run, so the
    facts are the command that trains the model from scratch."""
    return {"recipe": recipe, "args": [str(a) for a in argv if a != "--resume"]}


def command_line(training: dict[str, Any]) -> str:
    """The ``reproduce`` line: the training command, then the ship command where the model was shipped."""
    line = shlex.join([*TRAIN, training["recipe"], *training["args"]])
    if training.get("ship"):
        line += STEPS + shlex.join([*TRAIN, "ship", *training["ship"]])
    return line


def training_of(config: Any) -> dict[str, Any]:
    """A config's training facts: its ``training`` field, or, for a config written before that field existed, its
    ``reproduce`` line read back.

    Raises:
        ValueError: the model was not trained by ``python -m train``.
    """
    if config.training:
        return dict(config.training)
    return _from_reproduce_line(config.reproduce)


def _from_reproduce_line(line: str) -> dict[str, Any]:
    # Only for configs older than the ``training`` field: the line is what command_line wrote.
    steps = [shlex.split(step) for step in line.split(STEPS)]
    if not steps[0] or tuple(steps[0][:3]) != TRAIN or len(steps[0]) < 4:
        raise ValueError(f"this model was not trained by `python -m train` (its command: {line!r})")
    training = recorded(steps[0][3], steps[0][4:])
    ship = [step for step in steps[1:] if tuple(step[:4]) == (*TRAIN, "ship")]
    if ship:
        training["ship"] = ship[0][4:]
    return training
