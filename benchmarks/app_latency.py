"""App latency and memory: cold start, explaining a new photo, a slider move, resident memory.

    python benchmarks/app_latency.py            # a table
    python benchmarks/app_latency.py --json     # one JSON object (CI, reports)

Measures, against the issue's goals:
- cold start of ``python app.py`` to the first HTTP 200 (goal ≤ 15 s);
- resident memory of that server after every default model explained one photo (goal ≤ 2 GB);
- explaining a new 512 px photo with a ResNet50-size model, all four panels drawn (goal ≤ 2 s);
- server-side handling of a slider move at 512 px: the redraw from cached maps (goal ≤ 50 ms), and the
  same move through Gradio: as the API client (gradio_client) makes it, and as a browser does (a slider's own event,
  then the pictures it has not fetched before).
Memory over time under mixed use (the RSS curve, sessions, temp files): ``benchmarks/app_soak.py``.
Ratios are measured side by side (interleaved runs): a slider move vs re-running the network, the
explanation pass vs one plain forward pass. The machine is shared: compare ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/app_latency.py` puts benchmarks/ on the path, not the checkout, whose app.py it imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it

GOALS = {"cold_start_s": 15.0, "rss_mb": 2048.0, "explain_new_photo_s": 2.0, "slider_move_ms": 50.0}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, amount, _unit = line.split()
            values[key] = int(amount) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def measure_server(timeout_s: float) -> dict:
    """Cold start of `python app.py` to HTTP 200, then resident memory after each default model ran once."""
    from appcore.launch import free_port, start_app, wait_http_ok
    from gradio_client import Client, handle_file

    port = free_port()
    started = time.perf_counter()
    process = start_app(port, [])
    url = f"http://127.0.0.1:{port}/"
    try:
        cold = wait_http_ok(url, timeout_s, process)
        rss_start, _ = rss_mb(process.pid)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=tempfile.mkdtemp())
        from appcore.catalogue import available_models
        from appcore.examples import ensure_examples

        models = [choice.key for choice in available_models()]
        example = ensure_examples()[0]
        per_model = {}
        for key in models:
            start = time.perf_counter()
            client.predict(handle_file(str(example)), key, "predicted", 128, 0.6, 1.0, 0.5, "jet", True,
                           "guided_gradcam", api_name="/analyse")
            per_model[key] = round(time.perf_counter() - start, 3)
        rss, peak = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(10)
    return {"cold_start_s": round(cold, 2), "rss_after_start_mb": round(rss_start), "rss_mb": round(rss),
            "rss_peak_mb": round(peak), "default_models": models, "first_photo_per_model_s": per_model,
            "server_total_s": round(time.perf_counter() - started, 1)}


def measure_core(size: int, repeats: int, arch: str) -> dict:
    """A new photo end to end (preprocess, one explanation pass, four panels) and slider moves, in-process."""
    import numpy as np
    import torch
    import zoo
    from fundus import make_fundus

    from appcore.analysis import Analyser
    from appcore.catalogue import Catalogue, ModelCache
    from appcore.views import ViewParams, render_view

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder = Path(tempfile.mkdtemp()) / arch
    zoo.create_model(arch, paper="003", pretrained=False, input_size=size).save_pretrained(folder)
    analyser = Analyser(ModelCache(catalogue=Catalogue([folder])), capacity=4)  # the folder, as --models offers it
    key = folder.name
    model, _ = analyser.models.get(key)
    photos = [make_fundus(size, seed=1000 + i)[0] for i in range(repeats + 1)]
    analyser.analyse(photos[-1], key)  # warm-up: first-call allocations, thread pools
    new_photo, forward, redraw, preprocess, explain_pass, first_view = [], [], [], [], [], []
    params = [ViewParams(theta=40 + 20 * i % 200, tau=0.5 + 0.03 * i, t=1.0) for i in range(10)]
    for i in range(repeats):  # interleaved: a new photo, a plain forward, slider moves
        start = time.perf_counter()
        analysis = analyser.analyse(photos[i], key)
        drawn = time.perf_counter()
        render_view(analysis, ViewParams())
        new_photo.append(time.perf_counter() - start)
        first_view.append(time.perf_counter() - drawn)
        preprocess.append(analysis.timings["preprocess"])
        explain_pass.append(analysis.timings["explain"])
        x = analysis.pre.tensor
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        forward.append(time.perf_counter() - start)
        for p in params:
            start = time.perf_counter()
            render_view(analysis, p)
            redraw.append(time.perf_counter() - start)
    explain_s = statistics.median(new_photo)
    slider_ms = statistics.median(redraw) * 1000
    return {
        "arch": arch, "input_px": size, "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "explain_new_photo_s": round(explain_s, 3),
        "of_which_preprocess_s": round(statistics.median(preprocess), 3),
        "of_which_explain_pass_s": round(statistics.median(explain_pass), 3),
        "of_which_first_view_s": round(statistics.median(first_view), 3),
        "forward_s": round(statistics.median(forward), 3),
        "explain_over_forward": round(explain_s / statistics.median(forward), 2),
        "slider_move_ms": round(slider_ms, 1),
        "slider_move_p90_ms": round(float(np.percentile(redraw, 90)) * 1000, 1),
        "new_photo_over_slider_move": round(explain_s * 1000 / slider_ms, 1),
        "runs": repeats, "slider_moves": len(redraw),
    }


def measure_gradio_roundtrip(size: int, repeats: int) -> dict:
    """A slider move through Gradio (in-process server), two ways:

    - the API client: gradio_client's full redraw (/view, every picture); its time includes the client's own
      overheads (it polls for the result every 50 ms and opens a new connection per file it downloads);
    - a browser: the θ and τ sliders' own events as the page sends them (``BrowserSession``), the result and then
      the pictures whose addresses it has not fetched yet.
    """
    import zoo
    from fundus import make_fundus
    from gradio_client import Client, handle_file
    from PIL import Image

    import app

    folder = Path(tempfile.mkdtemp())
    zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=size,
                     name="bench").save_pretrained(folder / "m")
    demo = app.build_demo(models=[str(folder / "m")])
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        key = demo.fundus_app.menu()[0][1]
        photo = folder / "photo.png"
        Image.fromarray(make_fundus(size, seed=7)[0]).save(photo)
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(folder / "dl"))
        client.predict(handle_file(str(photo)), key, "predicted", 128, 0.6, 1.0, 0.5, "jet", True, "guided_gradcam",
                       api_name="/analyse")
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            client.predict(key, "predicted", 30 + 20 * i % 220, 0.6, 1.0, 0.5, "jet", True, "guided_gradcam",
                           api_name="/view")
            times.append(time.perf_counter() - start)
        browser = BrowserSession(url, client.session_hash)  # the session that holds the analysed photo
        moves = {name: browser_moves(demo, browser, name, key, repeats) for name in ("theta", "tau")}
    finally:
        demo.close()
    return {"gradio_slider_roundtrip_ms": round(statistics.median(times) * 1000, 1), "roundtrips": repeats,
            "browser_slider_move": moves}


def browser_moves(demo, browser: "BrowserSession", control: str, key: str, repeats: int) -> dict:
    """Medians of ``repeats`` moves of one slider, each to a value not shown before, through its own event."""
    from explain.controls import BY_NAME, CONTROLS

    element = BY_NAME[control].elem_id
    event = next(index for index, fn in demo.fns.items() for block, trigger in fn.targets
                 if trigger == "input" and getattr(demo.blocks.get(block), "elem_id", None) == element)
    values = {c.name: c.default for c in CONTROLS}
    result, done, pictures, kib = [], [], [], []
    for i in range(repeats):
        values[control] = 40 + 9 * i if control == "theta" else round(0.3 + 0.04 * i, 2)
        start = time.perf_counter()
        answered, fetched, size = browser.event(event, [None, key, "predicted", *values.values()])
        result.append(answered - start)
        done.append(time.perf_counter() - start)
        pictures.append(fetched)
        kib.append(size / 1024)
    return {"result_ms": round(statistics.median(result) * 1000, 1),
            "with_new_pictures_ms": round(statistics.median(done) * 1000, 1),
            "pictures_fetched": statistics.median(pictures), "kib_fetched": round(statistics.median(kib), 1)}


class BrowserSession:
    """What a browser does for a page event: join the queue, read the session's event stream to the result, then
    fetch each picture the result names whose address it has not fetched before (its image cache), over one
    kept-alive connection (a browser fetches them in parallel: this is an upper bound)."""

    def __init__(self, url: str, session_hash: str) -> None:
        import httpx

        self.api, self.session = url.rstrip("/") + "/gradio_api", session_hash
        self.http = httpx.Client(timeout=60)
        self.fetched: set[str] = set()

    def event(self, fn_index: int, data: list) -> tuple[float, int, int]:
        """(time.perf_counter() at the result, pictures fetched, bytes fetched)."""
        body = {"data": data, "fn_index": fn_index, "trigger_id": None, "session_hash": self.session,
                "event_data": None}
        event_id = self.http.post(self.api + "/queue/join", json=body).raise_for_status().json()["event_id"]
        message: dict = {}
        with self.http.stream("GET", self.api + "/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    break
        answered = time.perf_counter()
        if not message.get("success"):
            raise RuntimeError(f"the event failed: {message}")
        new = [u for u in dict.fromkeys(_file_urls(message["output"]["data"])) if u not in self.fetched]
        size = sum(len(self.http.get(u).raise_for_status().content) for u in new)
        self.fetched.update(new)
        return answered, len(new), size


def _file_urls(value) -> list[str]:
    """The addresses of the files in an event's output (Gradio's FileData, in lists, tuples and updates)."""
    if isinstance(value, dict):
        if value.get("meta", {}).get("_type") == "gradio.FileData" and value.get("url"):
            return [value["url"]]
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in _file_urls(v)]
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="App latency and memory against the issue's goals.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--size", type=int, default=512, help="photo / input size in px (default 512)")
    parser.add_argument("--arch", default="resnet50", help="architecture of the ResNet50-size model (default resnet50)")
    parser.add_argument("--repeats", type=int, default=5, help="new photos explained (each followed by 10 slider moves)")
    parser.add_argument("--moves", type=int, default=8, help="slider moves through Gradio, each way (default 8)")
    parser.add_argument("--skip-server", action="store_true", help="skip the cold start / memory measurement")
    parser.add_argument("--timeout", type=float, default=120, help="cold-start timeout in seconds")
    args = parser.parse_args(argv)
    result = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    if not args.skip_server:
        result.update(measure_server(args.timeout))
    result.update(measure_core(args.size, args.repeats, args.arch))
    result.update(measure_gradio_roundtrip(args.size, args.moves))
    result["goals"] = GOALS
    result["meets"] = {k: result[k] <= v for k, v in GOALS.items() if k in result}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
