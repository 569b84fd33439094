"""`python app.py` as a user starts it: PORT honoured, bound to 127.0.0.1 only, HTTP 200, --help, --models."""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from support import free_port, make_tiny_models, start_app_process, wait_http_ok


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # 0A = LISTEN
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@pytest.mark.slow
def test_python_app_py_serves_on_port_bound_to_localhost(tmp_path):
    make_tiny_models(tmp_path / "assets")
    port = free_port()
    env_backup = dict(os.environ)
    os.environ.update(FUNDUS_ZOO_ASSETS=str(tmp_path / "assets"), FUNDUS_APP_CACHE=str(tmp_path / "cache"))
    os.environ.pop("SPACE_ID", None)
    try:
        process = start_app_process(port, [], tmp_path / "app.log")
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/", 120, process)
        assert listening_addresses(port) == {"127.0.0.1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
            config = response.read().decode()
        assert "tiny-lesions" in config and "not for clinical use" in config
        assert "Examples with known diagnoses" in config  # the shipped example photos
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.slow  # over ~1 s (a child process, real photos or ROAD): out of the quick loop
def test_help_describes_the_options(capsys):
    import app

    with pytest.raises(SystemExit) as exited:
        app.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--port", "--host", "--models", "--no-preload", "not for clinical use"):
        assert option in text


def test_models_must_be_folders_or_hub_ids(tmp_path, capsys, monkeypatch):
    import app

    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp_path / "cache"))
    for bad in (str(tmp_path / "no-such-folder"), str(tmp_path)):  # missing; a folder without config.json
        with pytest.raises(SystemExit) as exited:
            app.main(["--models", bad, "--no-preload"])
        assert exited.value.code == 2 and "--models" in capsys.readouterr().err


def test_the_server_bounds_its_heaps_on_glibc():
    import platform

    import app

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    # Importing the app set two heaps and a fixed mmap threshold (mallopt accepted both): see appcore.server.
    assert app.server._LIBC is not None and app.server.bound_heaps() is True
