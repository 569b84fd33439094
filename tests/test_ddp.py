"""The loop and a recipe run unchanged under ``torchrun --nproc_per_node=2`` (gloo on CPU)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from fundus import make_fundus

LOOP_SCRIPT = textwrap.dedent('''
    import json, os, sys, torch, torch.nn as nn
    from torch.utils.data import TensorDataset
    torch.set_num_threads(1)
    from train.loop import fit, LoopConfig, Stage

    g = torch.Generator().manual_seed(0)
    n = 18
    y = torch.arange(n) % 2
    x = (torch.where(y.bool(), 170.0, 80.0).view(-1, 1, 1, 1) + torch.randn(n, 3, 8, 8, generator=g) * 20)
    ds = TensorDataset(x.clamp(0, 255).to(torch.uint8), y)
    torch.manual_seed(int(os.environ["RANK"]))  # different start on each rank: DDP must sync it
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    res = fit(model, nn.CrossEntropyLoss(), ds, ds, LoopConfig(out_dir=sys.argv[1], batch_size=3, progress=False),
              [Stage("all", 2, 0.05)])
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    print("RESULT " + json.dumps(dict(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]),
                                      step=res.global_step, n_val=len(res.val_outputs), checksum=checksum,
                                      val_sorted=bool((res.val_targets == y.numpy()).all()))), flush=True)
''')


def torchrun(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    # The ranks import train/ from the installed package (pip install -e .; ./dev.sh does it).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_loop_under_torchrun_keeps_replicas_in_sync(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    out = tmp_path / "out"
    done = torchrun([str(script), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:] + "\nstdout:\n" + done.stdout[-2000:]
    # The two ranks share one stdout, so their lines can interleave: pick the JSON objects out by pattern.
    results = sorted((json.loads(m) for m in re.findall(r"RESULT (\{[^{}]*\})", done.stdout)),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == 2 for r in results)
    # 18 photos sharded over 2 ranks = 9 each = 3 batches of 3 per epoch, 2 epochs.
    assert all(r["step"] == 6 for r in results)
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], abs=1e-9)
    assert all(r["n_val"] == 18 and r["val_sorted"] for r in results)  # validation gathered, in order
    assert (out / "metrics.csv").read_text().count("\n") == 3  # one writer: header + 2 epochs
    assert (out / "checkpoints" / "best.safetensors").is_file()


@pytest.mark.slow
def test_recipe_cli_under_torchrun(tmp_path):
    data = tmp_path / "srahim-dr600"
    for p in range(6):
        folder = "1 - No DR" if p < 3 else "4 - Moderate DR without maculopathy"
        for eye in "LR":
            (data / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_fundus(80, seed=2 * p + (eye == "R"))[0]).save(data / folder / f"Patient{p:03d}_{eye}.jpg")
    out = tmp_path / "run"
    done = torchrun(["-m", "train", "aptos", "--data", str(data), "--format", "srahim-dr600", "--arch",
                     "efficientnet_lite0", "--input-size", "64", "--epochs", "1", "--batch-size", "2",
                     "--val-fraction", "0.34", "--workers", "1", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["reproduce"].startswith("python -m train aptos")
    split = json.loads((out / "training" / "split.json").read_text())
    n_train = len(split["train"])
    rows = (out / "training" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    # Each rank sees half the training photos: ceil(n_train / 2) per rank in batches of 2 (a trailing batch of
    # one photo is dropped: BatchNorm cannot train on it).
    per_rank = -(-n_train // 2)
    assert per_rank >= 2 and int(last[header.index("global_step")]) == per_rank // 2
