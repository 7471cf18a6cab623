"""Inference with a fitted HISSO policy, through the estimator's public surface only.

These functions read ``est.hisso_`` (the HISSO facts recorded at fit), ``est.device_`` and
``est.predict_tensor(X)`` (raw outputs on the fitted device), so evaluation uses the same transform,
reward and transition penalty as training and never reaches into an estimator's private parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from psann.errors import ValidationError
from psann.hisso.rewards import call_reward, resolve_reward
from psann.hisso.trainer import apply_transform, resolve_context
from psann.tensors import as_float_tensor

__all__ = ["hisso_evaluate_reward", "hisso_infer_series"]


def _hisso_facts(est: Any) -> dict[str, Any]:
    check_is_fitted(est)
    facts = getattr(est, "hisso_", None)
    if not facts:
        raise ValueError(f"{type(est).__name__} was not fitted with hisso=True; nothing to infer allocations with")
    return facts


def _actions(est: Any, X: Any, transform: str, conditioning: Any) -> torch.Tensor:
    return apply_transform(est.predict_tensor(X, conditioning=conditioning), transform)


def hisso_infer_series(est: Any, X: Any, *, conditioning: Any = None) -> np.ndarray:
    """Actions (allocations for softmax) the fitted policy takes at every step of X: (T, M)."""
    facts = _hisso_facts(est)
    return _actions(est, X, facts["primary_transform"], conditioning).cpu().numpy()


@torch.no_grad()
def hisso_evaluate_reward(
    est: Any,
    X: Any,
    context: Any = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    conditioning: Any = None,
) -> dict[str, float]:
    """Score the fitted policy's reward on a whole split, as one episode and as rolling windows.

    Uses the reward, transform and transition penalty recorded at fit, so evaluation matches
    training. Returns reward_full (the whole split as one episode), reward_window_mean/std over
    windows of ``window`` steps (default: the training window) every ``stride`` steps (default:
    the window), and the number of windows.
    """
    facts = _hisso_facts(est)
    if facts["context_source"] == "context" and context is None:
        raise ValidationError("context", "this policy was trained against a context (prices); pass context= for evaluation")
    actions = _actions(est, X, facts["primary_transform"], conditioning)
    device = actions.device
    # The inputs double as price levels when no context is given; otherwise only their rows count.
    X_t = as_float_tensor(X, "X", device)
    ctx_in = as_float_tensor(context, "context", device) if context is not None else None
    ctx, _ = resolve_context(X_t, ctx_in, output_dim=facts["output_dim"])
    strategy = resolve_reward(facts.get("reward_spec", facts["reward"]))
    penalty = facts["transition_penalty"]
    steps = actions.shape[0]
    full = call_reward(strategy.reward_fn, actions.unsqueeze(0), ctx.unsqueeze(0), penalty)
    window = int(window or facts["window"])
    stride = int(stride or window)
    if window < 2 or window > steps:
        raise ValidationError("window", f"expected an int in [2, {steps}] for this split, got {window}")
    starts = torch.arange(0, steps - window + 1, stride, device=device)
    index = starts[:, None] + torch.arange(window, device=device)[None, :]
    rolling = call_reward(strategy.reward_fn, actions[index], ctx[index], penalty)
    return {
        "reward_full": float(full[0]),
        "reward_window_mean": float(rolling.mean()),
        "reward_window_std": float(rolling.std()) if rolling.numel() > 1 else 0.0,
        "windows": int(rolling.numel()),
        "reward": strategy.name,
    }
