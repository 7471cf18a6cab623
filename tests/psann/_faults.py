"""Faults the psann tests inject into a training loop."""

from psann.training import Callback


class InfGradientAt(Callback):
    """Makes the gradients of one update non-finite, as an overflow under AMP would."""

    def __init__(self, step):
        self.step = step

    def on_train_begin(self, loop, info):
        param = next(loop.model.parameters())
        param.register_hook(lambda grad: grad * float("inf") if loop.step == self.step else grad)
