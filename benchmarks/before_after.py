"""One benchmark on two checkouts, its ratios side by side (a refactor's "before and after").

    git worktree add --detach /tmp/before ba5aae9
    python benchmarks/before_after.py /tmp/before explain_speed.py --quick
    python benchmarks/before_after.py /tmp/before train_throughput.py --steps 6
    python benchmarks/before_after.py /tmp/before zoo_load.py --repeats 3

Runs ``benchmarks/SCRIPT --json ARGS`` of the older checkout with that checkout's packages first on the path
(``PYTHONPATH``), then this checkout's, alternating ``--rounds`` times so that load from other processes hits
both alike, and prints every ratio-like figure (names with "/", "ratio", "speedup" or "x_") of the two runs'
JSON: the median over rounds, before → after. Both runs use this environment's packages (torch etc.).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATIO_WORDS = ("/", "ratio", "speedup", "x_")
ID_FIELDS = ("arch", "name", "variant", "size", "input_size", "side")  # what names a list item of a result


def leaves(value, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value by path; a list item by its ID_FIELDS (e.g. "resnet50@512") when it has them."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            ids = [str(item[k]) for k in ID_FIELDS if isinstance(item, dict) and k in item]
            name = "@".join(ids) if ids else str(index)
            found.update(leaves(item, f"{prefix}[{name}]"))
    return found


def run(checkout: Path, script: str, args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(checkout / "benchmarks" / script), "--json", *args], cwd=checkout,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed in {checkout}:\n{done.stderr[-2000:]}")
    return leaves(json.loads(done.stdout[done.stdout.index("{"):]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the older checkout (e.g. a git worktree)")
    parser.add_argument("script", help="a script in benchmarks/ that prints one JSON object with --json")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each checkout (default 1)")
    parser.add_argument("--all", action="store_true", help="print every numeric figure, not only ratios")
    args, rest = parser.parse_known_args(argv)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        runs["before"].append(run(args.before.resolve(), args.script, rest))
        runs["after"].append(run(REPO, args.script, rest))
    median = {side: {key: statistics.median(r[key] for r in rounds if key in r) for key in rounds[0]}
              for side, rounds in runs.items()}
    keys = [k for k in median["after"] if k in median["before"]
            and (args.all or any(word in k.lower() for word in RATIO_WORDS))]
    width = max((len(k) for k in keys), default=10)
    print(f"{args.script} {' '.join(rest)}: before = {args.before}, after = {REPO} (median of {args.rounds})")
    for key in keys:
        print(f"  {key:{width}s}  {median['before'][key]:9.3f} → {median['after'][key]:9.3f}")


if __name__ == "__main__":
    main()
