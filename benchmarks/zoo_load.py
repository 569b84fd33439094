"""zoo.load speed: building on the meta device vs a plain build whose random init the weights replace.

    python benchmarks/zoo_load.py               # a table
    python benchmarks/zoo_load.py --json        # one JSON object
    python benchmarks/zoo_load.py --arch resnet50_fcn --repeats 7

For each architecture a saved model (fp16, as shipped) is loaded alternately by ``zoo.load`` and by
the eager path (build with random init, then ``load_state_dict``), so both see the same machine
load; medians and their ratio are printed. The machine is shared: compare ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_ARCHS = ["efficientnet_lite0", "resnet50_fcn", "inception_v3", "vgg16"]
PAPER = {"efficientnet_lite0": "003", "resnet50_fcn": "001", "inception_v3": "002", "vgg16": "000",
         "resnet50": "003", "inception_resnet_v2": "003", "dr_detection_net": "004", "simple_cnn": "002",
         "vgg13_bn": "002", "vgg19": "000", "fusion_ensemble": "000"}


def eager_load(folder: Path):
    """The straightforward path: build (random init), then copy the weights in."""
    from safetensors.torch import load_file

    from zoo.factory import build_model
    from zoo.hub import WEIGHTS_NAME, load_config

    model, _, _ = build_model(load_config(folder), pretrained=False)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def measure(arch: str, repeats: int) -> dict:
    import torch

    import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model(arch, paper=PAPER.get(arch, ""), pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save_pretrained(Path(tmp) / arch, dtype=torch.float16)
        x = torch.randn(1, 3, 64 if arch != "inception_v3" else 75, 64 if arch != "inception_v3" else 75)
        meta, eager = [], []
        for i in range(repeats + 1):  # the first round warms caches and is dropped
            for name, fn, times in (("meta", lambda: zoo.load(folder, device="cpu"), meta),
                                    ("eager", lambda: eager_load(folder), eager)):
                start = time.perf_counter()
                loaded = fn()
                elapsed = time.perf_counter() - start
                if i:
                    times.append(elapsed)
                if i == 1 and name == "meta":
                    with torch.no_grad():
                        same = torch.equal(loaded(x), eager_load(folder)(x))
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "params_m": round(params / 1e6, 1), "zoo_load_s": statistics.median(meta),
            "eager_s": statistics.median(eager), "speedup": statistics.median(eager) / statistics.median(meta),
            "same_outputs": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help="architecture (repeatable); default: " + ", ".join(DEFAULT_ARCHS))
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per path (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = [measure(arch, args.repeats) for arch in (args.arch or DEFAULT_ARCHS)]
    if args.json:
        print(json.dumps({"rows": rows, "threads": torch.get_num_threads()}))
        return 0
    print(f"{'arch':<20} {'params':>8} {'zoo.load':>10} {'eager':>10} {'speed-up':>9}  same outputs")
    for r in rows:
        print(f"{r['arch']:<20} {r['params_m']:>7}M {r['zoo_load_s']:>9.3f}s {r['eager_s']:>9.3f}s "
              f"{r['speedup']:>8.2f}×  {r['same_outputs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
