"""The estimator's HISSO fit path: validation, optional supervised warm start, then HISSO epochs.

It lives in the estimators package because it builds and trains the estimator's own model; the
HISSO tensor code it drives (the phase, rewards, actions, reward context) stays in ``psann.hisso``
and never touches an estimator.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from psann.errors import ValidationError
from psann.estimators._input import validate_X, validate_y
from psann.hisso.options import HISSOOptions
from psann.hisso.rewards import resolve_reward
from psann.hisso.trainer import HISSOPhase, resolve_context
from psann.snapshot import TrainingSnapshot
from psann.tensors import as_float_tensor
from psann.supervised import SupervisedPhase
from psann.training import Callback

__all__ = ["fit_hisso"]

logger = logging.getLogger("psann.estimators")


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
    conditioning: tuple[Any, Any] = (None, None),
    callbacks: Sequence[Callback],
    device: torch.device,
    resume_state: TrainingSnapshot | None = None,
) -> None:
    """Fit ``est`` by HISSO (``est.fit(X, hisso=True, ...)`` calls this)."""
    opts = HISSOOptions.coerce(options)
    if est.preserve_shape:
        raise ValidationError("preserve_shape", "HISSO takes one action per sample (time step); use preserve_shape=False")
    X_t = validate_X(est, X, reset=True, device=device)
    if X_t.dim() > 2 and context is None:
        raise ValidationError(
            "context", f"samples of shape {tuple(X_t.shape[1:])} cannot be read as prices; pass context= (prices_* keys)"
        )
    # Rows are time steps whatever the rank of one sample: episodes are runs of consecutive rows.
    X_rows, X_in = est.model_inputs(X, X_t, conditioning[0])
    if opts.window > X_t.shape[0]:
        raise ValidationError("hisso.window", f"{opts.window} is longer than the training series ({X_t.shape[0]} rows)")
    if opts.supervised is not None and opts.supervised.y is not None:
        y = opts.supervised.y
    y_t = validate_y(y, X_t.shape[0], device=device)[0] if y is not None else None
    est.y_was_1d_ = False
    est.output_shape_ = tuple(int(s) for s in y_t.shape[1:]) if y_t is not None else None
    ctx_in = as_float_tensor(context, "context", device) if context is not None else None
    output_dim = _output_dim(y_t, ctx_in, X_t)
    if opts.primary_transform == "softmax" and output_dim == 1:
        raise ValidationError(
            "hisso.primary_transform",
            "softmax over a single output is a constant action (always 1.0); "
            "use tanh or identity, or give a context with M > 1 assets",
        )
    ctx, source = resolve_context(X_t, ctx_in, output_dim=output_dim)
    strategy = resolve_reward(opts.reward if opts.reward is not None else "portfolio")
    if opts.reward is None:
        logger.info("hisso.reward not given: using the 'portfolio' reward on the %s", source)

    X_val_t = X_val_in = ctx_val = y_val_t = None
    if validation_data is not None:
        parts = list(validation_data) + [None] * (3 - len(validation_data))
        X_val_t = validate_X(est, parts[0], reset=False, device=device, name="X_val")
        _, X_val_in = est.model_inputs(parts[0], X_val_t, conditioning[1])
        if X_val_t.shape[0] < opts.window:
            raise ValidationError(
                "hisso.window", f"{opts.window} is longer than the validation series ({X_val_t.shape[0]} rows)"
            )
        if parts[1] is not None:
            y_val_t, _ = validate_y(parts[1], X_val_t.shape[0], device=device, name="y_val")
        if source == "context" and parts[2] is None:
            raise ValidationError(
                "validation_data", "needs a third item (context_val) because fit was given a context"
            )
        ctx_val_in = as_float_tensor(parts[2], "context_val", device) if parts[2] is not None else None
        ctx_val, _ = resolve_context(X_val_t, ctx_val_in, output_dim=output_dim, name="context_val")
        if ctx_val.shape[1] != ctx.shape[1]:
            raise ValidationError(
                "context_val", f"expected {ctx.shape[1]} columns like context, got {ctx_val.shape[1]}"
            )

    # One mixed-precision setting for the warm start and HISSO: the HISSO options', or the estimator's.
    mixed_precision = bool(opts.mixed_precision or est.mixed_precision)
    amp_dtype = opts.amp_dtype if opts.mixed_precision else est.amp_dtype
    schedules = est._fit_callbacks()
    resuming_main = resume_state is not None and resume_state.phase == "hisso"
    est.model_ = est._init_model(X_rows, output_dim, device, conditioning_dim=X_in.shape[1] - X_rows.shape[1])
    warm_started = False
    if opts.supervised is not None and not resuming_main:
        if y_t is None:
            raise ValidationError(
                "hisso.supervised", "a warm start needs targets (y, or hisso.supervised.y_key in run configs)"
            )
        warm = opts.supervised
        phase = SupervisedPhase(
            X_in,
            y_t,
            batch_size=warm.batch_size,
            generator=torch.Generator().manual_seed(est.seed_ + 1),
            X_val=X_val_in if y_val_t is not None else None,
            y_val=y_val_t,
            phase_name="warm_start",
            stateful=est.model_.stateful,
            state_reset=est.state_reset,
        )
        config = est._loop_config(
            epochs=warm.epochs,
            phase="warm_start",
            lr=float(warm.lr or est.lr),
            early_stopping=False,
            restore_best=False,
            mixed_precision=mixed_precision,
            amp_dtype=amp_dtype,
        )
        est._run_loop(phase, config, callbacks, device, None, schedules=schedules)
        warm_started = True

    generator = torch.Generator(device=device).manual_seed(est.seed_)
    phase = HISSOPhase(
        X_in,
        ctx,
        opts,
        strategy,
        output_dim=output_dim,
        generator=generator,
        X_val=X_val_in,
        context_val=ctx_val,
        y_val=y_val_t,
        stateful=est.model_.stateful,
    )
    config = est._loop_config(
        epochs=int(est.epochs),
        phase="hisso",
        grad_clip=float(opts.grad_clip) if opts.grad_clip else None,
        mixed_precision=mixed_precision,
        amp_dtype=amp_dtype,
    )
    # Recorded before the loop runs, so checkpoints saved during training carry the HISSO facts.
    est.hisso_ = {
        "window": opts.window,
        "batch_episodes": opts.batch_episodes,
        "updates_per_epoch": opts.updates_per_epoch,
        "primary_transform": opts.primary_transform,
        "transition_penalty": opts.transition_penalty,
        "reward": strategy.name,
        "reward_spec": strategy.resolvable,  # what resolve_reward rebuilds it from (bound kwargs kept)
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
