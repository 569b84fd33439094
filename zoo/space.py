"""Deploy the web app as a Hugging Face Space, through the hub's HTTP API (never a git push).

``python -m zoo space deploy ORG/NAME --hardware cpu-basic|zero-a10g|t4-small [--models ORG/a ORG/b …]
[--dry-run DIR]``:

1. builds the Space's folder: exactly what ``app.py`` needs at run time (``app.py``, the packages ``appcore``,
   ``explain``, ``zoo`` and ``fundus`` — their ``.py`` files and package data such as
   ``zoo/fundus_check_head.json`` —, the example photos in ``assets/examples``, ``README.md`` with its front matter
   (Gradio SDK, ``app_file``) plus the ``models`` it loads, ``LICENSE``, ``.gitattributes``) and a
   ``requirements.txt`` for the hardware (``requirements-space-cpu.txt``: the CPU-only torch wheel, no CUDA
   libraries; ``requirements-space-gpu.txt``: the regular CUDA wheel and ``spaces`` for ZeroGPU). No weights, no
   tests, no benchmarks, no ``train/`` (the app never imports it);
2. creates the Space (``HfApi.create_repo(repo_type="space", space_sdk="gradio")``), uploads the folder
   (``HfApi.upload_folder``: the client stores the example photos through Xet/LFS; files of an earlier deploy that
   are no longer part of the app are deleted in the same commit);
3. sets the Space variable ``FUNDUS_ZOO_MODELS`` (``HfApi.add_space_variable``) to the hub model repos the app loads
   at start (``name=ORG/name,…``: ``zoo.model_names`` reads it; ``python -m zoo publish ORG`` pushes them);
4. requests the hardware (``HfApi.request_space_hardware``).

``--dry-run DIR`` writes the folder into DIR and prints the variable and the hardware it would set, with no
request at all. The repository itself cannot be pushed to a Space with git: the hub refuses any push whose
history holds binary files outside Xet/LFS, and ``assets/*.safetensors`` are in this repository's history.

This module only copies files: it imports nothing of the app.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from zoo.hub import check_repo_id

ROOT = Path(__file__).resolve().parents[1]
MODELS_VARIABLE = "FUNDUS_ZOO_MODELS"  # zoo.model_names.ENV_VAR (not imported: it reads the environment at import)
# Space hardware flavours (huggingface_hub.SpaceHardware) -> which requirements file they install.
HARDWARE = {
    "cpu-basic": "cpu", "cpu-upgrade": "cpu",
    "zero-a10g": "gpu", "t4-small": "gpu", "t4-medium": "gpu", "l4x1": "gpu", "a10g-small": "gpu",
    "a10g-large": "gpu", "a100-large": "gpu",
}
REQUIREMENTS = {"cpu": "requirements-space-cpu.txt", "gpu": "requirements-space-gpu.txt"}
PACKAGES = ("appcore", "explain", "zoo", "fundus")  # what app.py imports, directly or not (never train/)
PACKAGE_DATA = (".py", ".json")  # code, and data the code reads (zoo/fundus_check_head.json)
TOP_FILES = ("app.py", "README.md", "LICENSE", ".gitattributes")
EXAMPLES = "assets/examples"  # the example photos the page opens on (no model weights there)
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".json", ".md")  # photos, examples.json, CREDITS.md (not the script)
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def space_files(root: Path = ROOT) -> list[str]:
    """The repository's files a Space needs, as paths relative to ``root`` (sorted; requirements.txt apart)."""
    files = [name for name in TOP_FILES if (root / name).is_file()]
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and path.suffix in PACKAGE_DATA and "__pycache__" not in relative.parts:
                files.append(relative.as_posix())
    examples = root / EXAMPLES
    if examples.is_dir():
        files += [p.relative_to(root).as_posix() for p in sorted(examples.iterdir())
                  if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES]
    return sorted(files)


def requirements_file(hardware: str, root: Path = ROOT) -> Path:
    """The requirements file a hardware flavour installs (``requirements-space-cpu.txt`` / ``-gpu.txt``).

    Raises:
        ValueError: an unknown flavour (the message lists them).
    """
    if hardware not in HARDWARE:
        raise ValueError(f"unknown Space hardware {hardware!r}; one of: {', '.join(HARDWARE)}")
    return root / REQUIREMENTS[HARDWARE[hardware]]


def models_variable(models: Sequence[str]) -> str:
    """The ``FUNDUS_ZOO_MODELS`` value for hub repo ids: ``name=ORG/name[@rev],…``, each named by its repo name
    (so ``ORG/dr-grading`` is the app's ``dr-grading``, the page's default).

    Raises:
        ValueError: an entry that is not ``org/name[@revision]``, or two repos of the same name.
    """
    names: dict[str, str] = {}
    for model in models:
        if not _MODEL_ID.match(model):
            raise ValueError(f"--models {model!r}: expected a hub model repo id, org/name[@revision]")
        name = model.partition("@")[0].split("/")[1]
        if name in names:
            raise ValueError(f"--models: {names[name]!r} and {model!r} would both be named {name!r}")
        names[name] = model
    return ",".join(f"{name}={model}" for name, model in names.items())


def readme_for_space(text: str, models: Sequence[str]) -> str:
    """README.md with its front matter's ``models:`` set to the hub repos the Space loads (the hub links them)."""
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError("README.md has no YAML front matter (the Space's settings: sdk, app_file, …)")
    head, body = text[4:].split("\n---\n", 1)
    lines, skipping = [], False
    for line in head.splitlines():  # drop an earlier models: list
        if line.startswith("models:"):
            skipping = True
            continue
        if skipping and line.startswith((" ", "-")):
            continue
        skipping = False
        lines.append(line)
    repos = list(dict.fromkeys(model.partition("@")[0] for model in models))
    lines += ["models:", *(f"  - {repo}" for repo in repos)] if repos else []
    return "---\n" + "\n".join(lines) + "\n---\n" + body


def build_folder(dest: str | Path, hardware: str, models: Sequence[str], root: Path = ROOT) -> Path:
    """Write the Space's folder: ``space_files``, ``requirements.txt`` for ``hardware``, the README's ``models``.

    Raises:
        ValueError: unknown hardware, or ``dest`` exists and is not an empty folder (nothing is overwritten).
    """
    dest = Path(dest)
    requirements = requirements_file(hardware, root)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} exists and is not an empty folder: give a new or empty one")
    for relative in space_files(root):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    (dest / "requirements.txt").write_text(requirements.read_text())
    readme = root / "README.md"
    (dest / "README.md").write_text(readme_for_space(readme.read_text(), models))
    return dest


def default_models(space_id: str) -> list[str]:
    """``OWNER/<name>`` for every shipped model, OWNER the Space's (where ``python -m zoo publish OWNER`` put them)."""
    from zoo.publish import repo_ids

    return list(repo_ids(space_id.split("/")[0]).values())


def deploy(space_id: str, hardware: str, models: Sequence[str] | None = None, *, token: str | None = None,
           endpoint: str | None = None, private: bool = False, dry_run: str | Path | None = None,
           report: Callable[[str], None] = print) -> dict:
    """Create or update the Space ``space_id`` (see the module's docstring).

    Args:
        space_id: ``OWNER/NAME``.
        hardware: a ``HARDWARE`` flavour.
        models: hub model repo ids the Space loads (default: ``OWNER/<name>`` for every shipped model).
        token, endpoint: for ``huggingface_hub.HfApi`` (default: the logged-in token, HF_ENDPOINT).
        private: create the Space private.
        dry_run: write the folder here and send nothing.

    Returns:
        ``{"space", "hardware", "variables", "files", "folder" (dry run) | "commit_url"}``.

    Raises:
        ValueError: a bad Space id, hardware, model id or dry-run folder (nothing sent).
    """
    check_repo_id(space_id)
    requirements_file(hardware)
    models = list(models) if models else default_models(space_id)
    variables = {MODELS_VARIABLE: models_variable(models)}
    plan = {"space": space_id, "hardware": hardware, "variables": variables}
    if dry_run is not None:
        folder = build_folder(dry_run, hardware, models)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        report(f"dry run: {len(files)} files for Space {space_id} in {folder}")
        for key, value in variables.items():
            report(f"dry run: would set the Space variable {key}={value}")
        report(f"dry run: would request hardware {hardware}")
        return {**plan, "files": files, "folder": str(folder)}

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="fcz_space_") as tmp:
        folder = build_folder(Path(tmp) / "space", hardware, models)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        report(f"creating Space {space_id} (Gradio SDK) if missing")
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        report(f"uploading {len(files)} files (no weights: the app downloads {len(models)} models from the hub)")
        info = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(folder),
                                 delete_patterns="*", commit_message="Deploy the Fundus CAM Zoo app (python -m zoo "
                                                                     "space deploy)")
    for key, value in variables.items():
        report(f"setting the Space variable {key}={value}")
        api.add_space_variable(space_id, key, value,
                               description="hub model repos the app loads at start (name=org/repo[@rev],…)")
    report(f"requesting hardware {hardware}")
    api.request_space_hardware(space_id, hardware)
    host = (endpoint or "https://huggingface.co").rstrip("/")
    report(f"done: {host}/spaces/{space_id}")
    return {**plan, "files": files, "commit_url": str(getattr(info, "commit_url", info))}
