"""The HISSO episodic trainer: a training-loop phase, the estimator fit path, inference helpers.

Each update samples ``batch_episodes`` windows of ``window`` steps at random offsets of the series
(one ``randint`` and one indexed gather on the target device), maps every step through the model,
turns outputs into actions with ``primary_transform``, scores each episode with the reward against
the context aligned with the actions, and steps on ``loss = -mean reward``. Rewards accumulate on the
device and are read once per epoch, so the update loop never synchronises with the host (except the
GradScaler's own check under float16 AMP).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from psann.hisso.options import HISSOOptions
from psann.hisso.rewards import RewardStrategy, call_reward, resolve_reward
from psann.training import Callback, SupervisedPhase, TrainingLoop, check_finite_loss

__all__ = [
    "HISSOPhase",
    "apply_transform",
    "fit_hisso",
    "hisso_evaluate_reward",
    "hisso_infer_series",
    "resolve_context",
]

logger = logging.getLogger(__name__)


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
    """One HISSO epoch = ``updates_per_epoch`` updates of ``batch_episodes`` episodes."""

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
            "state_reset": self.options.state_reset if self.stateful else None,
        }

    def _episode_rewards(self, loop: TrainingLoop, xb: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
        batch, window, features = xb.shape
        with loop.autocast():
            out = loop.model(xb.reshape(batch * window, features))
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
                rewards = self._episode_rewards(loop, xb, cb)
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
        rewards = self._episode_rewards(loop, self.X_val[self.val_index], self.context_val[self.val_index])
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


def _output_dim(y: torch.Tensor | None, context: torch.Tensor | None, X: torch.Tensor) -> int:
    if y is not None:
        return int(y.shape[1])
    if context is not None:
        return int(context.shape[1]) if context.dim() == 2 else 1
    return int(X.shape[1])


def fit_hisso(
    est: Any,
    X: Any,
    y: Any,
    *,
    options: HISSOOptions | Mapping[str, Any] | None,
    context: Any,
    validation_data: Sequence[Any] | None,
    callbacks: Sequence[Callback],
    device: torch.device,
    resume_state: Mapping[str, Any] | None = None,
) -> None:
    """The estimator's HISSO fit: optional supervised warm start, then HISSO epochs."""
    opts = HISSOOptions.coerce(options)
    X_t = est._check_X(X, device)
    if X_t.dim() != 2:
        raise ValueError(f"HISSO needs a time series X of shape (T, F); got {tuple(X_t.shape)}")
    est._remember_shapes(X_t, None)
    if opts.window > X_t.shape[0]:
        raise ValueError(f"hisso.window: {opts.window} is longer than the training series ({X_t.shape[0]} rows)")
    if opts.supervised is not None and opts.supervised.y is not None:
        y = opts.supervised.y
    y_t = est._check_y(y, X_t, device) if y is not None else None
    ctx_in = est._as_tensor(context, "context", device) if context is not None else None
    output_dim = _output_dim(y_t, ctx_in, X_t)
    if opts.primary_transform == "softmax" and output_dim == 1:
        raise ValueError(
            "hisso.primary_transform: softmax over a single output is a constant action (always 1.0); "
            "use tanh or identity, or give a context with M > 1 assets"
        )
    ctx, source = resolve_context(X_t, ctx_in, output_dim=output_dim)
    strategy = resolve_reward(opts.reward if opts.reward is not None else "portfolio")
    if opts.reward is None:
        logger.info("hisso.reward not given: using the 'portfolio' reward on the %s", source)

    X_val_t = ctx_val = y_val_t = None
    if validation_data is not None:
        parts = list(validation_data) + [None] * (3 - len(validation_data))
        X_val_t = est._check_X(parts[0], device, name="X_val")
        est._check_feature_shape(X_val_t, "X_val")
        if X_val_t.shape[0] < opts.window:
            raise ValueError(f"hisso.window: {opts.window} is longer than the validation series ({X_val_t.shape[0]} rows)")
        if parts[1] is not None:
            y_val_t = est._check_y(parts[1], X_val_t, device, name="y_val")
        if source == "context" and parts[2] is None:
            raise ValueError("validation_data needs a third item (context_val) because fit was given a context")
        ctx_val_in = est._as_tensor(parts[2], "context_val", device) if parts[2] is not None else None
        ctx_val, _ = resolve_context(X_val_t, ctx_val_in, output_dim=output_dim, name="context_val")
        if ctx_val.shape[1] != ctx.shape[1]:
            raise ValueError(f"context_val has {ctx_val.shape[1]} columns but context has {ctx.shape[1]}")

    schedules = est._fit_callbacks()
    resuming_main = resume_state is not None and resume_state.get("phase") == "hisso"
    est.model_ = est._init_model(X_t, output_dim, device)
    warm_started = False
    if opts.supervised is not None and not resuming_main:
        if y_t is None:
            raise ValueError("hisso.supervised: a warm start needs targets (y, or hisso.supervised.y_key in run configs)")
        warm = opts.supervised
        phase = SupervisedPhase(
            X_t,
            y_t,
            batch_size=warm.batch_size,
            generator=torch.Generator().manual_seed(est.seed_ + 1),
            X_val=X_val_t if y_val_t is not None else None,
            y_val=y_val_t,
            phase_name="warm_start",
            stateful=est.model_.stateful,
        )
        config = est._loop_config(
            epochs=warm.epochs, phase="warm_start", lr=float(warm.lr or est.lr), early_stopping=False, restore_best=False
        )
        est._run_loop(phase, config, callbacks, device, None, schedules=schedules)
        warm_started = True

    generator = torch.Generator(device=device).manual_seed(est.seed_)
    phase = HISSOPhase(
        X_t,
        ctx,
        opts,
        strategy,
        output_dim=output_dim,
        generator=generator,
        X_val=X_val_t,
        context_val=ctx_val,
        y_val=y_val_t,
        stateful=est.model_.stateful,
    )
    config = est._loop_config(
        epochs=int(est.epochs),
        phase="hisso",
        grad_clip=float(opts.grad_clip) if opts.grad_clip else None,
        mixed_precision=opts.mixed_precision,
        amp_dtype=opts.amp_dtype,
    )
    # Recorded before the loop runs, so checkpoints saved during training carry the HISSO facts.
    est.hisso_ = {
        "window": opts.window,
        "batch_episodes": opts.batch_episodes,
        "updates_per_epoch": opts.updates_per_epoch,
        "primary_transform": opts.primary_transform,
        "transition_penalty": opts.transition_penalty,
        "reward": strategy.name,
        "context_source": source,
        "output_dim": output_dim,
        "input_noise": opts.input_noise,
        "warm_start": warm_started,
        "episodes": 0,
    }
    loop = est._run_loop(phase, config, callbacks, device, resume_state if resuming_main else None, schedules=schedules)
    est.hisso_["episodes"] = phase.episodes_total
    est.history_ = loop.history
    est.best_epoch_ = loop.best_epoch


def _hisso_facts(est: Any) -> dict[str, Any]:
    est._check_is_fitted()
    facts = getattr(est, "hisso_", None)
    if not facts:
        raise ValueError(f"{type(est).__name__} was not fitted with hisso=True; nothing to infer allocations with")
    return facts


@torch.no_grad()
def _actions(est: Any, X_t: torch.Tensor, transform: str) -> torch.Tensor:
    return apply_transform(est._forward_rows(X_t).float(), transform)


def hisso_infer_series(est: Any, X: Any) -> np.ndarray:
    """Actions (allocations for softmax) the fitted policy takes at every step of X: (T, M)."""
    facts = _hisso_facts(est)
    X_t = est._check_X(X, est.device_)
    est._check_feature_shape(X_t, "X")
    return _actions(est, X_t, facts["primary_transform"]).cpu().numpy()


@torch.no_grad()
def hisso_evaluate_reward(
    est: Any,
    X: Any,
    context: Any = None,
    *,
    window: int | None = None,
    stride: int | None = None,
) -> dict[str, float]:
    """Score the fitted policy's reward on a whole split, as one episode and as rolling windows.

    Uses the reward, transform and transition penalty recorded at fit, so evaluation matches
    training. Returns reward_full (the whole split as one episode), reward_window_mean/std over
    windows of ``window`` steps (default: the training window) every ``stride`` steps (default:
    the window), and the number of windows.
    """
    facts = _hisso_facts(est)
    X_t = est._check_X(X, est.device_)
    est._check_feature_shape(X_t, "X")
    if facts["context_source"] == "context" and context is None:
        raise ValueError("this policy was trained against a context (prices); pass context= for evaluation")
    ctx_in = est._as_tensor(context, "context", est.device_) if context is not None else None
    ctx, _ = resolve_context(X_t, ctx_in, output_dim=facts["output_dim"])
    strategy = resolve_reward(facts["reward"])
    actions = _actions(est, X_t, facts["primary_transform"])
    penalty = facts["transition_penalty"]
    full = call_reward(strategy.reward_fn, actions.unsqueeze(0), ctx.unsqueeze(0), penalty)
    window = int(window or facts["window"])
    stride = int(stride or window)
    if window < 2 or window > X_t.shape[0]:
        raise ValueError(f"window must be in [2, {X_t.shape[0]}] for this split; got {window}")
    starts = torch.arange(0, X_t.shape[0] - window + 1, stride, device=X_t.device)
    index = starts[:, None] + torch.arange(window, device=X_t.device)[None, :]
    rolling = call_reward(strategy.reward_fn, actions[index], ctx[index], penalty)
    return {
        "reward_full": float(full[0]),
        "reward_window_mean": float(rolling.mean()),
        "reward_window_std": float(rolling.std()) if rolling.numel() > 1 else 0.0,
        "windows": int(rolling.numel()),
        "reward": strategy.name,
    }
