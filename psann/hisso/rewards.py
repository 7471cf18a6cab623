"""HISSO episode rewards and the reward-strategy registry.

A reward function scores a batch of episodes in one call::

    fn(actions: Tensor (B, T, M), context: Tensor (B, T, M) or (B, T, 1), **kw) -> Tensor (B,)

It must be differentiable in ``actions`` and stay on their device (no ``.item()``, no host
sync). A :class:`RewardStrategy` pairs it with the numpy metrics that evaluate a whole split: a
run reports its policy, and the baselines beside it, with the strategy's ``metrics_fn``
(``psann.evaluation``).
Strategies are named so a run can record and reload the reward it optimised: by registry name,
by import path (``"package.module:function"``), never by pickling the function.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace
from collections.abc import Mapping
from typing import Any, Callable, Union

import torch

from psann._imports import import_object
from psann.errors import ValidationError, did_you_mean, short_repr, unknown_key
from psann.metrics import GROWTH_FLOOR, portfolio_metrics

__all__ = [
    "RewardFn",
    "MetricsFn",
    "RewardStrategy",
    "portfolio_reward",
    "register_reward_strategy",
    "get_reward_strategy",
    "available_reward_strategies",
    "resolve_reward",
    "call_reward",
]

RewardFn = Callable[..., torch.Tensor]
MetricsFn = Callable[..., dict]


@dataclass(frozen=True)
class RewardStrategy:
    """A named reward: the training reward and the metrics that evaluate a whole split."""

    name: str  # registry name or import path; what runs record
    reward_fn: RewardFn  # (actions (B,T,M), context (B,T,M|1), **kw) -> (B,)
    # (allocations (T,M), prices (T,M), trans_cost) -> dict of floats; metrics.json "portfolio"
    metrics_fn: MetricsFn = portfolio_metrics
    # What resolve_reward takes to rebuild this strategy: the name, or {"target", "kwargs"} when
    # keyword arguments are bound (saved models and evaluation resolve it again).
    spec: Any = None

    @property
    def resolvable(self) -> Any:
        """The JSON value that ``resolve_reward`` turns back into this strategy."""
        return self.name if self.spec is None else self.spec


def _check_episode_shapes(actions: torch.Tensor, context: torch.Tensor) -> None:
    if not isinstance(actions, torch.Tensor) or not isinstance(context, torch.Tensor):
        raise TypeError(
            "actions and context must be torch tensors; "
            f"got {type(actions).__name__} and {type(context).__name__}."
        )
    if actions.ndim != 3 or context.ndim != 3:
        raise ValueError(
            "actions and context must be 3-D (B, T, M); "
            f"got actions {tuple(actions.shape)} and context {tuple(context.shape)}."
        )
    if actions.shape[:2] != context.shape[:2] or context.shape[2] not in (1, actions.shape[2]):
        raise ValueError(
            "context must match actions in (B, T) and have last dim M or 1; "
            f"got actions {tuple(actions.shape)} and context {tuple(context.shape)}."
        )
    if actions.shape[1] < 2:
        raise ValueError(f"episodes need at least 2 steps (window >= 2); got actions {tuple(actions.shape)}.")


def portfolio_reward(
    actions: torch.Tensor,
    context: torch.Tensor,
    *,
    transition_penalty: float = 0.0,
) -> torch.Tensor:
    """Log growth of each episode's portfolio, minus a penalty on allocation changes.

    With ``r_t = c_{t+1} / c_t - 1`` and ``g_t = max(a_t . (1 + r_t), GROWTH_FLOOR)``, the reward is
    ``sum_{t=0}^{T-2} (log g_t - transition_penalty * |a_{t+1} - a_t|_1)``, one value per
    episode. Half-precision inputs are computed in float32 so autocast cannot overflow the log.

    Example:
        >>> a = torch.full((1, 3, 2), 0.5)
        >>> c = torch.tensor([[[1.0, 1.0], [1.1, 1.1], [1.21, 1.21]]])
        >>> round(float(portfolio_reward(a, c)), 4)  # 2 * log(1.1)
        0.1906
    """
    _check_episode_shapes(actions, context)
    compute_dtype = torch.promote_types(actions.dtype, torch.float32)
    actions = actions.to(compute_dtype)
    context = context.to(compute_dtype)
    gross_return = context[:, 1:] / context[:, :-1]  # 1 + r_t, broadcast over M when last dim is 1
    growth = (actions[:, :-1] * gross_return).sum(dim=-1).clamp(min=GROWTH_FLOOR)
    change = (actions[:, 1:] - actions[:, :-1]).abs().sum(dim=-1)
    # No branch on the penalty's value: it may be a device tensor, and reading it would sync.
    return torch.log(growth).sum(dim=-1) - transition_penalty * change.sum(dim=-1)


_REGISTRY: dict[str, RewardStrategy] = {}


def _normalise_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a reward strategy name must be a non-empty string; got {name!r}.")
    return name.strip().lower()


def register_reward_strategy(
    name: str,
    bundle: Union[RewardStrategy, tuple],
    *,
    overwrite: bool = False,
) -> RewardStrategy:
    """Register a reward under ``name`` (case-insensitive) and return the stored strategy.

    ``bundle`` is a :class:`RewardStrategy` (stored under ``name``, whatever its own name) or a
    ``(reward_fn, metrics_fn)`` tuple. An existing name raises ValueError unless ``overwrite``.
    """
    key = _normalise_name(name)
    if isinstance(bundle, RewardStrategy):
        strategy = replace(bundle, name=key)
    elif isinstance(bundle, tuple) and len(bundle) == 2:
        strategy = RewardStrategy(name=key, reward_fn=bundle[0], metrics_fn=bundle[1])
    else:
        raise TypeError(
            "bundle must be a RewardStrategy or a (reward_fn, metrics_fn) tuple; "
            f"got {type(bundle).__name__}."
        )
    if not callable(strategy.reward_fn) or not callable(strategy.metrics_fn):
        raise TypeError(
            f"reward strategy {key!r} needs a callable reward_fn and metrics_fn; got "
            f"{type(strategy.reward_fn).__name__} and {type(strategy.metrics_fn).__name__}."
        )
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"reward strategy {key!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[key] = strategy
    return strategy


def available_reward_strategies() -> list[str]:
    """Registered reward strategy names, sorted."""
    return sorted(_REGISTRY)


def _unknown_reward(spec: str, detail: str = "") -> ValidationError:
    """The error for a reward that is neither registered nor importable (key ``hisso.reward``)."""
    available = available_reward_strategies()
    hint = did_you_mean(spec.strip().lower(), available)
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    detail = f" ({detail})" if detail else ""
    return ValidationError(
        "hisso.reward",
        f"unknown reward {short_repr(spec)}{detail}{suggestion}; allowed: a registered name "
        f"({', '.join(available)}) or an import path such as 'package.module:function'",
    )


def get_reward_strategy(name: str) -> RewardStrategy:
    """The registered strategy called ``name`` (case-insensitive).

    An unknown name raises :class:`psann.errors.ValidationError` (a ValueError) with key
    ``hisso.reward`` and the closest registered name.
    """
    key = _normalise_name(name)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise _unknown_reward(name) from None


def _callable_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if qualname == "<lambda>" or qualname.endswith(".<lambda>"):
        return "<lambda>"
    return f"{module}.{qualname}"


def _bound_reward(spec: Mapping[str, Any]) -> RewardStrategy:
    """``{target: import path, kwargs: {...}}``: the target's reward with the kwargs bound."""
    unknown = sorted(set(spec) - {"target", "kwargs"})
    if unknown:
        raise unknown_key(unknown[0], ["target", "kwargs"], "hisso.reward")
    target, kwargs = spec.get("target"), spec.get("kwargs") or {}
    if not isinstance(target, str) or not target.strip():
        raise ValidationError.expected("hisso.reward.target", "an import path such as 'package.module:function'", target)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ValidationError.expected("hisso.reward.kwargs", "a mapping of keyword arguments", kwargs)
    try:
        base = resolve_reward(target.strip())
    except ValidationError as exc:
        raise ValidationError("hisso.reward.target", exc.reason) from exc
    fn = functools.partial(base.reward_fn, **dict(kwargs))
    try:
        inspect.signature(fn).bind_partial()
    except (TypeError, ValueError) as exc:
        raise ValidationError("hisso.reward.kwargs", f"do not fit {target}: {exc}") from exc
    bound = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return RewardStrategy(
        name=f"{base.name}({bound})" if kwargs else base.name,
        reward_fn=fn,
        metrics_fn=base.metrics_fn,
        spec={"target": target.strip(), "kwargs": dict(kwargs)} if kwargs else None,
    )


def resolve_reward(spec: Union[str, RewardStrategy, RewardFn, Mapping[str, Any]]) -> RewardStrategy:
    """Turn the ``hisso.reward`` setting into a :class:`RewardStrategy`.

    ``spec`` may be a registered name (``"portfolio"``), an import path
    (``"package.module:function"`` or ``"package.module.function"``; a function is paired with
    :func:`psann.metrics.portfolio_metrics`; an imported RewardStrategy keeps its functions; both
    are named by the path as written), a mapping ``{target: <name or path>, kwargs: {...}}`` whose
    kwargs are bound to the reward function (the earlier psann CLI's form; the strategy keeps the
    mapping as its ``spec``), a RewardStrategy, or a callable. A callable is named
    ``"<module>.<qualname>"`` so runs can record it; a lambda is named ``"<lambda>"`` and cannot
    be persisted or reloaded by name, so prefer a module-level function.

    Example:
        >>> resolve_reward("Portfolio").name
        'portfolio'
    """
    if isinstance(spec, RewardStrategy):
        return spec
    if isinstance(spec, Mapping):
        return _bound_reward(spec)
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in _REGISTRY:
            return _REGISTRY[key]
        path = spec.strip()
        if "." not in path and ":" not in path:
            raise _unknown_reward(spec)
        try:
            obj = import_object(path)
        except ImportError as exc:
            raise _unknown_reward(spec, f"cannot import: {exc}") from exc
        if isinstance(obj, RewardStrategy):
            # Named by the path, like a function: a run records this name and must resolve it
            # again (evaluation, reloading a checkpoint); the strategy's own name may be neither
            # registered nor importable.
            return obj if obj.name == path else replace(obj, name=path)
        if not callable(obj):
            raise _unknown_reward(spec, f"{type(obj).__name__} is not callable")
        return RewardStrategy(name=path, reward_fn=obj, metrics_fn=portfolio_metrics)
    if callable(spec):
        return RewardStrategy(name=_callable_name(spec), reward_fn=spec, metrics_fn=portfolio_metrics)
    raise TypeError(
        "hisso.reward must be a registered name, an import path, a {target, kwargs} mapping, "
        f"a RewardStrategy or a callable; got {type(spec).__name__}."
    )


def _inspect_penalty_keyword(fn: Callable) -> str | None:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return None
    named = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    for keyword in ("transition_penalty", "trans_cost"):
        if keyword in named:
            return keyword
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return "transition_penalty"
    return None


_cached_penalty_keyword = functools.lru_cache(maxsize=256)(_inspect_penalty_keyword)


def _penalty_keyword(fn: Callable) -> str | None:
    try:
        return _cached_penalty_keyword(fn)
    except TypeError:  # unhashable callable: inspect every time
        return _inspect_penalty_keyword(fn)


def call_reward(
    fn: RewardFn,
    actions: torch.Tensor,
    context: torch.Tensor,
    transition_penalty: float,
) -> torch.Tensor:
    """Call a reward function, passing the penalty under the keyword it accepts, if any.

    ``transition_penalty=`` goes to functions that name it or take ``**kwargs``; ``trans_cost=``
    to those that name that instead; nothing to the rest. The result must be a (B,) tensor.
    """
    keyword = _penalty_keyword(fn)
    if keyword is None:
        reward = fn(actions, context)
    else:
        reward = fn(actions, context, **{keyword: transition_penalty})
    if not isinstance(reward, torch.Tensor):
        raise TypeError(
            f"reward function {_callable_name(fn)} must return a torch.Tensor; got {type(reward).__name__}."
        )
    expected = (actions.shape[0],)
    if tuple(reward.shape) != expected:
        raise ValueError(
            f"reward function {_callable_name(fn)} must return one reward per episode, shape {expected}; "
            f"got {tuple(reward.shape)} for actions {tuple(actions.shape)}."
        )
    return reward


register_reward_strategy("portfolio", (portfolio_reward, portfolio_metrics))
# Alias kept so configs written for earlier PSANN tooling ("finance") still resolve.
register_reward_strategy("finance", (portfolio_reward, portfolio_metrics))
