"""Output stride 16 against 32 for the shipped models, with their weights unchanged (issue 17, part 1).

Dilating the last stage(s) instead of striding them (DeepLab's output stride, Chen et al. 2017) keeps every weight
and doubles the map grid (EfficientNet-Lite0 at 320 px: 10 × 10 → 20 × 20), but the dilated stages now see their
inputs at another spacing than in training, so the predictions move. For each shipped model this measures, on
validation photos of its own data (``fundus.datasets.labelled``, the training's per-source split; never the test
part): agreement of the decisions, the largest and mean change of a probability, and the task's headline metrics
at both strides; and for ``dr-lesions`` the localisation on IDRiD masks (``python -m explain evaluate``'s loop, in
process) at both strides, GMSM's low layer at 16 one stage finer (``backbone.blocks.2``).

    nice -n 10 python scripts/output_stride_check.py --photos 40 --idrid 20 --json /tmp/os16.json
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from fundus import load_image, preprocess  # noqa: E402
from fundus.datasets.labelled import labelled_photos  # noqa: E402
from fundus.tasks import task_of  # noqa: E402
from zoo.architectures import map_grid_text  # noqa: E402
from zoo.evaluation.metrics import compute_metrics  # noqa: E402
from zoo.factory import build_model  # noqa: E402

SHIPPED = ("dr-grading", "dr-grade-classifier", "dr-lesions", "eye-diseases", "eye-diseases-ensemble")
HEADLINE = ("quadratic_kappa", "accuracy", "auc_macro", "auc_mean", "f1_micro")
FINER_LOW_LAYER = {"backbone.blocks.4": "backbone.blocks.2", "g1.0.backbone.blocks.4": "g1.0.backbone.blocks.2"}


def data_of(config) -> tuple[list[Path], list[str]]:
    """The --data/--format pairs of the model's training command (``config.reproduce``)."""
    words = shlex.split(config.reproduce.split("&&")[0])
    data = [Path(words[i + 1]) for i, w in enumerate(words) if w == "--data"]
    formats = [words[i + 1] for i, w in enumerate(words) if w == "--format"]
    return [ROOT / d if not d.is_absolute() else d for d in data], formats


def at_stride(model, stride: int):
    """The same weights in the architecture built at ``stride`` (GMSM's low layer one stage finer)."""
    config = dataclasses.replace(model.config, output_stride=stride,
                                 low_layer=FINER_LOW_LAYER.get(model.config.low_layer, model.config.low_layer))
    other, _, _ = build_model(config)
    other.config = config
    other.load_state_dict(model.state_dict())
    return other.eval()


def spread(items: list, n: int) -> list:
    """n items evenly spaced through the list (every source of a multi-source split gets some)."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


_inputs: dict = {}


def inputs_of(photos, config) -> torch.Tensor:
    key = (tuple(str(p.image) for p in photos), config.input_size, str(config.preprocessing))
    if key not in _inputs:
        _inputs[key] = torch.cat([preprocess(load_image(p.image), config).tensor for p in photos])
    return _inputs[key]


@torch.no_grad()
def outputs_of(model, x: torch.Tensor) -> np.ndarray:
    return torch.cat([model(x[i:i + 8]) for i in range(0, len(x), 8)]).float().numpy()


def headline(config, outputs: np.ndarray, targets: np.ndarray) -> dict:
    try:
        metrics = compute_metrics(config.task, outputs, targets, config.labels, thresholds=config.thresholds or None,
                                  grade_cutoffs=config.grade_cutoffs)
    except ValueError as error:  # e.g. one class only among the photos
        return {"error": str(error)}
    return {k: round(float(metrics[k]), 3) for k in HEADLINE if isinstance(metrics.get(k), (int, float))}


@torch.no_grad()
def stored_drift(name: str, models: dict, n: int = 6) -> dict:
    """Largest |raw output − the shipped held-out output| (``test_predictions.json``) on n of its photos, per stride:
    what ``tests/test_default_models.py`` checks (tolerance 0.02)."""
    photos = json.loads((ROOT / "assets" / name / "test_predictions.json").read_text())["photos"]
    picked = photos[:: max(1, len(photos) // n)][:n]
    drift = dict.fromkeys(models, 0.0)
    for p in picked:
        x = preprocess(load_image(ROOT.parent / "shared" / "data" / p["path"]), models[32].config).tensor
        for stride, model in models.items():
            drift[stride] = max(drift[stride], float(np.abs(model(x)[0].numpy() - p["output"]).max()))
    return {f"stored_output_drift_{s}": round(v, 3) for s, v in drift.items()}


def predictions(name: str, n: int) -> dict:
    m32 = zoo.load(name).eval()
    config = m32.config
    m16 = at_stride(m32, 16)
    data, formats = data_of(config)
    photos = spread(labelled_photos(data, formats, config.labels, config.task, split="val"), n)
    x = inputs_of(photos, config)
    targets = np.stack([np.asarray(p.label, dtype=np.float32) for p in photos])
    out32, out16 = outputs_of(m32, x), outputs_of(m16, x)
    task = task_of(config.task)
    p32, p16 = task.probabilities(out32), task.probabilities(out16)
    with torch.no_grad():
        d32 = np.asarray(m32.decide(torch.from_numpy(out32)))
        d16 = np.asarray(m16.decide(torch.from_numpy(out16)))
    same = (d32 == d16).reshape(len(photos), -1).all(axis=1)
    return {
        "model": name, "photos": len(photos), "sources": sorted({p.source for p in photos}),
        "grid_32": map_grid_text(config), "grid_16": map_grid_text(m16.config),
        "decisions_agree": round(float(same.mean()), 3),
        "max_abs_prob_change": round(float(np.abs(p32 - p16).max()), 3),
        "mean_abs_prob_change": round(float(np.abs(p32 - p16).mean()), 4),
        "metrics_32": headline(config, out32, targets), "metrics_16": headline(config, out16, targets),
        **stored_drift(name, {32: m32, 16: m16}),
    }


def localisation(name: str, data: Path, limit: int) -> dict:
    """``python -m explain evaluate`` at stride 32 (the shipped folder) and 16 (a copy whose config says 16)."""
    from explain.cli import main as explain_main

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder16 = Path(tmp) / f"{name}-os16"
        shutil.copytree(ROOT / "assets" / name, folder16)
        config = json.loads((folder16 / "config.json").read_text())
        config["output_stride"] = 16
        config["low_layer"] = FINER_LOW_LAYER.get(config["low_layer"], config["low_layer"])
        (folder16 / "config.json").write_text(json.dumps(config, indent=2))
        for stride, model in ((32, name), (16, str(folder16))):
            argv = ["evaluate", model, "--data", str(data), "--format", "idrid-seg", "--lesions", "HE,EX",
                    "--limit", str(limit), "--json"]
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                explain_main(argv)
            results[stride] = json.loads(buffer.getvalue())
    return results


def epg_rows(results: dict) -> list[dict]:
    rows = []
    for lesion in ("HE", "EX"):
        for stride, result in results.items():
            trivial = max(result[b][lesion]["energy_pointing_game"] for b in ("baseline-gaussian", "baseline-uniform"))
            row = {"stride": stride, "lesion": lesion, "best_trivial": round(trivial, 4)}
            for method in ("cam", "gradcam", "guided_gradcam", "gmsm"):
                epg = result[method][lesion]["energy_pointing_game"]
                row[method] = f"{epg:.3f} ({epg / trivial:.2f}×)"
            rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(SHIPPED), help="comma list of shipped models")
    parser.add_argument("--photos", type=int, default=40, help="validation photos per model (spread over the split)")
    parser.add_argument("--idrid", type=int, default=20, help="IDRiD photos for dr-lesions' localisation (0: skip)")
    parser.add_argument("--idrid-data", type=Path, default=ROOT.parent / "shared" / "data" / "idrid-seg-dev")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"predictions": [], "localisation": None}
    for name in args.models.split(","):
        row = predictions(name.strip(), args.photos)
        report["predictions"].append(row)
        print(json.dumps(row), flush=True)
    if args.idrid and "dr-lesions" in args.models:
        results = localisation("dr-lesions", args.idrid_data, args.idrid)
        report["localisation"] = {"raw": results, "epg": epg_rows(results)}
        for row in report["localisation"]["epg"]:
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
