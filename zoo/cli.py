"""The zoo's command line: ``python -m zoo list | info | predict | evaluate``.

Expected failures (an unknown name, an unreadable photo, a hub that cannot be reached) print one
clear line on stderr and exit with status 2 (1 for a model or hub that fails to load) — no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo",
        description="Fundus CAM Zoo: explainable retinal fundus classifiers from five papers. Not for clinical use.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lst = sub.add_parser("list", help="shipped and configured models, the papers' architectures, the papers")
    lst.add_argument("--json", action="store_true", help="print one JSON object")
    info = sub.add_parser("info", help="a model's config and card, or an architecture's defaults")
    info.add_argument("name", help="shipped name, local folder, hub repo id (org/name) or architecture name")
    info.add_argument("--revision", help="hub branch, tag or commit")
    pred = sub.add_parser("predict", help="classify fundus photos")
    pred.add_argument("name", help="shipped name, local folder or hub repo id")
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="photo files (JPEG, PNG, TIFF …)")
    pred.add_argument("--json", action="store_true", help="print a JSON list, one object per photo")
    pred.add_argument("--revision", help="hub branch, tag or commit")
    pred.add_argument("--device", help="e.g. cpu, cuda (default: CUDA when available)")
    pred.add_argument("--batch-size", type=int, default=8, help="photos per forward pass (default 8)")
    sub.add_parser("evaluate", help="metrics on a labelled data set (python -m zoo evaluate --help)",
                   add_help=False)
    return parser


def _cmd_list(args) -> int:
    from zoo.registry import catalog

    data = catalog()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print("Models:" if data["models"] else "Models: none shipped or configured (FUNDUS_ZOO_MODELS)")
    for m in data["models"]:
        labels = ", ".join(m["labels"]) if m["labels"] else "?"
        print(f"  {m['name']:<24} paper {m['paper'] or '-':<4} {m['task'] or '?':<17} [{labels}]  "
              f"{m['source']}; weights: {m['pretrained'] or '?'}")
    print("\nArchitectures (untrained; zoo.create_model(name, paper=...)):")
    for a in data["architectures"]:
        print(f"  {a['name']:<22} paper {a['paper']}  {a['task']:<17} {a['input_size']}px  init: {a['pretrained']}")
    print("\nPapers:")
    for p in data["papers"]:
        print(f"  {p['id']}  {p['title']}  ({p['dataset']}; {', '.join(p['architectures'])})")
    return 0


def _cmd_info(args) -> int:
    from zoo.architectures import ARCHITECTURES
    from zoo.hub import CARD_NAME, load_config, resolve

    if args.name in ARCHITECTURES and not args.revision:
        spec = ARCHITECTURES[args.name]
        print(json.dumps({"architecture": spec.name, "papers": list(spec.papers), "description": spec.description,
                          "input_size": spec.input_size, "mean": spec.mean, "std": spec.std,
                          "heads": list(spec.heads)}, indent=1))
        return 0
    folder = resolve(args.name, revision=args.revision)
    config = load_config(folder)
    print(json.dumps({"folder": str(folder), **config.to_dict()}, indent=1))
    card = folder / CARD_NAME
    if card.is_file():
        print(f"\nModel card: {card}")
    return 0


def _cmd_predict(args) -> int:
    import zoo

    model = zoo.load(args.name, revision=args.revision, device=args.device)
    results = zoo.predict(model, args.images, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        if r["task"] == "grade-regression":
            answer = f"grade {r['grade']} ({r['grade_label']}), value {r['value']:.3f}"
        else:
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            answer = f"predicted {r['predicted']}; top: " + ", ".join(f"{k} {v:.3f}" for k, v in top)
        print(f"{r['source']}: {answer}")
        for w in r["warnings"]:
            print(f"  warning: {w}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from zoo.evaluate import main as evaluate_main  # the training engineer's module, loaded on demand

        return evaluate_main(argv[1:])
    args = _parser().parse_args(argv)
    from zoo.errors import HubUnavailableError, WeightsError

    commands = {"list": _cmd_list, "info": _cmd_info, "predict": _cmd_predict}
    try:
        return commands[args.command](args)
    except (WeightsError, HubUnavailableError) as err:  # the model exists but cannot be used now
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # unknown names, unreadable photos (fundus.ImageError)
        print(f"error: {err}", file=sys.stderr)
        return 2
