"""HISSO updates never wait for the host: every device-to-host read happens once per epoch."""

import numpy as np
import pytest
import torch

from psann.estimators import PSANNRegressor, WaveResNetRegressor
from _faults import InfGradientAt
from psann.training import Callback

# The ways a tensor's value reaches Python: each is a host synchronisation on a GPU.
SYNC_ENTRY_POINTS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class CountSyncs(Callback):
    """Counts host reads between the start and the end of each epoch (train, validate, record)."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.counts = []
        self.active = False
        for name in SYNC_ENTRY_POINTS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def wrapper(tensor, *args, **kwargs):
            if self.active:
                self.counts[-1] += 1
            return original(tensor, *args, **kwargs)

        return wrapper

    def on_epoch_begin(self, loop, epoch):
        if loop.config.phase == "hisso":
            self.counts.append(0)
            self.active = True

    def on_epoch_end(self, loop, record):
        self.active = False


def _syncs_per_epoch(monkeypatch, updates_per_epoch, **estimator_kwargs):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    prices = np.cumprod(1 + 0.01 * rng.normal(size=(120, 2)), axis=0).astype(np.float32)
    counter = CountSyncs(monkeypatch)
    est = WaveResNetRegressor(depth=1, epochs=3, hidden_units=8, random_state=0, device="cpu", **estimator_kwargs)
    opts = dict(window=8, batch_episodes=4, updates_per_epoch=updates_per_epoch, val_episodes=8)
    est.fit(X, hisso=True, hisso_options=opts, context=prices, validation_data=(X, None, prices), callbacks=[counter])
    monkeypatch.undo()
    return counter.counts, est


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_host_reads_per_epoch_do_not_grow_with_the_updates(monkeypatch, amp):
    extra = dict(mixed_precision=True, amp_dtype="bfloat16") if amp else {}
    few, est = _syncs_per_epoch(monkeypatch, 2, **extra)
    many, _ = _syncs_per_epoch(monkeypatch, 10, **extra)
    assert est.amp_["enabled"] is amp
    # Epochs 2.. (the first also pays one-off set-up): the same reads with 2 or 10 updates.
    assert few[1:] == many[1:], (few, many)
    assert max(many[1:]) < 10  # a handful per epoch: the reward statistics, validation, the skip counter


def test_a_skipped_amp_step_leaves_the_weights_unchanged():
    X = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
    y = X.sum(axis=1)

    snapshots = []

    class Weights(Callback):
        def on_train_begin(self, loop, info):
            original = loop.optimizer_step

            def step(loss):
                before = [p.detach().clone() for p in loop.model.parameters()]
                original(loss)
                snapshots.append(all(torch.equal(b, p) for b, p in zip(before, loop.model.parameters())))

            loop.optimizer_step = step

    est = PSANNRegressor(hidden_layers=1, hidden_units=8, epochs=1, batch_size=8, random_state=0, device="cpu",
                         mixed_precision=True, amp_dtype="bfloat16")
    est.fit(X, y, callbacks=[Weights(), InfGradientAt(step=1)])
    assert snapshots == [False, True, False, False]  # update 1 (0-based) was skipped on the device
    assert est.amp_["skipped_steps"] == 1
