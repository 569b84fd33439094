"""What hub repos a visitor may make the server download (issue 18, defect 4): ``appcore.catalogue.HubPolicy`` —
a switch that turns typed hub ids off, an allow-list, and a size limit read from the hub's file list before any
download. Against a local hub on 127.0.0.1 (``tests/hub_server.py``), no network."""
from __future__ import annotations

import pytest

from hub_server import HubServer
from support import make_tiny_models

OFF = "This server does not load models from the hub"
NOT_ALLOWED = "is not one of the hub models this server may load"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    folder = make_tiny_models(tmp_path_factory.mktemp("models"))["grade"]
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md")}


@pytest.fixture
def hub(monkeypatch, tiny_files):
    """A local hub holding the tiny grader under several repo ids; huggingface_hub pointed at it."""
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # 127.0.0.1 only
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        for repo in ("fundus-org/tiny", "fundus-org/big", "elsewhere/tiny", "fundus-org/own", "fundus-org/later"):
            server.files[repo] = dict(tiny_files)
        yield server


def new_page(monkeypatch, **env):
    """A page built with these settings (read at start, as the server reads them)."""
    from appcore import Analyser
    from appcore.page import Page

    for name in ("FUNDUS_APP_HUB", "FUNDUS_APP_HUB_ALLOW", "FUNDUS_APP_HUB_MAX_MB", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Page(analyser=Analyser(fundus_check=False), examples=([], 0))


def typed(page, repo_id: str) -> dict:
    return page.load_hub_model(repo_id, None, [], None)


def downloaded(hub, repo_id: str) -> bool:
    return any("/resolve/" in path for _, path in hub.requested(repo_id))


def test_an_allowed_small_repo_is_downloaded_and_loaded(hub, monkeypatch):
    page = new_page(monkeypatch, FUNDUS_APP_HUB_ALLOW="fundus-org/*")
    out = typed(page, "fundus-org/tiny")
    assert out["status"] == "" and out["current"] == "fundus-org/tiny" and downloaded(hub, "fundus-org/tiny")
    # select_model with the same kind of text goes through the same checks.
    out = page.select_model("fundus-org/later", None, [], None)
    assert out["status"] == "" and out["current"] == "fundus-org/later"


def test_a_repo_off_the_allow_list_is_refused_before_any_request(hub, monkeypatch):
    page = new_page(monkeypatch, FUNDUS_APP_HUB_ALLOW="fundus-org/*, someone/exact")
    for event in (page.load_hub_model, page.select_model):
        out = event("elsewhere/tiny", "fundus-org/tiny", [], None)
        assert NOT_ALLOWED in out["status"] and out["status"].startswith("❌")
        assert out["current"] == "fundus-org/tiny" and out["model_menu"].value == "fundus-org/tiny"  # the last one
    assert hub.requested("elsewhere/tiny") == []
    assert "elsewhere/tiny" not in page.analyser.models


def test_a_repo_over_the_size_limit_is_refused_before_it_is_downloaded(hub, monkeypatch):
    page = new_page(monkeypatch, FUNDUS_APP_HUB_MAX_MB="1")
    size_mb = sum(len(data) for data in hub.files["fundus-org/big"].values()) / 1e6
    assert size_mb > 1
    out = typed(page, "fundus-org/big")
    assert out["status"] == (f"❌ Hub repo `fundus-org/big` holds {size_mb:.0f} MB of model files, over this server's "
                             "limit of 1 MB: nothing was downloaded. Pick a model from the menu.")
    assert hub.requested("fundus-org/big") and not downloaded(hub, "fundus-org/big")  # its file list only
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache("fundus-org/big", "model.safetensors") is None
    # Under the limit it loads.
    assert typed(new_page(monkeypatch, FUNDUS_APP_HUB_MAX_MB="100"), "fundus-org/big")["status"] == ""


def test_the_switch_turns_typed_hub_ids_off_but_not_the_apps_own(hub, monkeypatch):
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "own=fundus-org/own")  # the deploy's list
    page = new_page(monkeypatch, FUNDUS_APP_HUB="off")
    for event in (page.load_hub_model, page.select_model):
        out = event("fundus-org/tiny", None, [], None)
        assert out["status"].startswith(f"❌ {OFF}") and "pick a model from the menu" in out["status"]
    assert hub.requested("fundus-org/tiny") == []
    # The deploy's own hub repos are the menu's models: they load by name, and typed, too.
    assert page.select_model("own", None, [], None)["status"] == ""
    assert page.catalogue.resolve("fundus-org/own").id == "fundus-org/own"


def test_on_a_space_only_the_deploys_repos_load_unless_listed(hub, monkeypatch):
    monkeypatch.setenv("FUNDUS_ZOO_MODELS", "own=fundus-org/own")
    page = new_page(monkeypatch, SPACE_ID="someone/fundus-demo")
    assert NOT_ALLOWED in typed(page, "fundus-org/tiny")["status"] and hub.requested("fundus-org/tiny") == []
    assert typed(page, "fundus-org/own")["status"] == ""
    page = new_page(monkeypatch, SPACE_ID="someone/fundus-demo", FUNDUS_APP_HUB_ALLOW="fundus-org/tiny")
    assert typed(page, "fundus-org/tiny")["status"] == ""


def test_the_settings_are_read_once_and_checked():
    from appcore.catalogue import HubPolicy

    assert HubPolicy.from_environment({}) == HubPolicy(True, ("*",), 200.0)
    assert HubPolicy.from_environment({"SPACE_ID": "a/b"}).allow == ()
    policy = HubPolicy.from_environment({"FUNDUS_APP_HUB": "off", "FUNDUS_APP_HUB_ALLOW": "Org/*, a/b",
                                         "FUNDUS_APP_HUB_MAX_MB": "none"})
    assert policy == HubPolicy(False, ("Org/*", "a/b"), None)
    assert policy.allows("org/x") and policy.allows("A/B") and not policy.allows("a/bc")
    for bad in ("0", "-3", "lots"):
        with pytest.raises(ValueError, match="FUNDUS_APP_HUB_MAX_MB"):
            HubPolicy.from_environment({"FUNDUS_APP_HUB_MAX_MB": bad})
