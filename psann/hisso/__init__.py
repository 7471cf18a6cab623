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
from psann.hisso.evaluation import hisso_evaluate_reward, hisso_infer_series
from psann.hisso.trainer import HISSOPhase, apply_transform, resolve_context

__all__ = [
    "HISSOOptions",
    "HISSOPhase",
    "RewardStrategy",
    "WarmStartOptions",
    "apply_transform",
    "available_reward_strategies",
    "call_reward",
    "get_reward_strategy",
    "hisso_evaluate_reward",
    "hisso_infer_series",
    "portfolio_reward",
    "register_reward_strategy",
    "resolve_context",
    "resolve_reward",
]
