"""Speed of the one-pass explanation engine against plain passes and pytorch-grad-cam (not a test).

Interleaved runs (each repetition runs every variant once, in a rotating order, so that load from
other processes hits all variants alike), warm-up, medians, and ratios measured side by side.

    python benchmarks/explain_speed.py            # ResNet50 + VGG16 at 224 and 512
    python benchmarks/explain_speed.py --quick    # fewer repetitions, 224 + 512 on ResNet50 only
    python benchmarks/explain_speed.py --json     # figures and ratios as one JSON object
    python benchmarks/explain_speed.py --archs efficientnet_lite0 --sizes 320 --output-strides 32,16
                                                  # the shipped backbone at its designed and its dilated stride

Goals (ratios): four maps ≤ 1.5 × (forward + full backward to the input); pytorch-grad-cam / this
engine ≥ 3; re-threshold (θ, τ, t) ≤ 30 ms at 512; 5-class integrated ≤ 0.5 × 5 sequential.

The last goal is out of reach for exact maps (measured 0.65-0.68 for ResNet50 at 224 and 512): integrating
shares only the forward pass. Each class still needs its own backward to the layers (GMSM's low layer is near
the input) and its own guided backward to the input, because the guided ReLU rule keeps only positive
gradients and so does not add up over classes. With a forward F and the two backwards roughly 0.8 F and 1 F,
5 classes cost F + 5·1.8 F against 5·2.8 F: about 0.7 of sequential, what is measured; 0.5 would need the
backwards themselves shared. Batching the five backwards (one
vmap'd backward, ``is_grads_batched``) was slower on CPU (explain.capture_kinds.row_gradients).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from explain import Explainer, attention_crop, lesion_mask

FOUR = ["cam", "gradcam", "guided_gradcam", "gmsm"]
CLASSES = 5


def build(arch: str, size: int, output_stride: int = 32):
    """A zoo model (GAP + linear head, 5 DR grades) at random init; torchvision when the zoo is absent."""
    torch.manual_seed(0)
    try:
        import zoo

        extra = {"output_stride": output_stride} if output_stride != 32 else {}
        model = zoo.create_model(arch, paper="003", pretrained=False, input_size=size, **extra).eval()
        c = model.config
        return model, dict(target_layer=c.target_layer, low_layer=c.low_layer, cam=c.cam, cam_classifier=c.cam_classifier)
    except ImportError:
        import torchvision

        model = getattr(torchvision.models, arch)(num_classes=CLASSES).eval()
        if arch == "resnet50":
            return model, dict(target_layer="layer4", low_layer="layer3", cam="linear", cam_classifier="fc")
        return model, dict(target_layer="features.29", low_layer="features.22", cam=None)


def variants(model, layers, x, device):
    """name -> zero-argument callable computing one variant once."""
    explainer = Explainer(model, **layers)
    target = 1

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward_input():
        x_in = x.clone().requires_grad_(True)
        torch.autograd.grad(model(x_in)[0, target], x_in)

    def forward_backward_all():  # what pytorch-grad-cam does: loss.backward() through every parameter
        x_in = x.clone().requires_grad_(True)
        model(x_in)[0, target].backward()
        model.zero_grad(set_to_none=True)

    def engine_four():
        explainer.explain(x, target=target, methods=FOUR).maps()

    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference = copy.deepcopy(model)
    guided_reference = copy.deepcopy(model)  # GuidedBackpropReLUModel replaces ReLUs in place
    get = reference.get_submodule
    high, low = get(layers["target_layer"]), get(layers["low_layer"])
    gradcam = GradCAM(reference, [high])
    gradcam_pp = GradCAMPlusPlus(reference, [low, high])
    guided = GuidedBackpropReLUModel(guided_reference, device=device)
    targets = [ClassifierOutputTarget(target)]

    def pgc_four():
        cam_stand_in = gradcam(x, targets)  # GradCAM standing in for CAM
        grad_map = gradcam(x, targets)
        gradcam_pp(x, targets)  # GMSM's two-layer Grad-CAM++
        gb = guided(x.clone(), target)  # Guided Grad-CAM = guided backprop × Grad-CAM
        return cam_stand_in, gb * grad_map[0][..., None]

    def integrated():
        explainer.explain(x, target=list(range(CLASSES)), methods=FOUR).maps()

    def sequential():
        for cls in range(CLASSES):
            explainer.explain(x, target=cls, methods=FOUR).maps()

    return {
        "forward": forward,
        "forward+backward(input)": forward_backward_input,
        "forward+backward(all params)": forward_backward_all,
        "engine four maps": engine_four,
        "pytorch-grad-cam four maps": pgc_four,
        "engine integrated 5 classes": integrated,
        "engine 5 sequential": sequential,
    }


def rethreshold_ms(model, layers, x, repeats: int) -> dict:
    """θ / τ / t re-threshold on a cached explanation: new GMSM gate, attention crop, lesion mask (wall and CPU ms)."""
    side = x.shape[-1]
    yy, xx = np.mgrid[:side, :side]
    fov = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.47 * side) ** 2
    explanation = Explainer(model, **layers).explain(x, target=1, methods=FOUR, fov_mask=fov)
    explanation.maps()
    wall, cpu = [], []
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        maps = explanation.maps(t=0.05 * (i % 7))
        attention_crop(maps["guided_gradcam"], theta=60 + 10 * (i % 10))
        lesion_mask(maps["gmsm"], tau=0.5 + 0.03 * (i % 10), fov_mask=fov)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": round(1000 * statistics.median(wall), 2), "cpu": round(1000 * statistics.median(cpu), 2)}


def measure(arch: str, size: int, repeats: int, device: str, output_stride: int = 32) -> dict:
    model, layers = build(arch, size, output_stride)
    model.to(device)
    x = torch.randn(1, 3, size, size, device=device)
    runs = variants(model, layers, x, device)
    names = list(runs)
    for name in names:  # warm-up
        runs[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}  # process CPU time: the work done, less sensitive to other processes
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate so no variant always goes first
        for name in order:
            if device == "cuda":
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            if device == "cuda":
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    result = {"arch": arch, "size": size, "output_stride": output_stride, "device": device, "repeats": repeats}
    for label, series in (("wall", wall), ("cpu", cpu)):
        medians = {name: statistics.median(v) for name, v in series.items()}
        result[f"median_{label}_s"] = {k: round(v, 4) for k, v in medians.items()}
        result[f"ratios_{label}"] = {k: round(v, 3) for k, v in ratios_of(medians).items()}
    if size >= 512:
        result["rethreshold_ms"] = rethreshold_ms(model, layers, x, repeats=max(10, 4 * repeats))
    return result


def ratios_of(medians: dict) -> dict:
    return {
        "four_maps / (forward+backward input)": medians["engine four maps"] / medians["forward+backward(input)"],
        "four_maps / forward": medians["engine four maps"] / medians["forward"],
        "pytorch-grad-cam / engine (four maps)": medians["pytorch-grad-cam four maps"] / medians["engine four maps"],
        "integrated 5 / sequential 5": medians["engine integrated 5 classes"] / medians["engine 5 sequential"],
    }


GOALS = {
    "four_maps / (forward+backward input)": ("<=", 1.5),
    "pytorch-grad-cam / engine (four maps)": (">=", 3.0),
    "integrated 5 / sequential 5": ("<=", 0.5),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="resnet50,vgg16", help="comma list of zoo architectures (default resnet50,vgg16)")
    parser.add_argument("--sizes", default="224,512", help="comma list of input sides (default 224,512)")
    parser.add_argument("--output-strides", default="32",
                        help="comma list of zoo output strides (16: the last stage dilated; default 32)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions per variant (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 repetitions, ResNet50 only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object with figures and ratios")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    archs = ["resnet50"] if args.quick else [a.strip() for a in args.archs.split(",") if a.strip()]
    repeats = 3 if args.quick else args.repeats
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = []
    strides = [int(s) for s in args.output_strides.split(",")]
    for arch, size, stride in itertools.product(archs, sizes, strides):
        result = measure(arch, size, repeats, args.device, stride)
        results.append(result)
        if not args.json:
            print(f"\n{arch} @ {size}, output stride {stride} ({args.device}, {repeats} interleaved repeats, "
                  "medians: wall / process CPU)")
            for name, seconds in result["median_wall_s"].items():
                print(f"  {name:<32} {seconds * 1000:9.1f} ms / {result['median_cpu_s'][name] * 1000:9.1f} ms")
            for name, value in result["ratios_wall"].items():
                goal = GOALS.get(name)
                verdict = "" if goal is None else (
                    "  ok" if (value <= goal[1] if goal[0] == "<=" else value >= goal[1]) else f"  MISSES goal {goal[0]} {goal[1]}")
                print(f"  ratio {name:<40} {value:6.3f} (CPU {result['ratios_cpu'][name]:6.3f}){verdict}")
            if "rethreshold_ms" in result:
                r = result["rethreshold_ms"]
                print(f"  re-threshold θ/τ/t at {size}: {r['wall']:.1f} ms wall, {r['cpu']:.1f} ms CPU (goal ≤ 30 ms)")
    summary = {"load_average_1min_at_start": load, "threads": torch.get_num_threads(), "results": results}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\nload average at start: {load:.2f} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
