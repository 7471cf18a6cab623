"""Epoch schedules that change the network during training, as training-loop callbacks.

They hang on the one loop's epoch hooks, so they run in supervised fits, warm starts and HISSO
alike. One instance is shared by every loop of a fit, so a warm start's epochs count towards the
schedule and HISSO continues where the warm start stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from psann.training import Callback, TrainingLoop

__all__ = ["W0Warmup", "ProgressiveDepth"]

logger = logging.getLogger(__name__)


def _net(loop: TrainingLoop):
    return getattr(loop.model, "net", loop.model)


class W0Warmup(Callback):
    """Ramp the stem's w0 linearly from ``start_w0`` to ``target_w0`` over ``epochs`` epochs."""

    def __init__(self, target_w0: float, epochs: int, start_w0: float = 1.0) -> None:
        if epochs < 1:
            raise ValueError(f"w0_warmup_epochs must be >= 1 to warm up. Got {epochs!r} instead.")
        self.target_w0 = float(target_w0)
        self.start_w0 = min(float(start_w0), self.target_w0)
        self.epochs = int(epochs)
        self.epochs_seen = 0

    def value(self) -> float:
        fraction = min(1.0, self.epochs_seen / self.epochs)
        return self.start_w0 + (self.target_w0 - self.start_w0) * fraction

    def on_epoch_begin(self, loop: TrainingLoop, epoch: int) -> None:
        _net(loop).set_first_layer_w0(self.value())

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        # The next epoch's w0 is set when it begins: until then the network keeps the w0 this
        # epoch was trained and validated with, so the epoch's checkpoint and the final model
        # are scored with the w0 their val_loss was measured with.
        record["first_layer_w0"] = _net(loop).first_layer_w0
        self.epochs_seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_seen = int(state["epochs_seen"])


class ProgressiveDepth(Callback):
    """Grow a network with ``add_blocks`` by one block every ``interval`` epochs up to ``max_depth``."""

    def __init__(self, max_depth: int, interval: int) -> None:
        if interval < 1:
            raise ValueError(f"progressive_depth_interval must be >= 1. Got {interval!r} instead.")
        self.max_depth = int(max_depth)
        self.interval = int(interval)
        self.epochs_seen = 0

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        self.epochs_seen += 1
        net = _net(loop)
        if self.epochs_seen % self.interval == 0 and net.depth < self.max_depth:
            loop.add_parameters(net.add_blocks(1))
            logger.info("progressive depth: grew to %d blocks after epoch %d", net.depth, record["epoch"])
        record["depth"] = net.depth

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_seen = int(state["epochs_seen"])
