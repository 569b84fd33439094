"""Leave-one-source-out table (issue 19, part 5): how a DR grader's recipe transfers to a clinic it never saw.

For each of the four graded sources, the shipped model's own training command (its config's ``reproduce``) is run
again without that source, and the run is measured on the left-out source's test patients (``python -m zoo evaluate
--split test``: the same patients the shipped model's card reports). The table sets that beside the shipped model's
number on the same photos (trained on all four).

    python scripts/leave_one_source_out.py assets/dr-grade-classifier --max-steps 500 --out runs/loso

Runs one training at a time (the machine has 2 cores); ``--dry-run`` prints the commands only.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Options of the recorded command that this script sets itself, with how many values each takes.
REPLACED = {"--data": 1, "--format": 1, "--out": 1, "--name": 1, "--max-steps": 1, "--quiet": 0}


def recorded_command(model: Path) -> tuple[str, list[str], list[tuple[str, str]]]:
    """(the shipped model's recipe, its arguments without data, name, output and step budget, its (data, format)
    pairs), from the config's training facts (``train.reproduce.training_of``)."""
    from train.reproduce import training_of
    from zoo.config import ModelConfig

    training = training_of(ModelConfig.load(model / "config.json"))
    argv, kept, data, formats, i = training["args"], [], [], [], 0
    while i < len(argv):
        option = argv[i]
        if option in REPLACED:
            value = argv[i + 1] if REPLACED[option] else None
            if option == "--data":
                data.append(value)
            elif option == "--format":
                formats.append(value)
            i += 1 + REPLACED[option]
            continue
        kept.append(option)
        i += 1
    if len(data) != len(formats):
        raise SystemExit(f"{model}: every --data needs its own --format in the recorded command")
    return training["recipe"], kept, list(zip(data, formats))


def source_name(data: str) -> str:
    return Path(data).name


def training_command(recipe: str, kept: list[str], sources: list[tuple[str, str]], out: Path,
                     max_steps: int) -> list[str]:
    command = [sys.executable, "-m", "train", recipe, *kept]
    for data, fmt in sources:
        command += ["--data", data, "--format", fmt]
    return command + ["--max-steps", str(max_steps), "--name", out.name, "--out", str(out), "--quiet"]


def evaluate(run: Path, data: str, fmt: str) -> dict:
    """The run's metrics on ``data``'s test patients (the training's own per-source split)."""
    found = subprocess.run([sys.executable, "-m", "zoo", "evaluate", str(run), "--data", data, "--format", fmt,
                            "--split", "test", "--json", "--quiet"], cwd=REPO, check=True, capture_output=True,
                           text=True)
    return json.loads(found.stdout)


def table(rows: list[dict], model: str) -> str:
    lines = [f"| left-out source (its test patients) | photos | κ trained on the other three | κ `{model}` (all four) | "
             "AUC any DR, other three / all four |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['source']} | {row['n_images']} | **{row['kappa']:.3f}** | {row['shipped_kappa']:.3f} | "
                     f"{row['auc_any_dr']:.3f} / {row['shipped_auc_any_dr']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a shipped model folder, e.g. assets/dr-grade-classifier")
    parser.add_argument("--max-steps", type=int, default=500, help="optimizer steps of each run (default: 500)")
    parser.add_argument("--out", type=Path, default=Path("runs/loso"), help="where the runs go (default: runs/loso)")
    parser.add_argument("--only", action="append", default=[], help="leave out only these sources (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the training commands only")
    args = parser.parse_args(argv)
    recipe, kept, sources = recorded_command(args.model)
    shipped = json.loads((args.model / "config.json").read_text())["metrics"]
    rows = []
    for data, fmt in sources:
        name = source_name(data)
        if args.only and name not in args.only:
            continue
        run = args.out / f"without-{name}"
        command = training_command(recipe, kept, [s for s in sources if s[0] != data], run, args.max_steps)
        print(shlex.join(command), flush=True)
        if args.dry_run:
            continue
        if not (run / "model.safetensors").is_file():
            subprocess.run(command, cwd=REPO, check=True)
        measured = evaluate(run, data, fmt)
        own = shipped[f"test: {name}"]
        rows.append({"source": name, "n_images": measured["n_images"], "kappa": measured["quadratic_kappa"],
                     "auc_any_dr": measured["auc_any_dr"], "shipped_kappa": own["quadratic_kappa"],
                     "shipped_auc_any_dr": own["auc_any_dr"], "max_steps": args.max_steps})
        (args.out / "loso.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(table(rows, args.model.name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
