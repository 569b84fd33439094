"""The package declares compatible ranges (pyproject.toml); the Space and ./dev.sh install exact pins
(requirements*.txt). Every pin names a declared dependency and lies inside its range, so the tested
versions are ones the package says it supports."""
from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def pins(filename: str) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in (REPO / filename).read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in reqs}


def declared(extra: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


@pytest.mark.parametrize("filename, extra", [("requirements.txt", None), ("requirements-dev.txt", "dev")])
def test_pins_are_exact_and_inside_the_declared_ranges(filename, extra):
    pinned, ranges = pins(filename), declared(extra)
    assert set(pinned) == set(ranges), f"{filename} and pyproject.toml name different packages"
    for name, pin in pinned.items():
        (spec,) = pin.specifier  # exactly one ==
        assert spec.operator == "==", f"{filename}: {pin} is not an exact pin"
        assert ranges[name].specifier.contains(spec.version), f"{pin} is outside pyproject.toml's {ranges[name]}"
        assert "==" not in str(ranges[name].specifier), f"pyproject.toml pins {ranges[name]}: give a range"
