"""The packages' layering, read from the source: every import (top-level, in a function, or a module named to
``importlib.import_module``) goes down the layers, and no package's modules import each other in a circle (an import
for type hints only, under ``TYPE_CHECKING``, counts too: move the type, or describe it with a Protocol).

    fundus   ← nothing of ours (image I/O, preprocessing, data sets)
    zoo      ← fundus (models: architectures, loading, cards, predict, evaluate)
    explain  ← zoo, fundus (the explanation engine)
    train    ← explain, zoo, fundus (recipes, loops, shipping)
    appcore  ← explain, zoo, fundus (the two front ends' shared core; never train)
    app.py, streamlit_app.py ← appcore, explain, zoo, fundus (UI only; never train)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fundus", "zoo", "explain", "train", "appcore")
UI_SCRIPTS = ("app", "streamlit_app")
# What each layer may import of ours (its own package aside).
ALLOWED = {
    "fundus": set(),
    "zoo": {"fundus"},
    "explain": {"zoo", "fundus"},
    "train": {"explain", "zoo", "fundus"},
    "appcore": {"explain", "zoo", "fundus"},
    "app": {"appcore", "explain", "zoo", "fundus"},
    "streamlit_app": {"appcore", "explain", "zoo", "fundus"},
}
UI_LIBRARIES = ("gradio", "streamlit")
ENGINE = ("fundus", "zoo", "explain", "train")  # import no UI library
ACYCLIC = PACKAGES  # every package: its modules never import each other in a circle
DYNAMIC = {"import_module", "__import__"}


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for our packages and the UI scripts."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    for script in UI_SCRIPTS:
        if (REPO / f"{script}.py").is_file():
            found[script] = REPO / f"{script}.py"
    return found


def _module_named(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``zoo.hub.load`` → ``zoo.hub``); None: not ours."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, source: str, known: set[str], *, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported module of ours, line) for every import in ``source``, wherever it stands.

    ``from a import b`` names ``a.b`` when that is a module, else ``a``. A module that imports dynamically
    (``importlib.import_module`` / ``__import__``) is also taken to import every module of ours that one of
    its strings names (a constant, or the constant start of an f-string: ``f"train.recipes.{name}"``).
    """
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def add(name: str, line: int) -> None:
        target = _module_named(name, known)
        if target and target != module:
            found.append((target, line))

    dynamic = False
    strings: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) in DYNAMIC:
                dynamic = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append((node.value, node.lineno))
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            strings.append((str(node.values[0].value).rstrip("."), node.lineno))
    if dynamic:
        for text, line in strings:
            if text.split(".")[0] in known and all(part.isidentifier() for part in text.split(".")):
                add(text, line)
    return found


def import_graph(files: dict[str, Path] | None = None, sources: dict[str, str] | None = None) -> dict:
    """module → [(imported module, line)]; ``sources`` adds or replaces modules' source text (for the tests)."""
    files = module_files() if files is None else files
    texts = {name: path.read_text() for name, path in files.items()}
    texts.update(sources or {})
    known = set(texts)
    packages = {name for name, path in files.items() if path.name == "__init__.py"}
    return {name: imports_of(name, text, known, is_package=name in packages) for name, text in texts.items()}


def layer_violations(graph: dict) -> list[str]:
    """``file:line: a imports b`` for every import that goes up or sideways."""
    bad = []
    for module, targets in graph.items():
        layer = module.split(".")[0]
        for target, line in targets:
            other = target.split(".")[0]
            if other != layer and other not in ALLOWED[layer]:
                bad.append(f"{module.replace('.', '/')}:{line}: {module} imports {target} ({layer} → {other})")
    return sorted(bad)


def cycles(graph: dict, package: str) -> list[list[str]]:
    """The import cycles among one package's modules (strongly connected components of two or more)."""
    edges = {m: {t for t, _ in targets if t.split(".")[0] == package}
             for m, targets in graph.items() if m.split(".")[0] == package}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_imports_go_down_the_layers(graph):
    assert layer_violations(graph) == []


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycles_inside(graph, package):
    assert cycles(graph, package) == []


def test_the_engine_imports_no_ui_library():
    bad = []
    for module, path in module_files().items():
        if module.split(".")[0] not in ENGINE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in UI_LIBRARIES]
    assert bad == []


@pytest.mark.slow
def test_the_checks_catch_an_upward_import_anywhere():
    files = module_files()
    hub = files["zoo.hub"].read_text()
    lazily = hub + "\n\ndef _late():\n    from train import recipes\n    return recipes\n"
    assert any("zoo.hub imports train.recipes (zoo → train)" in v
               for v in layer_violations(import_graph(files, {"zoo.hub": lazily})))
    on_top = "from train.recipes.odir import undersample\n" + hub
    assert any("zoo → train" in v for v in layer_violations(import_graph(files, {"zoo.hub": on_top})))
    # A module named to importlib (the way zoo once registered train.recipes.odir's architecture).
    by_name = hub + '\nLATER = {"metadata_fusion": "train.recipes.odir"}\n\ndef _late(arch):\n' \
                    '    import importlib\n    importlib.import_module(LATER[arch])\n'
    assert any("zoo.hub imports train.recipes.odir" in v
               for v in layer_violations(import_graph(files, {"zoo.hub": by_name})))
    explain_up = "from appcore import page\n"
    assert any("explain → appcore" in v for v in layer_violations(import_graph(files, {"explain.extra": explain_up})))
    # hub reading the model class back makes a circle: model → factory → hub → model.
    circular = hub + "\n\ndef _model_class():\n    from zoo.model import FundusNet\n    return FundusNet\n"
    assert any("zoo.hub" in c and "zoo.model" in c for c in cycles(import_graph(files, {"zoo.hub": circular}), "zoo"))
    # An import for type hints only closes a circle too (the one explain.methods.base once had).
    base = files["explain.methods.base"].read_text()
    typed = base + "\n\nif TYPE_CHECKING:\n    from explain.explainer import Explanation\n"
    assert any("explain.explainer" in c and "explain.methods.base" in c
               for c in cycles(import_graph(files, {"explain.methods.base": typed}), "explain"))
