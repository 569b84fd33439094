"""The GPU path on a machine with CUDA (issue 18, part 3): every shipped model analyses real photos on the GPU through
the app's own pass (``appcore.gpu.network_pass``) and on the CPU; the maps and probabilities are compared.

    python scripts/gpu_check.py [--photos N] [--models NAME ...] [--out results.json]

For each model and photo: the largest difference of the probabilities, and per map (CAM, Grad-CAM, Guided Grad-CAM,
GMSM, LayerCAM at the model's default gate) the largest absolute difference and the correlation of the GPU's map with
the CPU's; the seconds per pass on each device; and whether any tensor of the GPU's analysis is still on the GPU
(none may be: it goes to Gradio). Exit status 1 when a check fails: a CUDA tensor left, a probability more than 1e-3
apart, a map correlation below 0.999 (TF32 and cuDNN's kernels differ from the CPU's by ~1e-4 relative; a map that
differs in shape is a bug), 0 otherwise, 2 without CUDA.
Photos: the shipped examples (assets/examples) and, where ../shared/data is there, HRF and IDRiD photos.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FUNDUS_DATA", ROOT.parent / "shared" / "data"))
PROB_TOL = 1e-3
MIN_CORRELATION = 0.999


def photos(limit: int) -> list[Path]:
    found = sorted((ROOT / "assets" / "examples").glob("*.jpg"))
    for folder in ("hrf", "idrid-seg-dev", "aptos2019"):
        found += sorted(p for p in (DATA / folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))[:4]
    return found[:limit]


def cuda_tensors(value, seen=None) -> int:
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return int(value.device.type != "cpu")
    if isinstance(value, dict):
        return sum(cuda_tensors(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(cuda_tensors(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(cuda_tensors(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    return 0


def compare(cpu_maps: dict, gpu_maps: dict) -> dict:
    out = {}
    for method, a in cpu_maps.items():
        b = gpu_maps[method]
        if a.shape != b.shape:
            out[method] = {"shape": [list(a.shape), list(b.shape)], "correlation": -1.0, "max_abs": float("inf")}
            continue
        x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
        flat = x.std() < 1e-9 or y.std() < 1e-9
        corr = 1.0 if flat and np.allclose(x, y, atol=1e-4) else float(np.corrcoef(x, y)[0, 1]) if not flat else 0.0
        out[method] = {"max_abs": float(np.abs(x - y).max()), "correlation": corr}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--models", nargs="*", help="shipped names (default: all)")
    parser.add_argument("--out", help="write the results as JSON here (default: $OUT/gpu_check.json when $OUT is set)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    import zoo
    from appcore.gpu import network_pass
    from explain.pipeline import analyse
    from explain.targets import Predicted
    from fundus import load_image
    from zoo import model_names

    names = args.models or sorted(model_names.shipped())
    chosen = photos(args.photos)
    results, failures = [], []
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; {len(names)} models × {len(chosen)} photos")
    for name in names:
        on_cpu = zoo.load(name, device="cpu")
        on_gpu = zoo.load(name, device="cuda")
        for photo in chosen:
            rgb = load_image(photo)
            start = time.perf_counter()
            a = analyse(rgb, on_cpu, Predicted())
            cpu_maps = a.maps(on_cpu.config.t)
            cpu_s = time.perf_counter() - start
            network_pass(rgb, on_gpu, Predicted())  # warm-up (cuDNN autotuning, first allocations)
            torch.cuda.synchronize()
            start = time.perf_counter()
            b = network_pass(rgb, on_gpu, Predicted())
            gpu_maps = b.maps(on_gpu.config.t)
            gpu_s = time.perf_counter() - start
            left = cuda_tensors(b)
            p_cpu = a.explanation.probabilities.double().numpy()
            p_gpu = b.explanation.probabilities.double().numpy()
            row = {"model": name, "photo": photo.name, "cpu_s": round(cpu_s, 3), "gpu_s": round(gpu_s, 3),
                   "cuda_tensors_left": left, "prob_max_abs": float(np.abs(p_cpu - p_gpu).max()),
                   "same_decision": a.prediction.get("predicted") == b.prediction.get("predicted"),
                   "maps": compare(cpu_maps, gpu_maps)}
            results.append(row)
            worst = min((m["correlation"] for m in row["maps"].values()), default=1.0)
            bad = left or row["prob_max_abs"] > PROB_TOL or worst < MIN_CORRELATION
            if bad:
                failures.append(f"{name} / {photo.name}")
            print(f"{'FAIL' if bad else 'ok  '} {name:<22} {photo.name:<36} prob Δ {row['prob_max_abs']:.2e}  "
                  f"min map r {worst:.5f}  max map Δ {max((m['max_abs'] for m in row['maps'].values()), default=0):.2e}"
                  f"  cpu {cpu_s:.2f}s gpu {gpu_s:.3f}s  cuda tensors left {left}")
    out = args.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps({"device": torch.cuda.get_device_name(0), "results": results,
                                         "failures": failures}, indent=1))
    print(f"{len(results) - len(failures)}/{len(results)} passed" + (f"; failed: {', '.join(failures)}" if failures
                                                                        else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
