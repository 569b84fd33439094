"""The web server's process: its environment, bounded heaps, where it listens, its command line, and the start-up
work done after the server is up. Imports nothing heavy, so that ``prepare_process`` runs before the imports that
allocate (gradio, huggingface_hub, torch)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
import time
from pathlib import Path

_LIBC = None  # glibc, where the heaps could be bounded
log = logging.getLogger(__name__)


def prepare_process() -> None:
    """Before gradio / huggingface_hub are imported: offline by default (no analytics, no telemetry), idle OpenMP
    threads sleep (a server shares its CPU: spinning ones slow 2-thread torch ops down 10×), bounded heaps."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bound_heaps()  # before the threads and the imports that allocate


def bound_heaps(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Make glibc give freed photos, maps and tensors back to the system (False where it is not glibc).

    By default glibc gives threads heaps of their own (up to 8 per core) and, each time a large buffer is
    freed, raises the size from which buffers are mapped separately, so later large buffers stay in those
    heaps after they are freed: the server's memory grew with every photo (3.3 GB after 30 minutes).
    ``FUNDUS_APP_MALLOC=default`` keeps glibc's defaults (to compare).
    """
    global _LIBC
    if os.environ.get("FUNDUS_APP_MALLOC") == "default":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(-8, arenas) and libc.mallopt(-3, mmap_threshold):  # M_ARENA_MAX, M_MMAP_THRESHOLD
            _LIBC = libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        pass
    return _LIBC is not None


def trim_heaps_every(seconds: float = 5.0) -> bool:
    """A daemon thread that hands the heaps' free pages back to the system every ``seconds`` (``malloc_trim``):
    what requests freed (decoded photos, gradients, encoded pictures) otherwise stays resident, ~0.4 GB."""
    if _LIBC is None:
        return False

    def trim() -> None:
        while True:
            time.sleep(seconds)
            _LIBC.malloc_trim(0)

    threading.Thread(target=trim, name="heap-trim", daemon=True).start()
    return True


def process_seconds() -> float:
    """Seconds since this process started (from /proc; 0.0 where that cannot be read)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def server_address() -> tuple[str, int]:
    """(host, port): 0.0.0.0 on a Space (``SPACE_ID`` set), else 127.0.0.1; ``PORT`` / ``GRADIO_SERVER_PORT`` or
    7860."""
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    return host, port


def argument_parser() -> argparse.ArgumentParser:
    """``python app.py``'s options."""
    host, port = server_address()
    parser = argparse.ArgumentParser(description="Fundus CAM Zoo web app (research tool, not for clinical use).")
    parser.add_argument("--host", default=host,
                        help=f"interface to bind (default {host}; 0.0.0.0 when SPACE_ID is set)")
    parser.add_argument("--port", type=int, default=port,
                        help=f"port (default {port}: $PORT, $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--models", nargs="*", default=[], metavar="ID",
                        help="model folders or hub repo ids (org/name[@revision]) offered before the shipped ones; "
                             "the only folders the app will ever load (named hub ids: FUNDUS_ZOO_MODELS)")
    parser.add_argument("--no-preload", action="store_true",
                        help="do not load the default model and analyse the start example in the background "
                             "after start-up")
    return parser


def fetch_hub_models(environ=None) -> dict[str, float]:
    """Download the named hub models (``FUNDUS_ZOO_MODELS``: on a Space, the deploy's list) before the page is
    built, or find them in the hub cache (``HF_HOME``): the menu then knows every model's task, and no visitor waits
    for a download. Each model's progress goes to the log (huggingface_hub's progress bars on stderr, one line per
    model here); one that cannot be fetched is logged and left for the page to report. ``FUNDUS_APP_PREFETCH=off``
    skips it (the models then download when first picked).

    Returns:
        ``{name: seconds}`` for each model fetched or found.
    """
    environ = os.environ if environ is None else environ
    if environ.get("FUNDUS_APP_PREFETCH", "on").strip().lower() in ("0", "off", "false", "no"):
        return {}
    from zoo import hub, model_names

    entries = [entry for entry in model_names.known().values() if entry.source == "hub"]
    fetched = {}
    for number, entry in enumerate(entries, 1):
        where = entry.location + (f"@{entry.revision}" if entry.revision else "")
        log.info("hub model %d/%d: %s from %s …", number, len(entries), entry.name, where)
        start = time.perf_counter()
        try:
            folder = hub.resolve(entry.name)
        except Exception as exc:  # noqa: BLE001 - the page reports it when the model is picked
            log.warning("hub model %s (%s) could not be fetched: %s: %s", entry.name, where, type(exc).__name__, exc)
            continue
        fetched[entry.name] = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
        log.info("hub model %d/%d: %s ready (%.1f MB, %.1f s)", number, len(entries), entry.name, size,
                 fetched[entry.name])
    return fetched


def warm_up_later(page, delay: float = 1.0, hub_fetched: bool = False) -> None:
    """Load the default model and analyse the start example once the server is up, so that the first visitor's
    page opens without waiting for either (a hub default only once ``fetch_hub_models`` has fetched it; errors are
    left for the page)."""
    if page.default is None or (page.default.kind == "hub" and not hub_fetched):
        return

    def preload() -> None:
        time.sleep(delay)
        start = time.perf_counter()
        # Any failure is left for the page: it reports load errors when the model is used.
        with contextlib.suppress(Exception):
            page.warm_up()
            log.info("warm-up: %s loaded and the start example analysed in %.1f s (%.1f s after the process "
                     "started)", page.default.key, time.perf_counter() - start, process_seconds())

    threading.Thread(target=preload, daemon=True).start()


def serve(build_demo, argv: list[str] | None = None, **launch_options) -> None:
    """``python app.py``: read the command line, fetch the named hub models (``fetch_hub_models``), build the app
    on its ``--models`` (a bad entry: a usage error that names it), warm the default model up in the background,
    trim the heaps, and serve until stopped.

    Args:
        build_demo: ``models -> app`` with ``fundus_app`` (the ``Page``) and ``launch(server_name, server_port, …)``.
        launch_options: passed to ``launch``.
    """
    parser = argument_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fetched = fetch_hub_models()
    try:
        demo = build_demo(models=args.models)
    except ValueError as exc:  # a bad --models entry: the operator's console may name it
        parser.error(str(exc))
    if not args.no_preload:
        page = demo.fundus_app
        warm_up_later(page, hub_fetched=page.default is not None and page.default.key in fetched)
    trim_heaps_every(float(os.environ.get("FUNDUS_APP_TRIM_SECONDS", 5)))
    demo.launch(server_name=args.host, server_port=args.port, **launch_options)
