"""scikit-learn estimators of the PSANN model families and their persistence."""

from psann.estimators._base import BasePSANNEstimator, resolve_device
from psann.estimators.dense import PSANNRegressor, ResPSANNRegressor
from psann.estimators.res_conv import ResConvPSANNRegressor
from psann.estimators.wave_resnet import WaveResNetRegressor

# Registry used by load() and by run configs (`estimator.target`).
ESTIMATORS = {
    cls.__name__: cls
    for cls in (PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor, ResConvPSANNRegressor)
}

__all__ = [
    "BasePSANNEstimator",
    "ESTIMATORS",
    "PSANNRegressor",
    "ResConvPSANNRegressor",
    "ResPSANNRegressor",
    "WaveResNetRegressor",
    "resolve_device",
]
