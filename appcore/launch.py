"""Start the app as a user does and wait for it: a free port, ``python app.py``, the first HTTP 200.

One copy for the tests (tests/support.py), the benchmarks and scripts/make_screenshot.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> float:
    """Seconds until ``url`` answers HTTP 200.

    Raises:
        TimeoutError: no 200 within ``timeout_s``; RuntimeError: the server process exited.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer HTTP 200 within {timeout_s} s")


def start_app(port: int, models: list[str], log: str | Path | None = None) -> subprocess.Popen:
    """``python app.py`` on a port, as a user starts it; its output goes to ``log`` (default: discarded)."""
    env = {**os.environ, "PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(REPO / "app.py")] + (["--models", *models] if models else [])
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
