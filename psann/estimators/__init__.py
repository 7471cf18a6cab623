"""sklearn-style PSANN estimators and their persistence."""

from psann.estimators._base import BasePSANNEstimator, resolve_device
from psann.estimators.regressors import PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor

# Registry used by load() and by run configs (`estimator.target`).
ESTIMATORS = {
    cls.__name__: cls for cls in (PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor)
}

__all__ = [
    "BasePSANNEstimator",
    "ESTIMATORS",
    "PSANNRegressor",
    "ResPSANNRegressor",
    "WaveResNetRegressor",
    "resolve_device",
]
