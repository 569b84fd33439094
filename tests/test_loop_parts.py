"""The training loop's parts: the run state and its end-of-epoch decisions, the epoch tally and its running
figures, the callbacks (progress bar, CSV log)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from train.callbacks import CSV_LOG, Callback, CsvLog, ProgressBar, default_callbacks
from train.loop import LoopConfig, Stage, fit
from train.loop_state import EpochTally, HostRows, RunState, end_of_epoch
from train.metrics import Metric, accuracy_metric, kappa_metric, micro_f1_metric

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ end-of-epoch decisions


def scripted(val_losses, patience, stage_end=99, total=99, partial=()):
    """Run ``end_of_epoch`` over a sequence of validation losses; the outcomes and the states after each."""
    state, seen = RunState(), []
    for k, loss in enumerate(val_losses):
        outcome = end_of_epoch(state, loss, k in partial, patience, stage_end, total)
        seen.append((outcome, RunState(**{**state.to_dict(), "history": []})))
        if outcome.stopped_early or state.finished:
            break
    return state, seen


def test_best_epoch_and_patience_stop_on_a_scripted_sequence():
    state, seen = scripted([1.0, 0.8, 0.9, 0.85, 0.95, 0.1], patience=3, stage_end=10)
    assert [o.improved for o, _ in seen] == [True, True, False, False, False]
    assert [s.bad_epochs for _, s in seen] == [0, 0, 1, 2, 3]
    assert [o.stopped_early for o, _ in seen] == [False] * 4 + [True]
    assert (state.best_val_loss, state.best_epoch) == (0.8, 2)
    assert state.epoch == 10 and state.batch == 0  # on to the next stage's first epoch
    assert not state.finished


def test_a_better_loss_resets_patience_and_the_run_finishes_at_its_length():
    state, seen = scripted([1.0, 1.1, 0.5, 0.6, 0.7], patience=3, total=5)
    assert [s.bad_epochs for _, s in seen] == [0, 1, 0, 1, 2]
    assert [s.epoch for _, s in seen] == [1, 2, 3, 4, 5]
    assert state.best_epoch == 3 and state.finished and not seen[-1][0].stopped_early
    # The run's last epoch is also its stage's end: finished, not stopped early.
    state, seen = scripted([1.0, 2.0], patience=1, stage_end=2, total=2)
    assert seen[-1][0].stopped_early and state.finished


def test_a_partial_epoch_keeps_its_place_and_the_patience_counter():
    state = RunState(epoch=4, batch=3, best_val_loss=0.5, best_epoch=2, bad_epochs=2)
    outcome = end_of_epoch(state, 0.9, partial=True, patience=3, stage_end=10, total_epochs=10)
    assert not outcome.improved and not outcome.stopped_early
    assert (state.epoch, state.batch, state.bad_epochs) == (4, 3, 2)  # resumed at the same batch
    outcome = end_of_epoch(state, 0.4, partial=True, patience=3, stage_end=10, total_epochs=10)
    assert outcome.improved and (state.best_epoch, state.bad_epochs) == (5, 2)  # best counts, patience stays


def test_nan_loss_is_never_best():
    state, seen = scripted([float("nan"), float("nan")], patience=2)
    assert not any(o.improved for o, _ in seen) and seen[-1][0].stopped_early and state.best_epoch == -1


def test_run_state_round_trips_as_the_checkpoint_json():
    state = RunState(epoch=3, batch=1, global_step=7, stage=1, best_val_loss=0.25, best_epoch=2, bad_epochs=1,
                     history=[{"epoch": 1, "val_loss": 0.25}], finished=False)
    saved = json.loads(json.dumps(state.to_dict()))
    assert list(saved) == ["epoch", "batch", "global_step", "stage", "best_val_loss", "best_epoch", "bad_epochs",
                           "history", "finished",  # the keys (and order) of state.json before RunState
                           "best_score"]  # selection on a metric (issue 19)
    assert RunState.from_dict(saved) == state
    fresh = RunState.from_dict(json.loads(json.dumps(RunState().to_dict())))
    assert fresh.best_val_loss == math.inf and fresh.best_score == -math.inf
    del saved["best_score"]  # a state.json written before the field
    assert RunState.from_dict(saved).best_score == -math.inf


def scored(val_losses, scores, patience, total=99):
    """``end_of_epoch`` over validation losses and selection scores (higher is better)."""
    state, seen = RunState(), []
    for loss, score in zip(val_losses, scores):
        outcome = end_of_epoch(state, loss, False, patience, 99, total, score=score)
        seen.append(outcome)
        if outcome.stopped_early or state.finished:
            break
    return state, seen


def test_selecting_on_a_score_picks_its_epoch_where_the_loss_disagrees():
    # The loss falls throughout (its best: epoch 5), kappa peaks at epoch 2: the epoch, the patience and the
    # early stop follow kappa; best_val_loss is the loss *of that epoch*.
    state, seen = scored([1.0, 0.9, 0.8, 0.7, 0.6], [0.2, 0.6, 0.5, 0.4, 0.3], patience=3)
    assert [o.improved for o in seen] == [True, True, False, False, False]
    assert seen[-1].stopped_early and (state.best_epoch, state.best_score, state.best_val_loss) == (2, 0.6, 0.9)
    # A tie in the score goes to the lower loss; a NaN score is never best.
    state, seen = scored([1.0, 0.9, 0.8], [0.5, 0.5, float("nan")], patience=5, total=3)
    assert [o.improved for o in seen] == [True, True, False] and state.best_epoch == 2 and state.bad_epochs == 1
    # Without a score (None) the loss decides, as before.
    state, _ = scored([1.0, 0.9, 0.8], [None] * 3, patience=5, total=3)
    assert state.best_epoch == 3 and state.best_score == -math.inf


class ScriptedScore:
    """A 'kappa' whose validation values follow a script, one per call (one call per epoch)."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def metric(self) -> Metric:
        def fn(outputs, targets):
            self.calls += 1
            return self.values[self.calls - 1]

        return Metric("quadratic_kappa", fn)


def disagreeing_fit(out, epochs, scores, resume=False, max_steps=None, select_on="metric"):
    """Trained on one labelling, validated on the opposite: the validation loss only rises (best by loss: epoch
    1), while the scripted validation kappa peaks later."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 2
    x = (torch.where(y.bool(), 170.0, 80.0).view(-1, 1, 1, 1) + torch.randn(24, 3, 8, 8, generator=g) * 20)
    x = x.clamp(0, 255).to(torch.uint8)
    train, val = torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, 1 - y)
    cfg = LoopConfig(out_dir=out, batch_size=8, progress=False, patience=3, resume=resume, max_steps=max_steps,
                     select_on=select_on, select_metric=scores.metric() if select_on == "metric" else None)
    res = fit(model, nn.CrossEntropyLoss(), train, val, cfg, [Stage("all", epochs, 0.05)], metric=accuracy_metric())
    return model, res


def test_fit_selects_the_kappa_epoch_keeps_its_weights_and_resumes_it(tmp_path):
    from safetensors.torch import load_file

    kappas = [0.1, 0.7, 0.3, 0.5, 0.2, 0.1, 0.1]
    by_loss = disagreeing_fit(tmp_path / "loss", 6, ScriptedScore(kappas), select_on="loss")[1]
    assert by_loss.best_epoch == 1 and by_loss.selected_on == "val_loss"  # the loss only rises
    model, res = disagreeing_fit(tmp_path / "full", 6, ScriptedScore(kappas))
    losses = [r["val_loss"] for r in res.history]
    assert losses[1] > losses[0]  # loss and kappa disagree: kappa's epoch 2 is not the loss's best
    assert [r["val_quadratic_kappa"] for r in res.history] == kappas[:5]  # logged next to val_accuracy
    assert "val_accuracy" in res.history[0]
    assert (res.best_epoch, res.selected_on, res.best_score) == (2, "val_quadratic_kappa", 0.7)
    assert res.stopped_early and len(res.history) == 5  # patience 3 counted from kappa's best
    assert res.best_val_loss == pytest.approx(losses[1])
    best = load_file(str(tmp_path / "full" / "checkpoints" / "best.safetensors"))
    for name, tensor in model.state_dict().items():  # the kappa epoch's weights restored
        assert torch.equal(best[name], tensor)
    v_loss = nn.functional.cross_entropy(torch.from_numpy(res.val_outputs), torch.from_numpy(res.val_targets))
    assert v_loss.item() == pytest.approx(losses[1], rel=1e-4)

    # Interrupted after epoch 3 (max_steps), resumed: the best stays kappa's epoch 2, and the run ends as the
    # uninterrupted one did.
    scores = ScriptedScore(kappas)
    _, first = disagreeing_fit(tmp_path / "resumed", 6, scores, max_steps=9)
    assert first.best_epoch == 2 and len(first.history) == 3
    _, second = disagreeing_fit(tmp_path / "resumed", 6, scores, resume=True)
    assert second.resumed_from["epoch"] == 3
    assert (second.best_epoch, second.best_score, len(second.history)) == (2, 0.7, 5) and second.stopped_early
    assert second.best_val_loss == pytest.approx(res.best_val_loss)


def test_an_old_state_json_without_the_score_resumes_at_its_logged_best(tmp_path):
    from train.checkpoint import Checkpointer

    kappas = [0.1, 0.7, 0.3, 0.5, 0.2, 0.1]
    scores = ScriptedScore(kappas)
    disagreeing_fit(tmp_path, 6, scores, max_steps=9)
    state_file = Checkpointer(tmp_path).latest() / "state.json"
    saved = json.loads(state_file.read_text())
    del saved["best_score"]  # as written before RunState.best_score
    state_file.write_text(json.dumps(saved))
    _, res = disagreeing_fit(tmp_path, 6, scores, resume=True)
    # The best epoch's kappa comes back from its logged row (0.7), so epoch 4's 0.5 does not replace it.
    assert (res.best_epoch, res.best_score) == (2, 0.7) and len(res.history) == 5


def test_select_on_is_checked():
    with pytest.raises(ValueError, match="select_on"):
        LoopConfig(out_dir=".", select_on="kappa")


# ------------------------------------------------------------------------------------ the epoch tally


def batches(n: int, task: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        b = 1 + k % 4
        if task == "multilabel":
            yield torch.randn(b, 3, generator=g), (torch.rand(b, 3, generator=g) > 0.5).float()
        elif task == "grade":
            yield torch.randn(b, 1, generator=g) * 2 + 2, torch.randint(0, 5, (b,), generator=g).float()
        else:
            yield torch.randn(b, 4, generator=g), torch.randint(0, 4, (b,), generator=g)


@pytest.mark.parametrize("task, metric", [("multiclass", accuracy_metric()), ("multilabel", micro_f1_metric()),
                                          ("grade", kappa_metric("grade-regression"))])
def test_the_running_metric_equals_the_metric_of_all_outputs_concatenated(task, metric):
    tally, outs, tgts, losses = EpochTally(), [], [], []
    for k, (out, target) in enumerate(batches(40, task)):
        loss = out.float().square().mean()
        tally.add(loss, out, target)
        outs.append(out)
        tgts.append(target)
        losses.append(loss)
        if k % 3 == 0 or k == 39:  # asked now and then, as the bar does
            assert tally.score(metric) == metric(torch.cat(outs).numpy(), torch.cat(tgts).numpy())
            assert tally.running_loss() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6)
    assert tally.mean_loss() == torch.stack(losses).mean().item()  # the epoch's figure: exactly the old one
    assert (tally.batches, tally.images) == (40, sum(len(t) for t in tgts))


def test_an_empty_tally_has_no_figures():
    tally = EpochTally()
    assert math.isnan(tally.mean_loss()) and math.isnan(tally.running_loss()) and math.isnan(tally.mean_localisation())
    assert math.isnan(tally.score(accuracy_metric()))


def test_host_rows_grow_without_losing_rows():
    rows, parts = HostRows(), []
    for k in range(50):
        part = np.full((k % 7 + 1, 2), k, np.float32)
        rows.append(part)
        parts.append(part)
    assert np.array_equal(rows.view(), np.concatenate(parts)) and rows.view().dtype == np.float32


def test_the_bar_computes_the_metric_a_logarithmic_number_of_times():
    calls = []
    counted = Metric("acc", lambda o, t: calls.append(len(t)) or float((o.argmax(1) == t).mean()))
    bar, tally, state = ProgressBar(counted), EpochTally(), RunState()
    bar.epoch_start("epoch 1/1", 0, 2000)
    for out, target in batches(2000, "multiclass"):
        tally.add(out.square().mean(), out, target)
        state.batch += 1
        bar.batch_end(state, tally)
    bar.train_end()
    # Every 5 batches early on, then whenever the epoch has grown by a tenth: rows scored ~ linear, not quadratic.
    assert len(calls) < 80 and sum(calls) < 25 * tally.images


# ------------------------------------------------------------------------------------ callbacks in fit


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def epoch_start(self, title, done, batches):
        self.events.append(("start", title, done, batches))

    def batch_end(self, state, tally):
        self.events.append(("batch", state.batch))

    def train_end(self):
        self.events.append(("train_end",))

    def epoch_end(self, row, state):
        self.events.append(("end", row["epoch"], len(state.history)))


def tiny_fit(tmp_path, progress: bool, recorder=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randint(0, 255, (12, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(12) % 2
    ds = torch.utils.data.TensorDataset(x, y)
    return fit(model, nn.CrossEntropyLoss(), ds, ds, LoopConfig(out_dir=tmp_path, batch_size=4, progress=progress),
               [Stage("all", 2, 0.01)], metric=accuracy_metric(), callbacks=[recorder] if recorder else ())


def test_fit_calls_the_callbacks_in_order_and_logs_csv(tmp_path, capsys):
    rec = Recorder()
    res = tiny_fit(tmp_path, progress=True, recorder=rec)
    epoch1 = [("start", "all epoch 1/2", 0, 3), ("batch", 1), ("batch", 2), ("batch", 3), ("train_end",), ("end", 1, 1)]
    assert rec.events[:6] == epoch1 and rec.events[6][:2] == ("start", "all epoch 2/2") and rec.events[-1] == ("end", 2, 2)
    rows = list(csv.DictReader((tmp_path / CSV_LOG).open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[1]["train_loss"]) == res.history[1]["train_loss"]
    assert "epoch=2 stage=all" in capsys.readouterr().out  # the epoch line


def test_callbacks_only_on_the_main_rank(tmp_path):
    assert default_callbacks(tmp_path, True, False, None) == []
    quiet = default_callbacks(tmp_path, False, True, None)
    assert not any(isinstance(c, ProgressBar) for c in quiet) and any(isinstance(c, CsvLog) for c in quiet)
