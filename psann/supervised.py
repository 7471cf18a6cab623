"""The supervised phase of the training loop: minibatch MSE over (X, y), and the finite-loss check.

``SupervisedPhase`` is what a regression fit and the HISSO warm start run inside
``psann.training.TrainingLoop``; the HISSO phase (``psann.hisso.trainer``) shares
``check_finite_loss``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from psann.training import TrainingLoop

__all__ = ["SupervisedPhase", "check_finite_loss"]


def check_finite_loss(value: float, *, phase: str, epoch: int) -> None:
    """Raise when an epoch's loss is NaN/inf, so divergence never propagates silently."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{phase} epoch {epoch}: loss is {value} (training diverged); lower lr or enable grad_clip"
        )


class SupervisedPhase:
    """Minibatch regression on device tensors with MSE.

    Stateless models are shuffled each epoch with a seeded generator; stateful models (those with
    ``stateful = True`` and a ``reset_state()`` method) are never shuffled, so rows are seen in time
    order, and their state is reset (``state_reset``):

    - ``"batch"``: before every minibatch (each batch starts from the initial state);
    - ``"epoch"``: once at the start of every epoch (the state runs through the whole series);
    - ``"none"``: never (the state carries over from epoch to epoch, and into validation).

    With ``"batch"`` or ``"epoch"`` validation starts from a reset state too. The estimators pass
    their ``state_reset`` parameter (default ``"epoch"``); the loop commits the state after every
    optimiser step (``TrainingLoop.optimizer_step``).
    """

    name = "supervised"

    def __init__(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        generator: torch.Generator,
        X_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        state_reset: str = "batch",
        phase_name: str = "supervised",
        stateful: bool = False,
    ) -> None:
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y lengths differ: X {tuple(X.shape)}, y {tuple(y.shape)}")
        self.X, self.y = X, y
        self.X_val, self.y_val = X_val, y_val
        self.batch_size = max(1, min(int(batch_size), X.shape[0]))
        self.generator = generator
        self.name = phase_name
        self.stateful = stateful
        if state_reset not in ("batch", "epoch", "none"):
            raise ValueError(f"state_reset must be 'batch', 'epoch' or 'none'. Got {state_reset!r} instead.")
        self.state_reset = state_reset
        self.shuffle = not stateful
        self.steps_per_epoch = math.ceil(X.shape[0] / self.batch_size)

    def describe(self) -> dict[str, Any]:
        return {
            "train_samples": int(self.X.shape[0]),
            "val_samples": int(self.X_val.shape[0]) if self.X_val is not None else 0,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "shuffle": self.shuffle,
            "stateful": self.stateful,
            "state_reset": self.state_reset if self.stateful else None,
        }


    def train_epoch(self, loop: TrainingLoop, epoch: int) -> dict[str, float]:
        n = self.X.shape[0]
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.X.device, non_blocking=True)
        else:
            order = None
        if self.stateful and self.state_reset == "epoch":
            loop.model.reset_state()
        total = torch.zeros((), device=self.X.device)
        started = time.perf_counter()
        for start in range(0, n, self.batch_size):
            with loop.timers.section("data"):
                if order is None:
                    xb, yb = self.X[start : start + self.batch_size], self.y[start : start + self.batch_size]
                else:
                    idx = order[start : start + self.batch_size]
                    xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
            if self.stateful and self.state_reset == "batch":
                loop.model.reset_state()
            with loop.timers.section("forward"):
                with loop.autocast():
                    pred = loop.forward(xb)
                    loss = torch.mean((pred.float() - yb) ** 2)
            loop.optimizer_step(loss)
            total += loss.detach() * xb.shape[0]
        train_loss = float(total) / n
        check_finite_loss(train_loss, phase=self.name, epoch=epoch)
        seconds = time.perf_counter() - started
        return {"train_loss": train_loss, "samples_per_second": n / seconds if seconds > 0 else None}

    def validate(self, loop: TrainingLoop) -> dict[str, float]:
        if self.X_val is None or self.y_val is None:
            return {}
        if self.stateful and self.state_reset != "none":
            loop.model.reset_state()
        preds = []
        for start in range(0, self.X_val.shape[0], self.batch_size * 8):
            with loop.autocast():
                preds.append(loop.model(self.X_val[start : start + self.batch_size * 8]).float())
        mse = float(torch.mean((torch.cat(preds) - self.y_val) ** 2))
        return {"val_loss": mse, "val_mse": mse}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
