"""PSANN model families (plain torch modules; the estimators wrap them)."""

from psann.models._common import DropPath
from psann.models.dense import PSANNNet
from psann.models.res_conv import ResConvPSANNNet, SineConv, SineConvBlock
from psann.models.residual import ResPSANNNet, SineResidualBlock
from psann.models.wave_resnet import WaveBlock, WaveResNet

__all__ = [
    "DropPath",
    "PSANNNet",
    "ResConvPSANNNet",
    "ResPSANNNet",
    "SineConv",
    "SineConvBlock",
    "SineResidualBlock",
    "WaveBlock",
    "WaveResNet",
]
