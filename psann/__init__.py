"""psann: sine-activated neural networks (PSANN) and the HISSO episodic trainer.

Importing psann never imports Ray; the sweep orchestration lives in the separate ``sweeps`` package.
"""

__version__ = "0.1.0"

from psann.activations import SineActivation, SineConfig, SineLayer, siren_init_
from psann.estimators import PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor
from psann.hisso import (
    HISSOOptions,
    get_reward_strategy,
    hisso_evaluate_reward,
    hisso_infer_series,
    register_reward_strategy,
)
from psann.metrics import baseline_metrics, portfolio_metrics
from psann.models import PSANNNet, ResPSANNNet, WaveResNet
from psann.training import Callback, History, LoopConfig, TrainingLoop

__all__ = [
    "__version__",
    "Callback",
    "HISSOOptions",
    "History",
    "LoopConfig",
    "PSANNNet",
    "PSANNRegressor",
    "ResPSANNNet",
    "ResPSANNRegressor",
    "SineActivation",
    "SineConfig",
    "SineLayer",
    "TrainingLoop",
    "WaveResNet",
    "WaveResNetRegressor",
    "baseline_metrics",
    "get_reward_strategy",
    "hisso_evaluate_reward",
    "hisso_infer_series",
    "portfolio_metrics",
    "register_reward_strategy",
    "siren_init_",
]
