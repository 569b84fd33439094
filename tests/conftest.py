"""Shared test set-up: offline hub, the real data beside the checkout, small CPU budgets."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the network: the hub is offline unless a test points HF_ENDPOINT at 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A private hub cache per test run, set before huggingface_hub is imported (it reads HF_HOME once).
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="fcz_hf_home_")
# OpenMP threads that sleep instead of spinning while waiting: on a shared 2-core machine spinning
# threads made 2-thread torch ops 10-50x slower (read by libgomp when torch loads, so set it here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUNDUS_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    problem = _package_problem()
    if problem:
        raise pytest.UsageError(problem)


def _package_problem() -> str | None:
    """Why this checkout's package is not what child processes will import, or None. Subprocess tests (the
    CLIs, torchrun, a killed training job) import fundus/zoo/explain/train from the installed package."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    fix = "./dev.sh test installs it, or: .venv/bin/pip install -e . --no-deps"
    # All matches: the build's fundus_cam_zoo.egg-info in the checkout (on sys.path here) carries no install record.
    installs = [json.loads(dist.read_text("direct_url.json") or "{}")
                for dist in metadata.distributions(name="fundus-cam-zoo")]
    installs = [found for found in installs if found]
    if not installs:
        return f"the fundus-cam-zoo package is not installed in this environment ({fix})"
    for found in installs:
        url = urlparse(found.get("url", ""))
        if (found.get("dir_info", {}).get("editable") and url.scheme == "file"
                and Path(unquote(url.path)).resolve() == REPO.resolve()):
            return None
    return f"fundus-cam-zoo is installed, but not editable from {REPO} ({fix})"


def shared_dataset(name: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread; on a shared, busy machine it costs 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
