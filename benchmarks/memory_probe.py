"""Run the web app with a thread that says what its memory holds (for ``app_soak.py --probe``).

    python benchmarks/memory_probe.py OUT.jsonl SECONDS app.py [app arguments…]

Every SECONDS one JSON line goes to OUT.jsonl: the RSS; glibc's heap statistics (``mallinfo2``: bytes in use,
free inside the heaps, mapped separately); what the app's caches hold (analyses and their bytes, loaded models
and their parameter bytes, Gradio's stored sessions); the bytes of all live torch tensors and numpy arrays that
Python objects reach. It reads the app's objects through the garbage collector so that the app itself carries no probe.
"""
from __future__ import annotations

import ctypes
import gc
import json
import runpy
import sys
import threading
import time
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_mb() -> dict[str, float]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mb = 1 / 2**20
    return {"heap_in_use_mb": round(info.uordblks * mb, 1), "heap_free_mb": round(info.fordblks * mb, 1),
            "mapped_mb": round(info.hblkhd * mb, 1)}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _resident_mb() -> dict[str, float]:
    """Resident memory by kind of mapping (/proc/self/smaps): glibc's main heap, other anonymous memory (the
    second arena's heaps, Python's object arenas, large mapped buffers), and files (libraries)."""
    kinds = {"main_heap_rss_mb": 0, "anon_rss_mb": 0, "file_rss_mb": 0}
    kind = "anon_rss_mb"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
            kind = "main_heap_rss_mb" if name == "[heap]" else "file_rss_mb" if name.startswith("/") else "anon_rss_mb"
        elif fields and fields[0] == "Rss:":
            kinds[kind] += int(fields[1])
    return {k: round(v / 1024, 1) for k, v in kinds.items()}


def _array_bytes() -> dict[str, float]:
    """Bytes of the distinct storages of live torch tensors and of numpy arrays that own their data."""
    import numpy as np
    import torch

    storages: dict[int, int] = {}
    numpy_bytes = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            try:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):
                continue
        elif isinstance(obj, np.ndarray) and obj.base is None:
            numpy_bytes += obj.nbytes
    return {"torch_mb": round(sum(storages.values()) / 2**20, 1), "numpy_mb": round(numpy_bytes / 2**20, 1)}


def _app_caches() -> dict[str, float]:
    from appcore.analysis import AnalysisCache
    from appcore.catalogue import ModelCache

    found: dict[str, float] = {}
    for obj in gc.get_objects():
        if isinstance(obj, AnalysisCache):
            found["analyses"] = found.get("analyses", 0) + len(obj)
            found["analyses_mb"] = round(found.get("analyses_mb", 0) + obj.nbytes() / 2**20, 1)
        elif isinstance(obj, ModelCache):
            models = [model for model, _lock in list(obj._models.values())]
            found["models"] = found.get("models", 0) + len(models)
            found["model_params_mb"] = round(found.get("model_params_mb", 0) + sum(
                p.numel() * p.element_size() for m in models for p in m.parameters()) / 2**20, 1)
        elif type(obj).__name__ == "StateHolder" and hasattr(obj, "session_data"):
            found["gradio_sessions"] = max(found.get("gradio_sessions", 0), len(obj.session_data))
    return found


def probe(out: Path, seconds: float) -> None:
    with out.open("a") as log:
        start = time.monotonic()
        while True:
            time.sleep(seconds)
            line = {"s": round(time.monotonic() - start), "rss_mb": _rss_mb(), **_heap_mb(), **_resident_mb()}
            try:
                line.update(_app_caches())
                line.update(_array_bytes())
            except Exception as exc:  # noqa: BLE001 - the probe must not take the app down
                line["probe_error"] = repr(exc)
            log.write(json.dumps(line) + "\n")
            log.flush()


def main() -> None:
    out, seconds, app = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    threading.Thread(target=probe, args=(out, seconds), name="memory-probe", daemon=True).start()
    sys.argv = [app, *sys.argv[4:]]
    runpy.run_path(app, run_name="__main__")


if __name__ == "__main__":
    main()
