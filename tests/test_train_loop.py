"""The training loop's mechanics on tiny models and generated tensors: determinism, stages, early
stopping, plateau, checkpoints, kill + resume; plus the losses, augmentations and metrics it uses."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import Dataset, TensorDataset

from train import augment as aug
from train.callbacks import write_csv
from train.checkpoint import Checkpointer
from train.loop import LoopConfig, ResumableBatchSampler, Stage, fit
from train.losses import FocalLoss, WeightedBCE, focal_loss, inverse_frequency_weights
from train.metrics import accuracy_metric, choose_thresholds, micro_f1_metric

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tiny(nn.Module):
    """A conv 'backbone' and a linear 'head', like zoo's BackboneHeadNet."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))

    def forward(self, x):
        return self.head(self.backbone(x))


def bright_dark_set(n: int = 24, size: int = 16, seed: int = 0, flip: bool = False) -> TensorDataset:
    """Bright images are class 1, dark ones class 0 (flip=True swaps the labels)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    base = torch.where(y.bool(), 170.0, 80.0).view(-1, 1, 1, 1)
    x = (base + torch.randn(n, 3, size, size, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    return TensorDataset(x, 1 - y if flip else y)


def cfg(tmp_path, **kw) -> LoopConfig:
    return LoopConfig(out_dir=tmp_path, batch_size=kw.pop("batch_size", 8), progress=False, **kw)


def make_model(seed: int = 1) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def test_fit_learns_and_logs(tmp_path):
    ds = bright_dark_set()
    model = make_model()
    res = fit(model, nn.CrossEntropyLoss(), ds, ds, cfg(tmp_path), [Stage("all", 6, 0.05)],
              metric=accuracy_metric())
    assert res.global_step == 6 * 3 and res.steps_run == 18
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    assert res.history[-1]["val_accuracy"] == 1.0
    assert res.val_outputs.shape == (24, 2) and (res.val_outputs.argmax(1) == res.val_targets).all()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["epoch", "stage", "global_step", "lr", "train_loss"]
    assert len(rows) == 7
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["dir"]
    state = json.loads((tmp_path / "checkpoints" / latest / "state.json").read_text())
    assert state["finished"] and state["global_step"] == 18


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    def run(seed, sub):
        model = make_model()
        fit(model, nn.CrossEntropyLoss(), bright_dark_set(), None, cfg(tmp_path / sub, seed=seed),
            [Stage("all", 2, 0.05)], augment=aug.Compose([aug.RandomFlip(True, True), aug.GaussianNoise(0.01)]))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(3, "a"), run(3, "b"), run(4, "c")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_frozen_stage_trains_only_the_head(tmp_path):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = fit(model, nn.CrossEntropyLoss(), bright_dark_set(), None, cfg(tmp_path, max_steps=3),
              [Stage("frozen", 1, 0.01, trainable=lambda m: m.head.parameters()), Stage("all", 1, 0.001)])
    after = model.state_dict()
    assert torch.equal(before["backbone.0.weight"], after["backbone.0.weight"])
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])
    assert res.history[0]["stage"] == "frozen" and res.history[0]["lr"] == 0.01
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again after fit


def test_early_stopping_restores_best_and_plateau_lowers_lr(tmp_path):
    # Training on one labelling while validating on the opposite one: validation loss only rises.
    model = make_model()
    res = fit(model, nn.CrossEntropyLoss(), bright_dark_set(), bright_dark_set(flip=True),
              cfg(tmp_path, patience=2, plateau_patience=0, plateau_factor=0.5), [Stage("all", 20, 0.05)])
    assert res.stopped_early and len(res.history) < 20
    assert res.best_epoch == 1
    assert [r["lr"] for r in res.history] == [0.05, 0.05, 0.025]
    best = load_file(str(tmp_path / "checkpoints" / "best.safetensors"))
    assert torch.equal(best["head.2.weight"], model.state_dict()["head.2.weight"])
    v_loss = F.cross_entropy(torch.from_numpy(res.val_outputs), torch.from_numpy(res.val_targets)).item()
    assert v_loss == pytest.approx(res.history[0]["val_loss"], rel=1e-4)


def test_plateau_halves_lr(tmp_path):
    res = fit(make_model(), nn.CrossEntropyLoss(), bright_dark_set(), bright_dark_set(flip=True),
              cfg(tmp_path, patience=99, plateau_patience=0, plateau_factor=0.5), [Stage("all", 3, 0.05)])
    # The row's lr is the one used in that epoch: epoch 2 is the first without improvement.
    assert [r["lr"] for r in res.history] == [0.05, 0.05, 0.025]


def test_batch_sampler_shards_resumes_and_drops_single_tail():
    s = ResumableBatchSampler(list(range(10)), batch_size=3, seed=0)
    s.set_epoch(2)
    full = list(s)
    # 10 = 3 + 3 + 3 + 1: the tail of one is dropped, the other nine are nine different indices, shuffled.
    assert [len(b) for b in full] == [3, 3, 3] and len(s) == s.batches_per_epoch() == 3
    seen = sum(full, [])
    assert len(set(seen)) == 9 and set(seen) < set(range(10)) and seen != sorted(seen)
    assert list(s) == full  # the same (seed, epoch), the same batches
    s11 = ResumableBatchSampler(list(range(11)), batch_size=3, seed=0)
    assert [len(b) for b in s11] == [3, 3, 3, 2]  # a tail of two trains (BatchNorm can), so it stays
    s.set_epoch(2, start_batch=2)
    assert list(s) == full[2:]
    a = ResumableBatchSampler(list(range(7)), 2, seed=1, rank=0, world_size=2)
    b = ResumableBatchSampler(list(range(7)), 2, seed=1, rank=1, world_size=2)
    got = sum(list(a), []) + sum(list(b), [])
    assert set(got) == set(range(7)) and len(got) == 8  # padded to a multiple of the world size


class _ResumeItems(Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(self.delay)  # ~5 s of training in all: time to kill it after the first checkpoint
        g = torch.Generator().manual_seed(i)
        return (torch.rand(3, 8, 8, generator=g) * 255).to(torch.uint8), i % 2


def resume_job(out, resume=False, delay=0.0):
    """The training job of the kill + resume test; its first run is a child process (killed mid-epoch)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(4, 2))
    res = fit(model, nn.CrossEntropyLoss(), _ResumeItems(delay), None,
              LoopConfig(out_dir=out, batch_size=4, checkpoint_every=3, resume=resume, progress=False),
              [Stage("all", 3, 0.01)], augment=aug.GaussianNoise(0.01))
    return model, res


@pytest.mark.slow
def test_kill_mid_epoch_then_resume(tmp_path):
    out = tmp_path / "out"
    # The child imports this module (tests/ is its working directory, so on its sys.path).
    child = "import sys; from test_train_loop import resume_job; resume_job(sys.argv[1], delay=0.04)"
    proc = subprocess.Popen([sys.executable, "-c", child, str(out)], cwd=Path(__file__).parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 600  # a hang guard only: the loop waits for the first checkpoint
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert latest.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in 600 s"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((Checkpointer(out).latest() / "state.json").read_text())
    assert 0 < state["global_step"] < 30, "killed too late: the run had finished"

    model, res = resume_job(out, resume=True)
    assert res.resumed_from == {"epoch": state["epoch"], "batch": state["batch"], "global_step": state["global_step"]}
    assert res.global_step == 30  # 3 epochs x 10 batches, none repeated or skipped
    assert res.steps_run == 30 - state["global_step"]
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    # Same batches, same noise and dropout draws (a seed per step), optimizer state restored:
    # the weights of an uninterrupted run (to rounding: two model instances may run different kernels).
    reference, _ = resume_job(tmp_path / "reference")
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ losses


def test_focal_loss_reduces_to_bce_and_ce_and_focuses_on_hard_examples():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    multi_hot = (torch.rand(6, 4, generator=g) > 0.5).float()
    assert focal_loss(logits, multi_hot, gamma=0.0).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, multi_hot).item(), rel=1e-5)
    idx = torch.tensor([0, 1, 2, 3, 0, 1])
    assert focal_loss(logits, idx, gamma=0.0, task="multiclass").item() == pytest.approx(
        F.cross_entropy(logits, idx).item(), rel=1e-5)
    # γ = 2 shrinks an easy example's loss far more than a hard one's (paper 000 eq. 7).
    easy, hard = torch.tensor([[4.0]]), torch.tensor([[-1.0]])
    one = torch.ones(1, 1)
    ratio_easy = focal_loss(easy, one, gamma=2).item() / focal_loss(easy, one, gamma=0).item()
    ratio_hard = focal_loss(hard, one, gamma=2).item() / focal_loss(hard, one, gamma=0).item()
    assert ratio_easy < 0.001 < 0.5 < ratio_hard
    p = torch.sigmoid(hard).item()
    assert focal_loss(hard, one, alpha=[0.25]).item() == pytest.approx(-0.25 * (1 - p) ** 2 * math.log(p), rel=1e-5)
    assert FocalLoss([1, 2, 3, 4])(logits, multi_hot).item() > 0
    with pytest.raises(ValueError, match="one weight per class"):
        focal_loss(logits, multi_hot, alpha=[1.0, 2.0])


def test_inverse_frequency_weights_and_weighted_bce():
    w = inverse_frequency_weights([10, 30, 0])
    assert w.mean().item() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(3.0) and w[2] == w.max()
    logits, t = torch.zeros(2, 3), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    assert WeightedBCE(torch.tensor([1.0, 1, 1]))(logits, t).item() == pytest.approx(math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="no class has any example"):
        inverse_frequency_weights([0, 0])


# ------------------------------------------------------------------------------------ augmentations


def test_augmentations_do_what_they_say():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(aug.RandomFlip(True, False, p=1.0)(x), x.flip(-1))
    assert torch.equal(aug.RandomFlip(False, True, p=1.0)(x), x.flip(-2))
    assert torch.allclose(aug.RandomAffine(max_rotation=0.0, max_shift=0.0)(x), x, atol=1e-5)
    rot = aug.RandomAffine(max_rotation=math.pi / 4)(torch.ones(8, 1, 33, 33))
    assert rot[:, :, 16, 16].min() > 0.99 and rot[:, :, 0, 0].max() < rot[:, :, 16, 16].min()  # black corners
    grey = torch.full((2, 3, 64, 64), 0.5)
    noisy = aug.GaussianNoise(0.01)(grey)
    assert (noisy - grey).var().item() == pytest.approx(0.01, rel=0.1)
    ramp = torch.linspace(0.2, 0.6, 1000).view(1, 1, 1, 1000).expand(1, 3, 1, 1000)
    out = aug.percentile_rescale(ramp)
    assert out.min().item() == 0.0 and out.max().item() == 1.0 and out.median().item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="low < high"):
        aug.percentile_rescale(ramp, 50, 10)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        aug.GaussianNoise()(torch.rand(3, 8, 8))


def test_thresholds_on_validation_separate_the_classes():
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.35, 0.7], [0.4, 0.6]])
    targets = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])
    thr = choose_thresholds(probs, targets, "youden")
    assert thr[0] == pytest.approx(0.275) and thr[1] == 0.5  # midway between 0.2 and 0.35; class 1: default
    assert choose_thresholds(probs, targets, "f1")[0] == pytest.approx(0.275)
    assert micro_f1_metric()(np.array([[3.0, -3.0]]), np.array([[1, 0]])) == 1.0


def test_write_csv_handles_new_columns(tmp_path):
    write_csv(tmp_path / "m.csv", [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2, "b": 3}])
    assert (tmp_path / "m.csv").read_text().splitlines() == ["epoch,a,b", "1,1,", "2,2,3"]


def test_checkpointer_keeps_one_complete_checkpoint_and_drops_partial_writes(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    ck = Checkpointer(tmp_path)
    assert ck.latest() is None
    (ck.root / "step-00000009-e0001-b000003.tmp").mkdir(parents=True)  # a write killed half-way
    first = ck.save(model, opt, sched, None, {"global_step": 1, "epoch": 0, "batch": 1})
    second = ck.save(model, opt, sched, None, {"global_step": 2, "epoch": 0, "batch": 2})
    assert ck.latest() == second and not first.exists()
    assert [p.name for p in ck.root.iterdir() if p.is_dir()] == [second.name]
    state, training = Checkpointer.load(second, make_model(seed=5), torch.device("cpu"))
    assert state["global_step"] == 2 and "optimizer" in training and "scheduler" in training
    shutil.rmtree(second)  # a pointer to a folder that is gone is no checkpoint
    assert ck.latest() is None
