"""The zoo's command line: ``python -m zoo list | info | predict | evaluate | publish | space deploy``.

Expected failures (an unknown name, a hub that cannot be reached) print one clear line on stderr and
exit with status 2 (1 for a model or hub that fails to load) — no traceback.

``predict`` takes photo files and folders (every photo inside, recursively). Each photo must pass the
fundus check (``zoo.fundus_check``) before it is classified: one that is not a fundus photograph,
or cannot be read, gets no grade or labels — the reason goes to stderr, the other photos are still
classified, and the exit status is 3 at the end (0 when every photo was classified).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
SKIPPED_STATUS = 3  # some photos were not classified (unreadable, or not fundus photographs)


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
    pred.add_argument("images", nargs="+", metavar="IMAGE",
                      help="photo files (JPEG, PNG, TIFF …) or folders (every photo inside, recursively)")
    pred.add_argument("--json", action="store_true", help="print a JSON list, one object per classified photo")
    pred.add_argument("--revision", help="hub branch, tag or commit")
    pred.add_argument("--device", help="e.g. cpu, cuda (default: CUDA when available)")
    pred.add_argument("--batch-size", type=int, default=8, help="photos per forward pass (default 8)")
    sub.add_parser("evaluate", help="metrics on a labelled data set (python -m zoo evaluate --help)",
                   add_help=False)
    pub = sub.add_parser("publish", help="push the shipped models to hub model repos ORG/<name> (zoo.publish)")
    pub.add_argument("org", metavar="ORG", help="hub user or organisation")
    pub.add_argument("names", nargs="*", metavar="NAME", help="shipped model names (default: every one)")
    _hub_options(pub)
    space = sub.add_parser("space", help="deploy the web app as a Hugging Face Space (zoo.space)")
    space_sub = space.add_subparsers(dest="space_command", required=True, metavar="SPACE_COMMAND")
    dep = space_sub.add_parser("deploy", help="create/update the Space, upload the app, set its models and hardware")
    dep.add_argument("space_id", metavar="ORG/NAME", help="the Space's repo id")
    from zoo.space import HARDWARE

    dep.add_argument("--hardware", required=True, choices=list(HARDWARE),
                     help="Space hardware: cpu-basic (free CPU), zero-a10g (ZeroGPU), t4-small, …")
    dep.add_argument("--models", nargs="+", metavar="ORG/NAME",
                     help="hub model repos the Space loads (default: ORG/<name> for every shipped model, "
                          "as `publish ORG` pushes them)")
    dep.add_argument("--dry-run", metavar="DIR", help="write the folder it would upload into DIR and send nothing")
    _hub_options(dep)
    return parser


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--token", help="hub token (default: HF_TOKEN or the logged-in one)")
    parser.add_argument("--endpoint", help="hub URL (default: HF_ENDPOINT or https://huggingface.co)")


def _cmd_publish(args) -> int:
    from zoo.publish import publish

    from huggingface_hub.errors import HfHubHTTPError

    try:
        done = publish(args.org, args.names, token=args.token, endpoint=args.endpoint, private=args.private)
    except HfHubHTTPError as err:  # refused by the hub (token, rights, name): its answer, no traceback
        print(f"error: the hub refused: {err}", file=sys.stderr)
        return 1
    print(f"published {len(done)} model(s) to {args.org}")
    return 0


def _cmd_space(args) -> int:
    from zoo.space import deploy

    from huggingface_hub.errors import HfHubHTTPError

    try:
        deploy(args.space_id, args.hardware, args.models, token=args.token, endpoint=args.endpoint,
               private=args.private, dry_run=args.dry_run)
    except HfHubHTTPError as err:
        print(f"error: the hub refused: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_list(args) -> int:
    from zoo.model_names import catalog

    data = catalog()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print("Models:" if data["models"] else "Models: none shipped or configured (FUNDUS_ZOO_MODELS)")
    for m in data["models"]:
        labels = ", ".join(m["labels"]) if m["labels"] else "?"
        print(f"  {m['name']:<24} paper {m['paper'] or '-':<4} {m['task'] or '?':<17} [{labels}]  "
              f"{m['source']}; {_weights_note(m)}")
    print("\nArchitectures (untrained; zoo.create_model(name, paper=...)):")
    for a in data["architectures"]:
        print(f"  {a['name']:<22} paper {a['paper']}  {a['task']:<17} {a['input_size']}px  init: {a['pretrained']}")
    print("\nPapers:")
    for p in data["papers"]:
        print(f"  {p['id']}  {p['title']}  ({p['dataset']}; {', '.join(p['architectures'])})")
    return 0


def _weights_note(row: dict) -> str:
    """What a named model's weights are: the data sets it was trained on (its config's ``datasets``), else
    only its initialisation ("weights: imagenet" reads as untrained, and is, for such a model)."""
    if row.get("datasets"):
        return "trained: " + ", ".join(str(d) for d in row["datasets"])
    if row.get("note"):
        return row["note"]
    return f"not trained (no data sets in its config); initial weights: {row.get('pretrained') or '?'}"


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


def expand_photos(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Photo files from the command line's files and folders (a folder: its photos, recursively, sorted).

    Returns:
        ``(photos, problems)``: the photo paths in order, and one message per folder without photos.
    """
    photos, problems = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                problems.append(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in folder {item}")
            photos += found
        else:  # a missing or unreadable file is reported when it is read
            photos.append(item)
    return photos, problems


def _print_result(r: dict) -> None:
    from fundus.tasks import task_of

    if task_of(r["task"]).regression:
        answer = f"grade {r['grade']} ({r['grade_label']}), value {r['value']:.3f}"
    else:
        top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        answer = f"predicted {r['predicted']}; top: " + ", ".join(f"{k} {v:.3f}" for k, v in top)
    print(f"{r['source']}: {answer}")
    for w in r["warnings"]:
        print(f"  warning: {w}")


def _cmd_predict(args) -> int:
    import zoo
    from fundus import ImageError, NotFundusError, load_image
    from zoo.fundus_check import require_fundus_photo

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    photos, problems = expand_photos(args.images)
    model = zoo.load(args.name, revision=args.revision, device=args.device)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    results: list[dict] = []
    unreadable = not_fundus = 0
    for start in range(0, len(photos), args.batch_size):
        ready: list[tuple[str, object, object]] = []  # (source, photo, its fundus check)
        for source in photos[start:start + args.batch_size]:
            try:
                rgb = load_image(source)
            except (ImageError, OSError) as err:
                print(f"warning: skipping {source}: {err}", file=sys.stderr)
                unreadable += 1
                continue
            try:
                check = require_fundus_photo(rgb, source=source)  # before any grade
            except NotFundusError as err:
                print(f"warning: skipping {err}", file=sys.stderr)
                not_fundus += 1
                continue
            ready.append((source, rgb, check))
        if not ready:
            continue
        # The checks' content distances are reused by the unlike-training verdict (one content pass a photo).
        batch = zoo.predict(model, [rgb for _, rgb, _ in ready], batch_size=args.batch_size,
                            checks=[check for _, _, check in ready])
        for (source, _, _), result in zip(ready, batch):
            result["source"] = source
            if not args.json:
                _print_result(result)
        results += batch
    if args.json:
        print(json.dumps(results, indent=1))
    skipped = unreadable + not_fundus + len(problems)
    if skipped:
        parts = [f"{n} {what}" for n, what in ((unreadable, "unreadable"), (not_fundus, "not fundus photographs"),
                                               (len(problems), "folders without photos")) if n]
        print(f"warning: {len(results)} of {len(photos)} photos classified; not classified: {', '.join(parts)}",
              file=sys.stderr)
        return SKIPPED_STATUS
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from zoo.evaluation.cli import main as evaluate_main  # loaded on demand: scikit-learn takes seconds

        return evaluate_main(argv[1:])
    args = _parser().parse_args(argv)
    from zoo.errors import HubUnavailableError, WeightsError

    commands = {"list": _cmd_list, "info": _cmd_info, "predict": _cmd_predict, "publish": _cmd_publish,
                "space": _cmd_space}
    try:
        return commands[args.command](args)
    except (WeightsError, HubUnavailableError) as err:  # the model exists but cannot be used now
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # unknown names, unreadable photos (fundus.ImageError)
        print(f"error: {err}", file=sys.stderr)
        return 2
