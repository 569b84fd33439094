"""The registry of explanation methods: one small file per method in this package, each registering itself.

    from explain.methods import get_method, method_names, panel_methods
    get_method("gmsm").needs        # frozenset({'high_gradients', 'low_gradients'})
    panel_methods("main")           # ('cam', 'gradcam', 'guided_gradcam', 'gmsm'): the page's four panels
    panel_methods("optional")       # ('layercam',): offered as extra panels

Adding a method is one file here: a ``Method`` subclass decorated with ``@register``, its class attributes its
facts (name, title, needs, panel, order, help, params, regions). Every module of this package is imported when the
package is (``fundus.registration``), so the Explainer, the command line and both front ends offer the new method
without any other change.
"""
from __future__ import annotations

from explain.methods.base import NEEDS, REGIONS, Method, Param, Selection
from fundus.registration import Registry

_REGISTRY: Registry = Registry("method", "explain.methods")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a ``Method`` subclass to the registry (its name must be new).

    Raises:
        TypeError: not a Method subclass.
        ValueError: no name, a name already registered, an unknown need or region.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register takes a Method subclass, got {cls!r}")
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"a method needs a new name; {cls.name!r} is {'taken' if cls.name else 'empty'}")
    unknown = (set(cls.needs) - NEEDS) | (set(cls.regions) - REGIONS)
    if unknown:
        raise ValueError(f"method {cls.name!r}: unknown needs or regions {sorted(unknown)}")
    if cls.panel not in (None, "main", "optional"):
        raise ValueError(f"method {cls.name!r}: panel must be 'main', 'optional' or None, got {cls.panel!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def registered() -> tuple[Method, ...]:
    """Every registered method, in display order."""
    return tuple(sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name)))


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in display order."""
    return tuple(m.name for m in registered())


def get_method(name: str) -> Method:
    """The registered method of a name or spelling ("Guided-GradCAM", "gradcam++").

    Raises:
        ValueError: no such method.
    """
    return _REGISTRY[canonical_method(name)]


def canonical_method(name: str) -> str:
    """A method's registered name ("guided-gradcam" -> "guided_gradcam", "gradcam++" -> "gradcam_pp").

    Raises:
        ValueError: no registered method is spelt so.
    """
    squeezed = _squeeze(name)
    for method in _REGISTRY.values():
        if squeezed in {_squeeze(spelling) for spelling in (method.name, *method.aliases)}:
            return method.name
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")


def _squeeze(name: str) -> str:
    return str(name).strip().lower().replace("++", "pp").replace("-", "").replace("_", "")


def needs_of(names) -> frozenset[str]:
    """What the one pass must capture for these methods (the union of their needs)."""
    return frozenset().union(*(get_method(n).needs for n in names))


def panel_methods(kind: str = "main") -> tuple[str, ...]:
    """The methods shown as the page's panels ("main") or offered as extra panels ("optional"), in order."""
    return tuple(m.name for m in registered() if m.panel == kind)


_REGISTRY.discover()

__all__ = ["Method", "Param", "Selection", "NEEDS", "REGIONS", "canonical_method", "get_method", "method_names",
           "needs_of", "panel_methods", "register", "registered"]
