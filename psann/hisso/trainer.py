"""The HISSO episodic trainer as tensor code: the training-loop phase, actions and reward context.

Each update samples ``batch_episodes`` windows of ``window`` steps at random offsets of the series
(one ``randint`` and one indexed gather on the target device), maps every step through the model,
turns outputs into actions with ``primary_transform``, scores each episode with the reward against
the context aligned with the actions, and steps on ``loss = -mean reward``. Rewards accumulate on the
device and are read once per epoch, so the update loop never synchronises with the host (except the
GradScaler's own check under float16 AMP).

Stateful models reset per episode. An update's episodes go through the model together, in one
forward, so resetting the state before every update (``state_reset="batch"``, the default) starts
every episode from the initial state; validation episodes start from it too. Carrying the state
from one randomly placed window into the next means nothing for the series, so ``"epoch"`` and
``"none"`` (reset once per epoch, or never) are there only for experiments and say so in the log.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from psann.hisso.options import HISSOOptions
from psann.hisso.rewards import RewardStrategy, call_reward
from psann.supervised import check_finite_loss
from psann.training import TrainingLoop

__all__ = ["HISSOPhase", "apply_transform", "resolve_context"]

logger = logging.getLogger(__name__)

# What each HISSOOptions.state_reset means for episodes (recorded in the run's shuffle-policy event).
_STATE_RESET_MEANING = {
    "batch": "episode (before every update; an update's episodes start together from the initial state)",
    "epoch": "epoch (state carried across updates within an epoch)",
    "none": "none (state carried across all updates)",
}


def apply_transform(outputs: torch.Tensor, transform: str) -> torch.Tensor:
    """Map primary outputs (..., M) to actions: softmax allocations, tanh, or identity."""
    if transform == "softmax":
        return torch.softmax(outputs, dim=-1)
    if transform == "tanh":
        return torch.tanh(outputs)
    return outputs


def resolve_context(
    X: torch.Tensor,
    context: torch.Tensor | None,
    *,
    output_dim: int,
    name: str = "context",
) -> tuple[torch.Tensor, str]:
    """Return the reward context aligned with X and where it came from ("context" or "inputs").

    The context's last dim must equal the number of actions M or be 1 (broadcast); anything else is
    an error with both shapes: no silent truncation or averaging.
    """
    if context is None:
        source, ctx = "inputs", X
        if not bool((X > 0).all()):
            raise ValueError(
                f"no {name} (prices) was given, so the inputs are read as price levels, but X has "
                "non-positive values; pass context=prices (run configs: prices_* or context_* keys)"
            )
    else:
        source, ctx = "context", context
    if ctx.dim() == 1:
        ctx = ctx.unsqueeze(1)
    if ctx.dim() != 2 or ctx.shape[0] != X.shape[0]:
        raise ValueError(
            f"{name} must have one row per row of X: X {tuple(X.shape)}, {name} {tuple(ctx.shape)}"
        )
    if ctx.shape[1] not in (1, output_dim):
        raise ValueError(
            f"{name} last dim must equal the number of actions M={output_dim} (or be 1); "
            f"got {name} {tuple(ctx.shape)} for actions (T, {output_dim})"
        )
    return ctx, source


class HISSOPhase:
    """One HISSO epoch = ``updates_per_epoch`` updates of ``batch_episodes`` episodes.

    A stateful model's state is reset per episode (before every update and before validation) with
    ``options.state_reset="batch"``; see the module docstring.
    """

    name = "hisso"

    def __init__(
        self,
        X: torch.Tensor,
        context: torch.Tensor,
        options: HISSOOptions,
        strategy: RewardStrategy,
        *,
        output_dim: int,
        generator: torch.Generator,
        X_val: torch.Tensor | None = None,
        context_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        stateful: bool = False,
    ) -> None:
        self.X, self.context = X, context
        self.options = options
        self.strategy = strategy
        self.output_dim = output_dim
        self.generator = generator
        self.device = X.device
        self.offsets = torch.arange(options.window, device=self.device)
        self.max_start = X.shape[0] - options.window
        self.stateful = stateful
        self.steps_per_epoch = options.updates_per_epoch
        self.episodes_total = 0
        self.X_val, self.context_val, self.y_val = X_val, context_val, y_val
        self.val_index = None
        if X_val is not None:
            val_starts = torch.randint(
                0,
                X_val.shape[0] - options.window + 1,
                (options.val_episodes,),
                generator=torch.Generator().manual_seed(options.eval_seed),
            ).to(self.device)
            self.val_index = val_starts[:, None] + self.offsets[None, :]

    def describe(self) -> dict[str, Any]:
        return {
            "series_steps": int(self.X.shape[0]),
            "val_steps": int(self.X_val.shape[0]) if self.X_val is not None else 0,
            "window": self.options.window,
            "batch_episodes": self.options.batch_episodes,
            "updates_per_epoch": self.options.updates_per_epoch,
            "reward": self.strategy.name,
            "primary_transform": self.options.primary_transform,
            # Episodes are random windows; time order inside each window is never shuffled.
            "shuffle": "random episode offsets; time order within episodes preserved",
            "stateful": self.stateful,
            "state_reset": _STATE_RESET_MEANING[self.options.state_reset] if self.stateful else None,
        }

    def _episode_rewards(self, loop: TrainingLoop, xb: torch.Tensor, cb: torch.Tensor, *, training: bool) -> torch.Tensor:
        batch, window = xb.shape[:2]
        forward = loop.forward if training else loop.model  # compiled graphs serve the updates
        with loop.autocast():
            out = forward(xb.reshape(batch * window, *xb.shape[2:]))
        actions = apply_transform(out.float().reshape(batch, window, self.output_dim), self.options.primary_transform)
        return call_reward(self.strategy.reward_fn, actions, cb, self.options.transition_penalty)

    def train_epoch(self, loop: TrainingLoop, epoch: int) -> dict[str, float]:
        opts = self.options
        device = self.device
        reward_sum = torch.zeros((), device=device)
        reward_sq = torch.zeros((), device=device)
        if self.stateful and opts.state_reset == "epoch":
            loop.model.reset_state()
        started = time.perf_counter()
        for _ in range(opts.updates_per_epoch):
            with loop.timers.section("data"):
                starts = torch.randint(
                    0, self.max_start + 1, (opts.batch_episodes,), generator=self.generator, device=device
                )
                index = starts[:, None] + self.offsets[None, :]
                xb = self.X[index]
                cb = self.context[index]
                if opts.input_noise > 0:
                    noise = torch.randn(xb.shape, generator=self.generator, device=device)
                    xb = xb + opts.input_noise * noise
            if self.stateful and opts.state_reset == "batch":
                loop.model.reset_state()
            with loop.timers.section("forward"):
                rewards = self._episode_rewards(loop, xb, cb, training=True)
                loss = -rewards.mean()
            loop.optimizer_step(loss)
            detached = rewards.detach()
            reward_sum += detached.sum()
            reward_sq += (detached * detached).sum()
        stats = torch.stack([reward_sum, reward_sq]).cpu().tolist()  # the epoch's one host sync
        seconds = time.perf_counter() - started
        episodes = opts.batch_episodes * opts.updates_per_epoch
        self.episodes_total += episodes
        mean = stats[0] / episodes
        variance = max(stats[1] / episodes - mean * mean, 0.0) * episodes / max(episodes - 1, 1)
        check_finite_loss(mean, phase="hisso", epoch=epoch)
        return {
            "train_loss": -mean,
            "reward_mean": mean,
            "reward_std": math.sqrt(variance),
            "episodes": self.episodes_total,
            "episodes_per_second": episodes / seconds if seconds > 0 else None,
        }

    def validate(self, loop: TrainingLoop) -> dict[str, float]:
        if self.val_index is None:
            return {}
        if self.stateful and self.options.state_reset != "none":
            loop.model.reset_state()
        rewards = self._episode_rewards(loop, self.X_val[self.val_index], self.context_val[self.val_index], training=False)
        metrics = {"val_loss": -float(rewards.mean()), "val_reward_mean": float(rewards.mean())}
        if self.y_val is not None and self.y_val.shape[1] == self.output_dim:
            with loop.autocast():
                pred = loop.model(self.X_val).float()
            metrics["val_mse"] = float(torch.mean((pred - self.y_val) ** 2))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "episodes_total": self.episodes_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.episodes_total = int(state["episodes_total"])
