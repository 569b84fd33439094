"""Soak test of the web app's memory: mixed use by a few simulated visitors for some minutes, the server's
resident memory (RSS) printed over time.

    python benchmarks/app_soak.py                      # 4 minutes, 3 visitors, the shipped models
    python benchmarks/app_soak.py --minutes 30 --json  # the issue's 30 minutes, one JSON object
    python benchmarks/app_soak.py --big                # plus a ResNet50 at 512 px (random weights) via --models

It starts ``python app.py`` as a user does (offline, its own Gradio temp folder) and drives it through
``gradio_client`` the way the page does: each visitor opens a new session every few actions (a new tab,
a reload, another person) and mixes uploads of new photos (synthetic fundus photos of 384–1536 px) and
examples, slider moves, model and target changes, downloads, rejected uploads and bogus model ids.
Goal (issue: 3.3–3.4 GB after 30 minutes before the fix): flat, under 2 GB. Progress goes to stderr.

Measured on 2 shared cores, 3 visitors, the five shipped models (RSS from 0.69 GB at start), with --probe:
15 minutes before the byte-bounded analysis cache and the one-pass limit: peak 2.22 GB, medians 1.74 GB (first
half) and 2.01 GB (second half), rising; 10 minutes: peak 2.17 GB, medians 1.71 → 1.86 GB. The probe showed what
held it: ~0.5 GB in use in glibc's heaps (12 analyses ~0.2 GB, 3 models ~0.06 GB, a pass in flight up to
0.5 GB), the rest free heap pages touched again between trims, and 0.44 GB of libraries. After (appcore.analysis.
server_analyser: analyses ≤ 160 MB, one network pass at a time; heaps trimmed every 5 s), 15 minutes, 2,138
actions, 180 sessions: peak 1.94 GB, medians 1.68 and 1.68 GB: flat, under 2 GB. Gradio's temp folder grows
~23 MB a minute on disk (pictures and uploads; deleted after an hour, app.py's delete_cache).

The machine may be shared: this measures memory, not speed; the actions per minute depend on the load.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOAL_MB = 2048.0
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "hot", "bone")
COMPARE = ("cam", "gradcam", "guided_gradcam", "gmsm")
# (action, weight): what a visitor does next.
ACTIONS = (("new_photo", 14), ("example", 8), ("slider", 46), ("model", 9), ("target", 8), ("downloads", 5),
           ("bad_upload", 4), ("bogus_model", 3), ("bogus_hub", 3))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def folder_mb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # deleted meanwhile
            total += path.stat().st_size if path.is_file() else 0
    return total / 2**20


def make_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """Synthetic fundus photos of varied sizes (JPEG, as cameras write them) and one rejected file."""
    from fundus import make_fundus
    from PIL import Image

    rng = random.Random(seed)
    paths = []
    for i in range(count):
        size = rng.choice((384, 512, 768, 1024, 1536))
        rgb, _ = make_fundus(size, seed=seed * 1000 + i, border=rng.choice(("black", "notched")),
                             lesions=rng.choice(((), ("MA",), ("MA", "EX"), ("HE", "EX", "SE"))))
        path = folder / f"photo-{i}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(path)
    return paths


def big_model(folder: Path) -> Path:
    """A ResNet50 at 512 px (random weights): the issue's "ResNet50-size" model, offered with --models."""
    import zoo

    out = folder / "resnet50-512"
    zoo.create_model("resnet50", paper="003", pretrained=False, input_size=512,
                     name="resnet50-512").save_pretrained(out)
    return out


class Visitor:
    """One simulated visitor: a gradio_client session, renewed every ``session_actions`` actions."""

    def __init__(self, url: str, menu: list[str], photos: list[Path], bad: Path, examples: list[Path],
                 session_actions: int, seed: int) -> None:
        self.url, self.menu, self.photos, self.bad, self.examples = url, menu, photos, bad, examples
        self.session_actions = session_actions
        self.rng = random.Random(seed)
        self.client = None
        self.done = 0
        self.sessions = 0
        self.errors: dict[str, int] = {}
        self.model = None
        self.targets: list[str] = ["predicted"]
        self.has_photo = False

    def controls(self) -> list:
        r = self.rng
        return [r.randint(0, 255), round(r.uniform(0.1, 0.95), 2), r.choice((0.0, 0.5, 1.0, 1.5, 2.0)),
                r.choice((0.3, 0.5, 0.7)), r.choice(COLORMAPS), r.random() < 0.7, r.choice(COMPARE)]

    def new_session(self) -> None:
        from gradio_client import Client

        self.client = Client(self.url, verbose=False, analytics_enabled=False, download_files=False)
        self.sessions += 1
        self.select(self.rng.choice(self.menu))
        self.has_photo = False

    def select(self, key: str) -> None:
        out = self.client.predict(key, api_name="/select_model")
        # The target menu's update (its position differs between app versions; a failure sends none).
        menus = [o for o in out if isinstance(o, dict) and o.get("choices")]
        targets = [m for m in menus if any(v in ("predicted", "all predicted") for _label, v in m["choices"])]
        if targets:
            self.model = key
            self.targets = [value for _label, value in targets[0]["choices"]]

    def step(self) -> None:
        from gradio_client import handle_file

        if self.client is None or self.done % self.session_actions == 0:
            self.new_session()
        names, weights = zip(*ACTIONS)
        action = self.rng.choices(names, weights)[0]
        if action in ("slider", "target", "downloads") and not self.has_photo:
            action = "new_photo"
        c = self.client
        target = self.rng.choice(self.targets)
        if action in ("new_photo", "example", "bad_upload"):
            path = {"new_photo": lambda: self.rng.choice(self.photos), "example": lambda: self.rng.choice(self.examples),
                    "bad_upload": lambda: self.bad}[action]()
            out = c.predict(handle_file(str(path)), self.model, target, *self.controls(), api_name="/analyse")
            self.has_photo = action != "bad_upload"
            if action == "bad_upload" and "❌" not in str(out[-1]):
                raise AssertionError(f"a rejected upload gave no status line: {out[-1]!r}")
        elif action == "slider":
            for _ in range(self.rng.randint(3, 12)):  # a drag: several values in a row
                c.predict(self.model, target, *self.controls(), api_name="/view")
        elif action == "model":
            self.select(self.rng.choice(self.menu))
        elif action == "target":
            c.predict(self.model, target, *self.controls(), api_name="/explain_target")
        elif action == "downloads":
            c.predict(self.model, target, *self.controls(), api_name="/downloads")
        elif action == "bogus_model":
            c.predict(self.rng.choice(("/etc", "../shared", "runs/x", "no such model")), api_name="/select_model")
        elif action == "bogus_hub":
            c.predict(f"nobody-{self.rng.randint(0, 10**6)}/model", api_name="/load_hub_model")
        self.done += 1

    def run(self, stop: threading.Event) -> None:
        failed_in_a_row = 0
        while not stop.is_set():
            try:
                self.step()
                failed_in_a_row = 0
            except Exception as exc:  # noqa: BLE001 - counted and reported (an error of the app); the soak goes on
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.done += 1
                self.client = None
                failed_in_a_row += 1
                if failed_in_a_row > 20:
                    raise


def soak(minutes: float, visitors: int, every: float, session_actions: int, big: bool, seed: int,
         timeout_s: float, app_py: Path = REPO / "app.py", probe: Path | None = None) -> dict:
    from appcore.catalogue import available_models
    from appcore.examples import ensure_examples
    from appcore.launch import wait_http_ok

    work = Path(tempfile.mkdtemp(prefix="fundus-soak-"))
    try:
        photos = make_photos(work, 24, seed)
        bad = work / "not-a-photo.jpg"
        bad.write_bytes(b"\xff\xd8 not really a jpeg")
        models = [str(big_model(work))] if big else []
        server, log, url = start_server(work, models, app_py, probe, every)
        try:
            wait_http_ok(url, timeout_s, server)
            examples = ensure_examples(work / "examples")
            menu = [choice.key for choice in available_models(models)]
            crowd = [Visitor(url, menu, photos, bad, examples, session_actions, seed + i) for i in range(visitors)]
            samples = sample_while_visited(server, crowd, minutes, every, work)
        finally:
            server.terminate()
            server.wait(30)
            log.close()
        return soak_summary(samples, crowd, minutes, visitors, big)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_server(work: Path, models: list[str], app_py: Path, probe: Path | None, every: float):
    """``python app.py`` on a free port as a visitor's server runs it (its temp, cache and log in ``work``); returns
    the process, its open log and its URL."""
    import subprocess

    from appcore.launch import free_port

    port = free_port()
    env = {**os.environ, "PORT": str(port), "GRADIO_TEMP_DIR": str(work / "gradio"),
           "FUNDUS_APP_CACHE": str(work / "cache")}
    log = open(work / "app.log", "wb")  # noqa: SIM115 - the server writes it until the end
    # --probe: the app runs under benchmarks/memory_probe.py, which logs what its memory holds.
    launcher = [str(REPO / "benchmarks" / "memory_probe.py"), str(probe), str(every)] if probe else []
    server = subprocess.Popen([sys.executable, *launcher, str(app_py), "--no-preload",
                               *(["--models", *models] if models else [])],
                              cwd=app_py.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    return server, log, f"http://127.0.0.1:{port}/"


def sample_while_visited(server, crowd: list[Visitor], minutes: float, every: float, work: Path) -> list[tuple]:
    """The visitors' threads for ``minutes``; every ``every`` seconds a sample (seconds, RSS MB, actions, sessions,
    Gradio temp MB), printed as it is taken.

    Raises:
        RuntimeError: the app exited.
    """
    samples = [(0.0, rss_mb(server.pid), 0, 0, 0.0)]
    stop = threading.Event()
    threads = [threading.Thread(target=v.run, args=(stop,), daemon=True) for v in crowd]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    while time.monotonic() - start < minutes * 60:
        time.sleep(min(every, max(0.1, minutes * 60 - (time.monotonic() - start))))
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}; see {work / 'app.log'}")
        samples.append((time.monotonic() - start, rss_mb(server.pid), sum(v.done for v in crowd),
                        sum(v.sessions for v in crowd), folder_mb(work / "gradio")))
        print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:7.0f} MB  actions {samples[-1][2]:5d}  "
              f"sessions {samples[-1][3]:4d}  gradio temp {samples[-1][4]:7.1f} MB", file=sys.stderr, flush=True)
    stop.set()
    for thread in threads:
        thread.join(120)
    return samples


def soak_summary(samples: list[tuple], crowd: list[Visitor], minutes: float, visitors: int, big: bool) -> dict:
    """The soak's JSON: actions, sessions, the visitors' errors, RSS (start, max, end, median of each half) and the
    samples."""
    errors: dict[str, int] = {}
    for v in crowd:
        for name, count in v.errors.items():
            errors[name] = errors.get(name, 0) + count
    # Flat means: the second half's typical RSS is not above the first half's (the warm-up sample excluded).
    loaded = samples[1:] or samples
    first = [s[1] for s in loaded if s[0] < samples[-1][0] / 2] or [loaded[0][1]]
    second = [s[1] for s in loaded if s[0] >= samples[-1][0] / 2]
    rss = [s[1] for s in samples]
    return {
        "minutes": minutes, "visitors": visitors, "big_model": big, "actions": samples[-1][2],
        "sessions": samples[-1][3], "client_errors": errors,
        "rss_start_mb": round(rss[0]), "rss_max_mb": round(max(rss)), "rss_end_mb": round(rss[-1]),
        "rss_median_first_half_mb": round(statistics.median(first)),
        "rss_median_second_half_mb": round(statistics.median(second)),
        "gradio_temp_end_mb": round(samples[-1][4], 1),
        "goal_mb": GOAL_MB, "meets_goal": max(rss) <= GOAL_MB,
        "samples": [{"s": round(t), "rss_mb": round(r), "actions": a, "sessions": n, "gradio_temp_mb": round(d, 1)}
                    for t, r, a, n, d in samples],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Soak the web app with mixed use; print its RSS over time.")
    parser.add_argument("--minutes", type=float, default=4.0, help="how long to soak (default 4)")
    parser.add_argument("--visitors", type=int, default=3, help="simulated visitors at once (default 3)")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between RSS samples (default 15)")
    parser.add_argument("--session-actions", type=int, default=12,
                        help="actions per session before a visitor opens a new one (default 12)")
    parser.add_argument("--big", action="store_true", help="also offer a ResNet50 at 512 px (random weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=180, help="start-up timeout in seconds")
    parser.add_argument("--app", type=Path, default=REPO / "app.py",
                        help="the app.py to soak (e.g. an older checkout's, to compare)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--probe", type=Path, metavar="JSONL",
                        help="log what the server's memory holds to this file every --every seconds "
                             "(benchmarks/memory_probe.py: caches, arrays, heaps, growing allocation sites)")
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.visitors, args.every, args.session_actions, args.big, args.seed, args.timeout,
                  args.app.resolve(), args.probe.resolve() if args.probe else None)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key != "samples":
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
