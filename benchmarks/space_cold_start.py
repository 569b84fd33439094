"""The Space's cold start on this machine (issue 18, part 5): process start → the first analysed example.

    python benchmarks/space_cold_start.py [--runs 3] [--root CHECKOUT]

Builds the Space's folder as ``python -m zoo space deploy --dry-run`` does (cpu-basic), puts the shipped models in an
offline olah mirror on 127.0.0.1 (the repos ``python -m zoo publish`` makes: the same three files each), and starts
``python app.py`` in that folder as a Space starts it (its ``FUNDUS_ZOO_MODELS`` variable, ``HF_ENDPOINT`` at the
mirror, ``SPACE_ID`` set). Measured from the process's start, by the app's own log:

- ``port``: the server answers;
- ``analysed``: the default model is loaded and the example the page opens on is analysed (``warm-up: … analysed``),
  so the first visitor's page opens analysed without waiting.

First with an empty ``HF_HOME`` (every model downloaded from the mirror: what a first start adds), then ``--runs``
times with the models cached in ``HF_HOME`` (a restart; goal ≤ 20 s on 2 CPU cores, the CPU basic hardware).
On the hub the download is bounded by the network instead of a local mirror (44 MB of weights).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ORG = "fundus-org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=b", *args], cwd=cwd, check=True,
                   capture_output=True)


def start_mirror(tmp: Path, root: Path) -> tuple[str, subprocess.Popen, list[str]]:
    mirrors = tmp / "mirrors"
    names = sorted(d.name for d in (root / "assets").iterdir() if (d / "config.json").is_file())
    for name in names:
        folder = mirrors / "models" / ORG / name
        folder.mkdir(parents=True)
        for file in ("config.json", "model.safetensors", "README.md"):
            shutil.copy2(root / "assets" / name / file, folder / file)
        git(folder, "init", "-q", "-b", "main")
        git(folder, "add", ".")
        git(folder, "commit", "-q", "-m", "published")
    port = free_port()
    (tmp / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{tmp / "olah-repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\nmirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "[accessibility]\noffline = true\n")
    proc = subprocess.Popen([PY, "-m", "olah.server", "-c", str(tmp / "olah.toml"), "--log-path", str(tmp / "olah")],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, 120)
    return f"http://127.0.0.1:{port}", proc, [f"{ORG}/{name}" for name in names]


def wait_port(port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nothing answered on port {port}") from None
            time.sleep(0.05)


def one_start(folder: Path, env: dict, log: Path, timeout: float = 600) -> dict:
    port = free_port()
    env = {**env, "PORT": str(port)}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([PY, "app.py"], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout)
        port_s = time.perf_counter() - start
        deadline = time.time() + timeout
        while True:
            text = log.read_text()
            found = re.search(r"warm-up: \S+ loaded and the start example analysed in ([\d.]+) s", text)
            if found:
                analysed_s = time.perf_counter() - start
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"no warm-up line in the log:\n{text[-3000:]}")
            time.sleep(0.05)
        fetched = [float(s) for s in re.findall(r"hub model \d+/\d+: \S+ ready \([\d.]+ MB, ([\d.]+) s\)", text)]
        return {"port_s": round(port_s, 2), "analysed_s": round(analysed_s, 2), "warm_up_s": float(found[1]),
                "fetch_s": round(sum(fetched), 2), "models_fetched": len(fetched)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="starts with the models cached (default 3)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app is measured")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.root))
    from zoo.space import build_folder, models_variable

    with tempfile.TemporaryDirectory(prefix="fcz_cold_") as tmp_name:
        tmp = Path(tmp_name)
        mirror, olah, models = start_mirror(tmp, args.root)
        try:
            folder = build_folder(tmp / "space", "cpu-basic", models, root=args.root)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDUS_", "PYTHONPATH", "GRADIO_"))}
            env.update({"HF_ENDPOINT": mirror, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp / "hf-home"),
                        "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False", "SPACE_ID": "b/space",
                        "GRADIO_SERVER_NAME": "127.0.0.1", "FUNDUS_ZOO_MODELS": models_variable(models)})
            first = one_start(folder, env, tmp / "first.log")
            cached = [one_start(folder, env, tmp / f"cached-{i}.log") for i in range(args.runs)]
        finally:
            olah.terminate()
            olah.wait(timeout=10)
    median = {key: round(statistics.median(run[key] for run in cached), 2)
              for key in ("port_s", "analysed_s", "warm_up_s", "fetch_s")}
    result = {"cpu_cores": os.cpu_count(), "models": len(models), "first_start_empty_cache": first,
              "cached_runs": cached, "cached_median": median,
              "download_adds_s": round(first["analysed_s"] - median["analysed_s"], 2)}
    print(json.dumps(result, indent=1))
    print(f"\nprocess start → first analysed example: {median['analysed_s']} s with the models cached (median of "
          f"{len(cached)}; server answering at {median['port_s']} s); first start with an empty cache "
          f"{first['analysed_s']} s (downloading {len(models)} models from the local mirror: {first['fetch_s']} s)")
    return 0 if median["analysed_s"] <= 20 else 1


if __name__ == "__main__":
    sys.exit(main())
