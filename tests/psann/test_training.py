"""The one training loop: LR schedule, early stopping, callbacks, determinism, stateful models."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from psann import PSANNRegressor
from psann.supervised import SupervisedPhase
from psann.training import Callback, LoopConfig, TrainingLoop, lr_at_step

CPU = torch.device("cpu")


def _data(n=96, features=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = np.sin(X.sum(axis=1)).astype(np.float32)
    return X, y


def _small(**kwargs):
    base = dict(hidden_layers=1, hidden_units=8, epochs=3, batch_size=32, random_state=0, device="cpu")
    base.update(kwargs)
    return PSANNRegressor(**base)


class Recorder(Callback):
    def __init__(self):
        self.begin_info = None
        self.epochs_begun = []
        self.records = []
        self.ended = 0

    def on_train_begin(self, loop, info):
        self.begin_info = info

    def on_epoch_begin(self, loop, epoch):
        self.epochs_begun.append(epoch)

    def on_epoch_end(self, loop, record):
        self.records.append(record)

    def on_train_end(self, loop):
        self.ended += 1


# -- learning-rate schedule ------------------------------------------------------------------------


def test_constant_schedule_with_warmup_ramps_linearly_then_holds():
    config = LoopConfig(epochs=2, lr=0.1, warmup_epochs=1, lr_schedule="constant")
    lrs = [lr_at_step(config, step, steps_per_epoch=4) for step in range(8)]
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1])


def test_cosine_schedule_follows_half_a_cosine_per_step():
    config = LoopConfig(epochs=2, lr=1.0, lr_schedule="cosine")
    lrs = [lr_at_step(config, step, steps_per_epoch=2) for step in range(4)]
    expected = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx(expected)
    assert lrs == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)


def test_linear_schedule_with_warmup_decays_to_the_floor():
    config = LoopConfig(epochs=3, lr=1.0, lr_schedule="linear", warmup_epochs=1, min_lr_ratio=0.1)
    lrs = [lr_at_step(config, step, steps_per_epoch=2) for step in range(6)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.775, 0.55, 0.325])


def test_fractional_warmup_is_interpolated_per_step():
    config = LoopConfig(epochs=4, lr=1.0, warmup_epochs=0.5)
    assert [lr_at_step(config, s, steps_per_epoch=4) for s in range(3)] == pytest.approx([0.5, 1.0, 1.0])


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_epoch_records_carry_the_lr_of_the_epochs_last_step(schedule):
    recorder = Recorder()
    X, y = _data(n=64)
    est = _small(epochs=4, batch_size=16, lr=0.01, lr_schedule=schedule, warmup_epochs=1.0).fit(X, y, callbacks=[recorder])
    config = LoopConfig(epochs=4, lr=0.01, lr_schedule=schedule, warmup_epochs=1.0)
    expected = [lr_at_step(config, 4 * epoch - 1, 4) for epoch in range(1, 5)]
    assert [r["lr"] for r in est.history_] == pytest.approx(expected)


def test_loop_config_errors_name_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'cosine', 'linear'\]. Got 'step'"):
        LoopConfig(epochs=1, lr_schedule="step")
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1. Got 0"):
        LoopConfig(epochs=0)
    with pytest.raises(ValueError, match=r"amp_dtype must be one of \['float16', 'bfloat16'\]"):
        LoopConfig(epochs=1, amp_dtype="int8")


# -- early stopping ----------------------------------------------------------------------------------


class ScriptedPhase:
    """Moves the weights every epoch and reports a scripted validation loss."""

    name = "scripted"
    steps_per_epoch = 1

    def __init__(self, val_losses):
        self.val_losses = list(val_losses)
        self.calls = 0

    def describe(self):
        return {}

    def train_epoch(self, loop, epoch):
        loss = sum(p.sum() for p in loop.model.parameters())
        loop.optimizer_step(loss)
        return {"train_loss": float(loss.detach())}

    def validate(self, loop):
        self.calls += 1
        return {"val_loss": self.val_losses[self.calls - 1]}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Snapshots(Callback):
    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, loop, record):
        self.weights[record["epoch"]] = copy.deepcopy(loop.model.state_dict())


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    model = nn.Linear(3, 1)
    snapshots = Snapshots()
    config = LoopConfig(epochs=10, lr=0.1, early_stopping=True, patience=2)
    loop = TrainingLoop(model, config, device=CPU, callbacks=[snapshots])
    history = loop.run(ScriptedPhase([3.0, 1.0, 2.0, 4.0, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # val got worse twice after epoch 2
    assert loop.best_epoch == 2
    assert [r["is_best"] for r in history] == [True, True, False, False]
    assert "early stopping" in loop.stop_reason
    for key, value in loop.model.state_dict().items():
        assert torch.equal(value, snapshots.weights[2][key])
    assert not torch.equal(loop.model.weight, snapshots.weights[4]["weight"])


def test_estimator_early_stopping_restores_best_weights_when_validation_gets_worse():
    X, y = _data(n=128)
    # Validation targets are the negated training targets: fitting the training data makes the
    # validation loss worse, so the best epoch is early and the loop must stop and roll back.
    snapshots = Snapshots()
    est = _small(epochs=40, lr=0.02, early_stopping=True, patience=3, hidden_units=16).fit(
        X, y, validation_data=(X, -y), callbacks=[snapshots]
    )
    assert len(est.history_) < 40
    assert est.best_epoch_ == min(range(1, len(est.history_) + 1), key=lambda e: est.history_[e - 1]["val_loss"])
    for key, value in est.model_.state_dict().items():
        assert torch.equal(value, snapshots.weights[est.best_epoch_][key])
    best_val = est.history_[est.best_epoch_ - 1]["val_loss"]
    assert np.mean((est.predict(X) + y) ** 2) == pytest.approx(best_val, rel=1e-4)


# -- callbacks ------------------------------------------------------------------------------------


def test_callbacks_receive_every_epoch_record_in_order():
    recorder = Recorder()
    X, y = _data()
    est = _small(epochs=4).fit(X, y, validation_data=(X, y), callbacks=[recorder])
    assert recorder.epochs_begun == [1, 2, 3, 4]
    assert [r["epoch"] for r in recorder.records] == [1, 2, 3, 4]
    assert recorder.records == list(est.history_)
    assert recorder.ended == 1
    for record in recorder.records:
        assert {"train_loss", "val_loss", "val_mse", "lr", "phase", "epoch_seconds"} <= set(record)
    assert recorder.begin_info["phase"] == "supervised"
    assert recorder.begin_info["shuffle"] is True


def test_request_stop_ends_training_after_the_current_epoch():
    class StopAtTwo(Callback):
        def on_epoch_end(self, loop, record):
            if record["epoch"] == 2:
                loop.request_stop("enough")

    X, y = _data()
    est = _small(epochs=10).fit(X, y, callbacks=[StopAtTwo()])
    assert [r["epoch"] for r in est.history_] == [1, 2]


def test_history_is_json_serialisable():
    import json

    X, y = _data()
    est = _small(epochs=2).fit(X, y, validation_data=(X, y))
    assert json.loads(json.dumps(list(est.history_)))[1]["epoch"] == 2


# -- determinism and RNG hygiene -------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_predictions():
    X, y = _data()
    a = _small(random_state=7).fit(X, y)
    torch.manual_seed(999)  # the caller's global RNG must not matter
    b = _small(random_state=7).fit(X, y)
    for key, value in a.model_.state_dict().items():
        assert torch.equal(value, b.model_.state_dict()[key]), key
    assert np.array_equal(a.predict(X), b.predict(X))
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]


def test_different_seeds_give_different_weights():
    X, y = _data()
    a = _small(random_state=1).fit(X, y)
    b = _small(random_state=2).fit(X, y)
    assert not np.array_equal(a.predict(X), b.predict(X))


def test_fit_leaves_the_global_torch_rng_state_unchanged():
    X, y = _data()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _small().fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)
    # ... and a ResPSANN with DropPath (which draws from the global RNG while training) too.
    from psann import ResPSANNRegressor

    ResPSANNRegressor(hidden_layers=2, hidden_units=8, epochs=2, drop_path=0.3, random_state=0, device="cpu").fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)


# -- stateful models -------------------------------------------------------------------------------


class TinyStateful(nn.Module):
    """Accumulates a running state across calls; records what it saw."""

    stateful = True

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.dim_in, self.dim_out = dim_in, dim_out
        self.resets = 0
        self.seen = []
        self.state = None

    def reset_state(self):
        self.resets += 1
        self.state = None

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        out = self.linear(x)
        if self.state is not None and self.state.shape == out.shape:
            out = out + 0.1 * self.state
        self.state = out.detach()
        return out


class StatefulRegressor(PSANNRegressor):
    def _build_network(self, dim_in, dim_out):
        return TinyStateful(dim_in, dim_out)


def test_stateful_models_are_never_shuffled_and_say_so():
    X, y = _data(n=64)
    recorder = Recorder()
    est = StatefulRegressor(epochs=2, batch_size=16, random_state=0, device="cpu", standardize=False)
    est.fit(X, y, callbacks=[recorder])
    assert recorder.begin_info["shuffle"] is False
    assert recorder.begin_info["stateful"] is True
    seen = est.model_.net.seen
    assert len(seen) == 8
    for epoch in range(2):
        assert torch.equal(torch.cat(seen[epoch * 4 : epoch * 4 + 4]), torch.from_numpy(X))


@pytest.mark.parametrize("cadence, expected_resets", [("batch", 3 * 4 + 3), ("epoch", 3 + 3), ("none", 0)])
def test_stateful_state_is_reset_per_cadence(cadence, expected_resets):
    # 3 epochs of 4 batches with validation: "batch" resets before every batch and before each
    # validation pass; "epoch" once per epoch and before validation; "none" never.
    torch.manual_seed(0)
    model = TinyStateful(2, 1)
    X, y = torch.randn(64, 2), torch.randn(64, 1)
    phase = SupervisedPhase(
        X, y, batch_size=16, generator=torch.Generator().manual_seed(0), X_val=X, y_val=y,
        state_reset=cadence, stateful=True,
    )
    TrainingLoop(model, LoopConfig(epochs=3), device=CPU).run(phase)
    assert model.resets == expected_resets
    assert all(torch.equal(torch.cat(model.seen[e * 4 : e * 4 + 4]), X) for e in range(3))


def test_unknown_state_reset_cadence_is_refused():
    with pytest.raises(ValueError, match="state_reset must be 'batch', 'epoch' or 'none'. Got 'step'"):
        SupervisedPhase(torch.zeros(4, 1), torch.zeros(4, 1), batch_size=2, generator=torch.Generator(), state_reset="step")


def test_diverging_training_raises_instead_of_propagating_nan():
    from psann.supervised import check_finite_loss

    with pytest.raises(FloatingPointError, match="epoch 3: loss is nan"):
        check_finite_loss(float("nan"), phase="supervised", epoch=3)


# -- resume ----------------------------------------------------------------------------------------


def _grow_and_stop_run(val_losses, capture_epoch=None, resume_state=None):
    """A WaveResNet grown by ProgressiveDepth, with scripted validation losses."""
    from psann.models import WaveResNet
    from psann.schedules import ProgressiveDepth

    torch.manual_seed(0)
    model = WaveResNet(2, 1, hidden_units=4, depth=1)
    captured = {}

    class Capture(Callback):
        def on_epoch_end(self, loop, record):
            if record["epoch"] == capture_epoch:
                captured["state"] = loop.snapshot()

    phase = ScriptedPhase(val_losses)
    loop = TrainingLoop(model, LoopConfig(epochs=len(val_losses), lr=0.01), device=CPU,
                        callbacks=[ProgressiveDepth(max_depth=4, interval=1), Capture()])
    if resume_state is not None:
        loop.restore(resume_state, phase)
        phase.calls = resume_state.epoch
    loop.run(phase)
    return loop.model, captured.get("state")


def test_resume_after_progressive_growth_restores_the_same_best_model():
    # The best epoch (2) is before the capture (3) and the net grew in between: the resumed run
    # must end on the same best-epoch model as the uninterrupted one.
    losses = [2.0, 1.0, 3.0, 4.0, 5.0]
    full, state = _grow_and_stop_run(losses, capture_epoch=3)
    resumed, _ = _grow_and_stop_run(losses, resume_state=state)
    assert full.depth == resumed.depth == 2  # depth 1 grew to 2 after epoch 1; best epoch 2 ran at depth 2
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
