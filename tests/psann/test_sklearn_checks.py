"""scikit-learn's own estimator checks, run on every PSANN estimator.

The estimators derive from sklearn's BaseEstimator and RegressorMixin, so the whole contract is
expected to hold: no expected failures, at default parameters as well as small ones
(``xfail_strict`` is on, so an entry added here later could not hide a check that passes).
"""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from psann.estimators import PSANNRegressor, ResConvPSANNRegressor, ResPSANNRegressor, WaveResNetRegressor

pytestmark = pytest.mark.slow

SMALL = dict(hidden_units=16, epochs=40, batch_size=64, lr=0.01, random_state=0, device="cpu")

_checks = parametrize_with_checks(
    [
        # Defaults, except the device (CI has no GPU; "auto" would pick one where there is).
        PSANNRegressor(device="cpu"),
        ResPSANNRegressor(device="cpu"),
        WaveResNetRegressor(device="cpu"),
        ResConvPSANNRegressor(device="cpu"),
        PSANNRegressor(hidden_layers=1, w0=1.0, **SMALL),
        ResPSANNRegressor(hidden_layers=1, w0=1.0, **SMALL),
        WaveResNetRegressor(depth=1, first_layer_w0=1.0, **SMALL),
        # Tabular check data is read as one channel: a kernel of 5 sees enough neighbouring features.
        ResConvPSANNRegressor(conv_channels=16, depth=1, kernel_size=5, w0=1.0, **{k: v for k, v in SMALL.items() if k != "hidden_units"}),
    ],
)


@_checks
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)
