"""HISSO: Horizon-Informed Sampling Strategy Optimisation, the episodic reward trainer."""

from psann.hisso.options import HISSOOptions, WarmStartOptions
from psann.hisso.rewards import (
    RewardStrategy,
    available_reward_strategies,
    call_reward,
    get_reward_strategy,
    portfolio_reward,
    register_reward_strategy,
    resolve_reward,
)
from psann.hisso.trainer import (
    HISSOPhase,
    apply_transform,
    fit_hisso,
    hisso_evaluate_reward,
    hisso_infer_series,
    resolve_context,
)

__all__ = [
    "HISSOOptions",
    "HISSOPhase",
    "RewardStrategy",
    "WarmStartOptions",
    "apply_transform",
    "available_reward_strategies",
    "call_reward",
    "fit_hisso",
    "get_reward_strategy",
    "hisso_evaluate_reward",
    "hisso_infer_series",
    "portfolio_reward",
    "register_reward_strategy",
    "resolve_context",
]
