"""The Space end to end, offline (issue 18, part 4): the zoo published and the Space deployed against a local hub that
records the API calls (``tests/hub_server.py``); the uploaded Space folder started the way a Space starts it — a fresh
``python app.py`` with that folder as its working directory, its Space variable in the environment, ``HF_ENDPOINT`` at
a local olah mirror holding the published model repos, an empty ``HF_HOME`` and no model weights in the folder —;
then Chromium: the page answers, every model in the menu came from the hub, and a real photo is analysed."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hub_server import HubServer
from support import free_port

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DATA = Path(os.environ.get("FUNDUS_DATA", REPO.parent / "shared" / "data"))
ORG, SPACE = "fundus-org", "fundus-org/fundus-cam-zoo"
pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=zoo@test", "-c", "user.name=zoo", *args], cwd=cwd, check=True,
                   capture_output=True)


def _wait_port(port: int, proc: subprocess.Popen, what: str, seconds: float = 600) -> None:
    deadline = time.time() + seconds  # a hang guard, not a speed limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"{what} did not start (exit status {proc.poll()})")
            time.sleep(0.3)


def start_olah(tmp: Path, repos: dict[str, dict[str, bytes]]) -> tuple[str, subprocess.Popen]:
    """olah, offline, on 127.0.0.1, serving these model repos (each a git repo under mirrors/models/<org>/<name>)."""
    pytest.importorskip("olah")
    mirrors = tmp / "mirrors"
    for repo_id, files in repos.items():
        folder = mirrors / "models" / repo_id
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        _git(folder, "init", "-q", "-b", "main")
        _git(folder, "add", ".")
        _git(folder, "commit", "-q", "-m", "published")
    port = free_port()
    config = tmp / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{tmp / "olah-repos"}"\nmirrors-path = ["{mirrors}"]\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n")
    proc = subprocess.Popen([PY, "-m", "olah.server", "-c", str(config), "--log-path", str(tmp / "olah-logs")],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, proc, "olah")
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module")
def browser():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_screenshot", REPO / "scripts" / "make_screenshot.py")
    shots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shots)
    if not os.access(shots.CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {shots.CHROMIUM} (apt-get install chromium; ./dev.sh test does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shots.CHROMIUM, args=shots.LAUNCH_ARGS)
        yield browser, shots
        browser.close()


def real_photo() -> Path:
    """A real fundus photo that is not one of the page's examples (HRF, else IDRiD, else a shipped example)."""
    for pattern in ("hrf/images/*.jpg", "idrid-seg-dev/**/*.jpg"):
        found = sorted(DATA.glob(pattern))
        if found:
            return found[-1]
    return sorted((REPO / "assets" / "examples").glob("*.jpg"))[-1]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """Publish + deploy against the recording hub, then the Space's folder served as a Space serves it."""
    from huggingface_hub import constants

    from zoo.publish import publish, shipped_names
    from zoo.space import deploy

    tmp = tmp_path_factory.mktemp("space")
    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "HF_HUB_OFFLINE", False)  # the hub here is 127.0.0.1
    quiet = dict(report=lambda line: None)
    with HubServer() as hub:
        publish(ORG, token="test-token", endpoint=hub.url, **quiet)
        models = [f"{ORG}/{name}" for name in shipped_names()]
        dry = deploy(SPACE, "cpu-basic", models, dry_run=tmp / "dry-run", **quiet)
        deploy(SPACE, "cpu-basic", models, token="test-token", endpoint=hub.url, **quiet)
    mp.undo()
    folder = tmp / "space"  # the Space's repo as the hub holds it after the deploy
    for name, data in hub.files[SPACE].items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    assert sorted(hub.files[SPACE]) == dry["files"]
    assert not list(folder.rglob("*.safetensors")) and not (folder / "train").exists()

    mirror, olah = start_olah(tmp, {repo: hub.files[repo] for repo in models})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDUS_", "PYTHONPATH", "GRADIO_"))}
    env.update({"HF_ENDPOINT": mirror, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp / "hf-home"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False", "SPACE_ID": SPACE,
                "SPACE_HOST": "localhost", "PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
                **hub.variables[SPACE]})
    where = subprocess.run([PY, "-c", "import app, appcore, explain, fundus, zoo; print(zoo.__file__, "
                            "appcore.__file__, fundus.__file__, explain.__file__)"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(p).resolve().is_relative_to(folder.resolve()) for p in where.stdout.split()), where.stdout
    log = tmp / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([PY, "app.py"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    started = time.perf_counter()
    try:
        _wait_port(port, proc, "the Space's app")
        yield {"url": f"http://127.0.0.1:{port}", "log": log, "models": models, "hf_home": tmp / "hf-home",
               "env": env, "seconds": time.perf_counter() - started, "hub": hub}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        olah.terminate()
        olah.wait(timeout=10)


def test_the_space_serves_hub_models_and_analyses_a_real_photo(space, browser):
    browser_, shots = browser
    url, models = space["url"], space["models"]
    # Every model was downloaded from the mirror into HF_HOME at start, the log says so.
    text = space["log"].read_text()
    for number, repo in enumerate(models, 1):
        name = repo.split("/")[1]
        assert re.search(rf"hub model {number}/{len(models)}: {re.escape(name)} ready", text), text[-3000:]
        snapshot = list((space["hf_home"] / "hub" / f"models--{ORG}--{name}" / "snapshots").glob("*/model.safetensors"))
        assert len(snapshot) == 1
    # The page's model menu: the deploy's hub models, and nothing else (no shipped weights in the Space).
    config = json.loads(urllib.request.urlopen(f"{url}/config", timeout=60).read())
    menu = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model-menu")
    values = sorted(choice[1] for choice in menu["props"]["choices"])
    assert values == sorted(repo.split("/")[1] for repo in models)
    assert all("(hub)" in choice[0] for choice in menu["props"]["choices"])

    page = browser_.new_page(viewport={"width": 1280, "height": 1000})
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        shots.drive(page, url, timeout_s=300, theta_steps=0)  # the page opens on an analysed example
        before = page.locator("#main-result").inner_html()
        photo = real_photo()
        page.locator("#photo-upload button[aria-label=Clear]").click()  # the example is in the upload box
        page.wait_for_selector("#photo-upload input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#photo-upload input[type=file]", str(photo))
        page.wait_for_function(
            """([before, stem]) => {
                const main = document.querySelector('#main-result');
                const name = document.querySelector('#photo-upload .filename .stem');
                return main && main.innerHTML !== before && main.querySelector('.answer')
                    && name && name.textContent.trim() === stem;
            }""", arg=[before, photo.stem], timeout=300_000)
        shots._wait_for_analysis(page, 300_000)
        main = page.locator("#main-result").inner_text()
        assert "DR" in main or "grade" in main.lower(), main  # the default model, dr-grade-classifier, graded it
        status = page.locator("#status").inner_text()
        assert "❌" not in status, status
    finally:
        page.close()
    outside = [u for u in requested if not u.startswith((url, "data:", "blob:"))]
    assert requested and not outside, outside
    assert "Traceback" not in space["log"].read_text()
