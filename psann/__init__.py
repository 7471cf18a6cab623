"""psann: sine-activated neural networks (PSANN) and the HISSO episodic trainer.

Importing psann never imports Ray; the sweep orchestration lives in the separate ``sweeps`` package.
Public names load their module on first use (PEP 562), so ``import psann.errors`` or
``import psann.contract`` (standard library only) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "SineActivation": "psann.activations",
    "SineConfig": "psann.activations",
    "SineLayer": "psann.activations",
    "siren_init_": "psann.activations",
    "PSANNRegressor": "psann.estimators",
    "ResPSANNRegressor": "psann.estimators",
    "WaveResNetRegressor": "psann.estimators",
    "ResConvPSANNRegressor": "psann.estimators",
    "ValidationError": "psann.errors",
    "HISSOOptions": "psann.hisso",
    "get_reward_strategy": "psann.hisso",
    "hisso_evaluate_reward": "psann.hisso",
    "hisso_infer_series": "psann.hisso",
    "register_reward_strategy": "psann.hisso",
    "baseline_metrics": "psann.metrics",
    "regime_market_dataset": "psann.data",
    "sequence_market_dataset": "psann.data",
    "portfolio_metrics": "psann.metrics",
    "PSANNNet": "psann.models",
    "ResPSANNNet": "psann.models",
    "WaveResNet": "psann.models",
    "ResConvPSANNNet": "psann.models",
    "Callback": "psann.training",
    "History": "psann.training",
    "LoopConfig": "psann.training",
    "TrainingLoop": "psann.training",
    "TrainingSnapshot": "psann.training",
    "StateConfig": "psann.state",
    "StateController": "psann.state",
    "LSMSpec": "psann.lsm",
    "LSMExpander": "psann.lsm",
    "LSMConv2dExpander": "psann.lsm",
    "build_expander": "psann.lsm",
    "SimpleWordTokenizer": "psann.text",
    "SineTokenEmbedder": "psann.text",
    "price_table_dataset": "psann.data",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'psann' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
