"""The one registration style (timm's ``@register_model``): a decorator beside a definition puts it, with its
facts, into a :class:`Registry`; the registry finds its package's modules by itself (``discover``).

Data set formats, architectures, recipes and explanation methods are each one such registry, so adding one is a
new file in its package: no import line and no hand-kept list. A module that fails to import is an error,
never skipped. This module lies in the bottom layer so that every package can use it; it imports nothing of ours.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Collection, TypeVar

T = TypeVar("T")


class Registry(dict):
    """Name → registered entry for one kind of thing, filled by that kind's decorator.

    A ``dict``, so ``name in registry``, ``registry[name]`` and ``sorted(registry)`` read it; ``add`` and
    ``lookup`` say what went wrong in the kind's own words.

    Args:
        kind: what is registered, for messages ("data set format", "architecture", …).
        package: the dotted package whose modules register the entries (``discover`` imports them).
        skip: module names of that package ``discover`` leaves alone (e.g. one that imports torch).
    """

    def __init__(self, kind: str, package: str, skip: Collection[str] = ()) -> None:
        super().__init__()
        self.kind, self.package, self.skip = kind, package, frozenset(skip)

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (the same entry again is a no-op).

        Raises:
            ValueError: an empty name, or a name another entry holds.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self and self[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def lookup(self, name: str) -> object:
        """The entry registered under ``name``.

        Raises:
            ValueError: an unknown name (the message lists the known ones).
        """
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}") from None

    def discover(self) -> None:
        """Import every module of the package (each registers what it defines), in name order; modules already
        imported cost nothing. Modules named ``_…`` and ``skip`` are left alone.

        Raises:
            Exception: whatever a module raises on import (a broken module is an error, never skipped).
        """
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_") and module.name not in self.skip:
                importlib.import_module(f"{self.package}.{module.name}")
