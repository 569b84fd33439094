"""Training-loop throughput vs the raw forward + backward + step of the same model and batch.

The loop (``train.loop.fit``) adds data loading from the preprocessed-image cache, uint8 → float,
the recipe's batched augmentation, normalisation, logging and the progress bar. The goal is a
ratio loop / raw >= 0.9: the loop must not starve the model. Runs are interleaved (raw, loop, raw,
loop, …) and the medians compared, because the machine may be shared.

    python benchmarks/train_throughput.py --arch efficientnet_lite0 --input-size 128 --json

``--grid`` measures what a frozen-prefix run (``--frozen-blocks K``, ``train.frozen``) costs per image on the CPU —
the trained top's step, its validation forward, the frozen bottom's one-time cache pass — over frozen depth, input
size, output stride, bf16 autocast and channels-last, and plans the epochs each configuration fits in a budget
(issue 19; the table in docs/MODELS.md):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_throughput.py --grid --threads 1 --batch-size 8 --steps 2 \
        --repeats 1 --depths 4 3 2 --sizes 256 --strides 16 32 --variants channels-last --views 2

Each measurement is also printed to stderr as it comes, so a run cut short (a shared machine) keeps what it measured.
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as python -m train does (read when torch loads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from train.data import CachedImages  # noqa: E402
from train.ddp import resolve_device  # noqa: E402
from train.loop import LoopConfig, Stage, fit  # noqa: E402
from train.recipes import get_recipe  # noqa: E402


def build_model(arch: str, input_size: int):
    import zoo

    torch.manual_seed(0)
    return zoo.create_model(arch, paper="003", pretrained=False, input_size=input_size, name="bench")


def raw_images_per_s(model: nn.Module, batch: torch.Tensor, target: torch.Tensor, steps: int,
                     device: torch.device) -> tuple[float, float]:
    """Forward + backward + optimizer step on one ready batch already on the device.

    Returns:
        (images per wall-clock second, images per CPU second of this process).
    """
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = batch.to(device), target.to(device)
    amp = device.type == "cuda"
    if amp:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):
        if i == 1:  # the first step is warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n = steps * len(x)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def loop_images_per_s(make_model, data: CachedImages, batch_size: int, steps: int, augment, device: str,
                      workers: int) -> tuple[float, float]:
    """``train.loop.fit`` on ``steps`` batches per epoch.

    Returns:
        (images per wall-clock second of the second, warm epoch as the loop logs it — its timer covers the
        whole batch loop: loader start, augmentation, steps, progress bar —, images per CPU second of an
        epoch: the CPU time of a 2-epoch fit minus that of a 1-epoch fit, which is less disturbed by other
        processes on a shared machine).
    """
    cpu = []
    for epochs in (1, 2):
        with tempfile.TemporaryDirectory(prefix="fcz_bench_") as out:
            cfg = LoopConfig(out_dir=Path(out), batch_size=batch_size, device=device, workers=workers,
                             progress=True, deterministic=False, patience=99)
            model = make_model()
            c0 = time.process_time()
            res = fit(model, nn.CrossEntropyLoss(), data, None, cfg, [Stage("bench", epochs, 1e-4)], augment=augment)
            cpu.append(time.process_time() - c0)
    return float(res.history[1]["images_per_s"]), steps * batch_size / max(cpu[1] - cpu[0], 1e-9)


def data_ms_per_batch(data: CachedImages, batch_size: int, augment, device: torch.device, workers: int) -> float:
    """The loop's input side alone: loader batches, uint8 → float, augmentation, normalisation (no model)."""
    from torch.utils.data import DataLoader

    from train.loop import ResumableBatchSampler

    loader = DataLoader(data, batch_sampler=ResumableBatchSampler(list(range(len(data))), batch_size), num_workers=workers)
    mean = torch.tensor([0.5, 0.5, 0.5], device=device).view(1, -1, 1, 1)
    t0 = time.perf_counter()
    n = 0
    for images, _ in loader:
        x = augment(images.to(device).float().div_(255.0))
        x = (x - mean) / mean
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - t0) / max(n, 1)


CPU_OPTIONS = {  # name -> (bf16 autocast, channels-last, frozen blocks k: train on cached blocks[:k] outputs)
    "fp32": (False, False, 0),
    "bf16": (True, False, 0),
    "channels-last": (False, True, 0),
    "bf16 + channels-last": (True, True, 0),
    "frozen blocks[:3], fp32": (False, False, 3),
    "frozen blocks[:3], bf16": (True, False, 3),
    "frozen blocks[:4], fp32": (False, False, 4),
}


def option_images_per_s(arch: str, size: int, batch_size: int, steps: int, option: str) -> float:
    """Images per wall-clock second of forward + backward + Adam step on the CPU with one of ``CPU_OPTIONS``.

    With frozen blocks the batch is the cached output of the frozen bottom (computed once, untimed: its
    cost, one bottom forward per photo and view, is measured by ``bottom_images_per_s``).
    """
    from train.frozen import FrozenBottom, TrainedTop

    bf16, channels_last, k = CPU_OPTIONS[option]
    g = torch.Generator().manual_seed(0)
    model = build_model(arch, size).train()
    x = torch.randn(batch_size, 3, size, size, generator=g)
    y = torch.randint(0, 5, (batch_size,), generator=g)
    net: nn.Module = model
    if k:
        with torch.no_grad():
            x = FrozenBottom(model, k).eval()(x)
        net = TrainedTop(model, k)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for i in range(steps + 1):
        if i == 1:  # the first step is warm-up
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def bottom_images_per_s(arch: str, size: int, batch_size: int, k: int) -> float:
    """Images per second of the frozen bottom's forward pass (the one-off cost of caching one view)."""
    from train.frozen import FrozenBottom

    bottom = FrozenBottom(build_model(arch, size), k).eval()
    x = torch.randn(batch_size, 3, size, size)
    with torch.no_grad():
        bottom(x)
        t0 = time.perf_counter()
        bottom(x)
        bottom(x)
    return 2 * batch_size / (time.perf_counter() - t0)


GRID_VARIANTS = {  # --grid: name -> (bf16 autocast, channels-last), measured at each depth, size and stride
    "fp32": (False, False),
    "channels-last": (False, True),
    "bf16": (True, False),
    "bf16 + channels-last": (True, True),
}


def grid_model(arch: str, size: int, output_stride: int) -> nn.Module:
    import zoo

    torch.manual_seed(0)
    return zoo.create_model(arch, paper="003", pretrained=False, input_size=size, name="bench",
                            output_stride=output_stride)


def grid_step(arch: str, size: int, batch_size: int, steps: int, k: int, output_stride: int, bf16: bool,
              channels_last: bool) -> dict[str, float]:
    """One configuration of ``--grid``: per image, the CPU seconds (this process, all its threads) and wall
    seconds of a training step of the trained top on cached ``blocks[:k]`` features (forward + backward + Adam,
    after one warm-up step), of the top's forward in eval mode (validation), and of the frozen bottom's forward
    (building the cache: once per photo and view)."""
    from train.frozen import FrozenBottom, TrainedTop

    g = torch.Generator().manual_seed(0)
    model = grid_model(arch, size, output_stride).train()
    bottom, top = FrozenBottom(model, k).eval(), TrainedTop(model, k)
    x = torch.randn(batch_size, 3, size, size, generator=g)
    y = torch.randint(0, 5, (batch_size,), generator=g)
    if channels_last:
        bottom, top = bottom.to(memory_format=torch.channels_last), top.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out: dict[str, float] = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        feats = bottom(x)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        feats = bottom(x)
        out["cache_wall"], out["cache_cpu"] = ((time.perf_counter() - t0) / batch_size,
                                               (time.process_time() - c0) / batch_size)
    feats = feats.to(torch.bfloat16).float()  # as cached (bf16 storage), computed in fp32 by the loop
    if channels_last:
        feats = feats.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(top.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for i in range(steps + 1):
        if i == 1:  # the first step is warm-up
            t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(top(feats).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = steps * batch_size
    out["step_wall"], out["step_cpu"] = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    top.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        t0, c0 = time.perf_counter(), time.process_time()
        top(feats)
        out["eval_wall"], out["eval_cpu"] = ((time.perf_counter() - t0) / batch_size,
                                             (time.process_time() - c0) / batch_size)
    return out


def grid_plan(train_photos: int, val_photos: int, views: int, budget_s: float, fixed_s: float,
              per_image: dict[str, float]) -> dict[str, float]:
    """Epochs of one run in ``budget_s`` seconds: the cache (``views`` per training photo, one per validation
    photo) and ``fixed_s`` (preprocessing, start, publishing) once, then per epoch ``views`` steps per training
    photo and one validation forward per validation photo."""
    cache = (train_photos * views + val_photos) * per_image["cache"]
    epoch = train_photos * views * per_image["step"] + val_photos * per_image["eval"]
    return {"cache_min": cache / 60, "epoch_min": epoch / 60,
            "epochs": max(0.0, (budget_s - fixed_s - cache) / epoch)}


def compare_grid(args) -> int:
    """``--grid``: frozen depth × size × output stride × (bf16, channels-last), interleaved, medians of
    ``--repeats``; then the epochs each configuration fits in ``--budget-min`` for ``--photos``."""
    from train.loop import cpu_has_fast_bf16

    configs = [(k, s, os_, v) for k in args.depths for s in args.sizes for os_ in args.strides
               for v in args.variants]
    runs: dict[tuple, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for c in configs:
            bf16, cl = GRID_VARIANTS[c[3]]
            runs.setdefault(c, []).append(grid_step(args.arch, c[1], args.batch_size, args.steps, c[0], c[2],
                                                    bf16, cl))
            print(json.dumps({"config": c, **{k: round(v, 5) for k, v in runs[c][-1].items()}}), file=sys.stderr,
                  flush=True)  # each measurement as it comes (a run cut short keeps them)
    train_photos = round(args.photos * args.train_share)
    val_photos = round(args.photos * args.val_share)
    rows = []
    for c, r in runs.items():
        med = {key: statistics.median(x[key] for x in r) for key in r[0]}
        spread = {key: (min(x[key] for x in r), max(x[key] for x in r)) for key in ("step_cpu", "step_wall")}
        per_image = {p: med[f"{p}_{args.clock}"] for p in ("cache", "step", "eval")}
        plan = grid_plan(train_photos, val_photos, args.views, args.budget_min * 60, args.fixed_min * 60, per_image)
        rows.append({"frozen_blocks": c[0], "input_size": c[1], "output_stride": c[2], "variant": c[3],
                     "step_img_per_cpu_s": round(1 / med["step_cpu"], 2),
                     "step_img_per_s": round(1 / med["step_wall"], 2),
                     "step_img_per_cpu_s_range": [round(1 / spread["step_cpu"][1], 2),
                                                  round(1 / spread["step_cpu"][0], 2)],
                     "cache_img_per_cpu_s": round(1 / med["cache_cpu"], 1),
                     "eval_img_per_cpu_s": round(1 / med["eval_cpu"], 1),
                     **{key: round(v, 2) for key, v in plan.items()}})
    result = {"arch": args.arch, "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "cpu_has_fast_bf16": cpu_has_fast_bf16(), "clock": args.clock,
              "photos": args.photos, "train_photos": train_photos, "val_photos": val_photos, "views": args.views,
              "budget_min": args.budget_min, "fixed_min": args.fixed_min, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.arch}, batch {args.batch_size}, {torch.get_num_threads()} thread(s), AVX512-BF16/AMX: "
          f"{result['cpu_has_fast_bf16']}; images per CPU second (median of {args.repeats}, [min, max]); plan for "
          f"{train_photos} training + {val_photos} validation photos, {args.views} views, {args.budget_min:g} min "
          f"({args.fixed_min:g} fixed), by {args.clock} time")
    print(f"  {'k':>2} {'px':>4} {'os':>3} {'variant':<21} {'step':>7} {'[range]':>15} {'cache':>7} {'eval':>7}"
          f" {'cache min':>9} {'epoch min':>9} {'epochs':>6}")
    for r in rows:
        lo, hi = r["step_img_per_cpu_s_range"]
        print(f"  {r['frozen_blocks']:>2} {r['input_size']:>4} {r['output_stride']:>3} {r['variant']:<21} "
              f"{r['step_img_per_cpu_s']:>7.2f} {f'[{lo:.1f}, {hi:.1f}]':>15} {r['cache_img_per_cpu_s']:>7.1f} "
              f"{r['eval_img_per_cpu_s']:>7.1f} {r['cache_min']:>9.1f} {r['epoch_min']:>9.1f} {r['epochs']:>6.1f}")
    return 0


def compare_cpu_options(args) -> int:
    """Every CPU option at every --sizes, interleaved, as images/s and the ratio to fp32 at the first size."""
    from train.loop import cpu_has_fast_bf16

    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for size in args.sizes:
            for option in CPU_OPTIONS:
                runs.setdefault((option, size), []).append(
                    option_images_per_s(args.arch, size, args.batch_size, args.steps, option))
    base = statistics.median(runs[("fp32", args.sizes[0])])
    rows = [{"option": o, "input_size": s, "images_per_s": round(statistics.median(r), 2),
             "ratio_to_fp32": round(statistics.median(r) / base, 2)} for (o, s), r in runs.items()]
    caching = {f"blocks[:{k}] at {s} px": round(bottom_images_per_s(args.arch, s, args.batch_size, k), 1)
               for s in args.sizes for k in (3, 4)}
    result = {"arch": args.arch, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "cpu_has_fast_bf16": cpu_has_fast_bf16(), "rows": rows, "caching_images_per_s": caching}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.arch}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"AVX512-BF16/AMX: {result['cpu_has_fast_bf16']} — training step images/s (ratio to fp32 at {args.sizes[0]} px)")
    for r in rows:
        print(f"  {r['option']:<26} {r['input_size']:>4} px  {r['images_per_s']:>7.2f} img/s  ×{r['ratio_to_fp32']:.2f}")
    print("  caching the frozen bottom (one pass per photo and view): "
          + ", ".join(f"{k} {v} img/s" for k, v in caching.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="efficientnet_lite0", help="zoo architecture")
    p.add_argument("--input-size", type=int, default=128, help="input side in px")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved raw/loop runs; medians are compared")
    p.add_argument("--recipe", default="odir", help="whose augmentation the loop applies (aptos, dr-lesions, odir)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers in the loop")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cpu-options", action="store_true",
                   help="compare bf16 autocast, channels-last and frozen cached blocks side by side (CPU)")
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 256], help="input sizes for --cpu-options")
    g = p.add_argument_group("--grid: frozen depth x size x output stride x bf16/channels-last, and a plan")
    g.add_argument("--grid", action="store_true",
                   help="measure the trained top's step, its validation forward and the frozen bottom's cache "
                        "pass per image for every combination, and the epochs each fits in --budget-min")
    g.add_argument("--depths", type=int, nargs="+", default=[4, 3, 2], help="--frozen-blocks values")
    g.add_argument("--strides", type=int, nargs="+", default=[32, 16], help="--output-stride values")
    g.add_argument("--variants", nargs="+", default=list(GRID_VARIANTS), choices=list(GRID_VARIANTS))
    g.add_argument("--photos", type=int, default=9248, help="photos of the run (all sources)")
    g.add_argument("--train-share", type=float, default=0.65)
    g.add_argument("--val-share", type=float, default=0.15)
    g.add_argument("--views", type=int, default=3, help="--cached-views")
    g.add_argument("--budget-min", type=float, default=75.0, help="wall minutes of the whole run")
    g.add_argument("--fixed-min", type=float, default=8.0,
                   help="minutes of the run that do not depend on the configuration (loading and near-duplicate "
                        "hashing, preprocessing ~9,000 photos with 2 workers, publishing): about 8 on this machine")
    g.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="plan by CPU seconds of this process (robust on a shared machine) or wall seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grid:
        return compare_grid(args)
    if args.cpu_options:
        return compare_cpu_options(args)
    return compare_loop_with_raw(args)


def compare_loop_with_raw(args) -> int:
    """The loop's training images/s against a raw training step's, interleaved --repeats times, and the input
    pipeline's share of a step."""
    device = resolve_device(args.device)
    recipe = get_recipe(args.recipe)
    recipe_args = recipe.parse_args(["--data", ".", "--format", "imagefolder"])
    augment = recipe.augment(recipe_args)
    n = args.batch_size * args.steps
    g = torch.Generator().manual_seed(0)
    s = args.input_size
    data = CachedImages(torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g),
                        torch.randint(0, 5, (n,), generator=g))
    batch = torch.randn(args.batch_size, 3, s, s, generator=g)
    target = torch.randint(0, 5, (args.batch_size,), generator=g)
    raw, loop, raw_cpu, loop_cpu, data_ms = [], [], [], [], []
    for _ in range(args.repeats):
        data_ms.append(data_ms_per_batch(data, args.batch_size, augment, device, args.loader_workers))
        wall, cpu = raw_images_per_s(build_model(args.arch, s), batch, target, args.steps, device)
        raw.append(wall)
        raw_cpu.append(cpu)
        wall, cpu = loop_images_per_s(lambda: build_model(args.arch, s), data, args.batch_size, args.steps, augment,
                                      str(device), args.loader_workers)
        loop.append(wall)
        loop_cpu.append(cpu)
    result = {
        "arch": args.arch, "input_size": s, "batch_size": args.batch_size, "steps": args.steps,
        "recipe_augment": args.recipe, "device": str(device), "threads": torch.get_num_threads(),
        "raw_images_per_s": round(statistics.median(raw), 2), "loop_images_per_s": round(statistics.median(loop), 2),
        "ratio": round(statistics.median(loop) / statistics.median(raw), 3),
        "raw_runs": [round(r, 2) for r in raw], "loop_runs": [round(r, 2) for r in loop],
        "ratio_cpu_time": round(statistics.median(loop_cpu) / statistics.median(raw_cpu), 3),
        "raw_cpu_runs": [round(r, 2) for r in raw_cpu], "loop_cpu_runs": [round(r, 2) for r in loop_cpu],
        # Noise-robust view: the input pipeline's time per batch as a share of a raw training step.
        "data_ms_per_batch": round(statistics.median(data_ms), 2),
        "step_ms_raw": round(1000 * args.batch_size / statistics.median(raw), 2),
    }
    result["data_share_of_step"] = round(result["data_ms_per_batch"] / result["step_ms_raw"], 4)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.arch} {s}px batch {args.batch_size} on {device}: raw {result['raw_images_per_s']} img/s, "
              f"loop {result['loop_images_per_s']} img/s, ratio {result['ratio']} (goal >= 0.9; by CPU time "
              f"{result['ratio_cpu_time']}); input pipeline "
              f"{result['data_ms_per_batch']} ms/batch = {result['data_share_of_step']:.1%} of a raw step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
