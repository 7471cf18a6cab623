"""The one training loop every estimator uses, its callbacks, LR schedule and history.

The loop owns the optimiser, the learning-rate schedule, mixed precision, early stopping and the
best-epoch snapshot. What happens inside an epoch is a *phase* (``psann.supervised.SupervisedPhase``,
the HISSO phase in ``psann.hisso.trainer``): it runs its updates through ``loop.optimizer_step`` and returns a
flat dict of floats. Every epoch produces one record (a flat dict) that callbacks read: logging,
the run folder writer and the Tune reporter are all just callbacks.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch
from torch import nn

from psann.snapshot import TrainingSnapshot

__all__ = [
    "Callback",
    "History",
    "LoopConfig",
    "Phase",
    "TrainingLoop",
    "TrainingSnapshot",
    "lr_at_step",
]

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine", "linear")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Callback:
    """Base class for loop callbacks; every hook does nothing by default.

    Hooks receive the loop first, so a callback can read ``loop.model``, ``loop.history`` or call
    ``loop.request_stop(reason)``.
    """

    def on_train_begin(self, loop: "TrainingLoop", info: dict[str, Any]) -> None:
        """Called once before the first epoch; info describes the phase (shuffle policy, sizes)."""

    def on_epoch_begin(self, loop: "TrainingLoop", epoch: int) -> None:
        """Called before each epoch (1-based)."""

    def on_epoch_end(self, loop: "TrainingLoop", record: dict[str, Any]) -> None:
        """Called after each epoch with its record (already appended to loop.history)."""

    def on_train_end(self, loop: "TrainingLoop") -> None:
        """Called once after the last epoch (also after early stopping)."""


class History(list):
    """Per-epoch records (flat dicts of JSON-serialisable scalars), oldest first."""

    def column(self, key: str) -> list[Any]:
        return [record.get(key) for record in self]


@dataclass(frozen=True)
class LoopConfig:
    """Options of one training loop run."""

    epochs: int  # number of epochs to run (>= 1)
    lr: float = 1e-3  # peak learning rate of Adam
    weight_decay: float = 0.0  # Adam weight decay
    lr_schedule: str = "constant"  # "constant", "cosine" or "linear" decay after warm-up
    warmup_epochs: float = 0.0  # linear warm-up length in epochs (interpolated per step)
    min_lr_ratio: float = 0.0  # floor of the decaying schedules, as a fraction of lr
    early_stopping: bool = False  # stop when the monitored loss stops improving
    patience: int = 10  # epochs without improvement before stopping
    min_delta: float = 0.0  # improvement smaller than this does not count
    restore_best: bool = True  # load the best epoch's weights at the end
    grad_clip: float | None = None  # max total grad norm (None = no clipping)
    mixed_precision: bool = False  # autocast on CUDA, or on the CPU in bfloat16 (else logged, inactive)
    amp_dtype: str = "float16"  # "float16" (with GradScaler) or "bfloat16"
    compile: bool = False  # train through torch.compile(model) (loop.forward); weights stay the model's
    phase: str = "supervised"  # name recorded in every epoch record

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1. Got {self.epochs!r} instead.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0. Got {self.lr!r} instead.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}. Got {self.lr_schedule!r} instead.")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {list(AMP_DTYPES)}. Got {self.amp_dtype!r} instead.")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0. Got {self.warmup_epochs!r} instead.")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1. Got {self.patience!r} instead.")


def lr_at_step(config: LoopConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based), interpolated per step."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup and step < warmup:
        return config.lr * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = config.lr * config.min_lr_ratio
    if config.lr_schedule == "cosine":
        return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (config.lr - floor) * (1.0 - progress)


class Phase(Protocol):
    """What one epoch of training does; the loop calls it once per epoch."""

    name: str
    steps_per_epoch: int

    def describe(self) -> dict[str, Any]:
        """Facts logged once at the start (sizes, shuffle policy, stateful constraints)."""

    def train_epoch(self, loop: "TrainingLoop", epoch: int) -> dict[str, float]:
        """Run one epoch of updates through ``loop.optimizer_step``; return a dict with train_loss."""

    def validate(self, loop: "TrainingLoop") -> dict[str, float]:
        """Return validation metrics (val_loss at least) or an empty dict when there is none."""

    def state_dict(self) -> dict[str, Any]:
        """RNG state and anything else needed to resume the phase."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


class _SectionTimers:
    """Accumulates seconds per named section; on CUDA with events, read once per epoch."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._seconds: dict[str, float] = {}
        self._events: dict[str, list[tuple[Any, Any]]] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.setdefault(name, []).append((start, end))
        else:
            start_time = time.perf_counter()
            yield
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start_time

    def collect(self) -> dict[str, float]:
        """Return and reset the totals (synchronises CUDA once)."""
        if self.cuda and self._events:
            torch.cuda.synchronize()
            for name, pairs in self._events.items():
                self._seconds[name] = self._seconds.get(name, 0.0) + sum(s.elapsed_time(e) for s, e in pairs) / 1e3
        totals = {f"{name}_seconds": value for name, value in self._seconds.items()}
        self._seconds, self._events = {}, {}
        return totals


class TrainingLoop:
    """Runs a phase for ``config.epochs`` epochs with one optimiser, schedule and stopping rule.

    Example::

        loop = TrainingLoop(model, LoopConfig(epochs=20, lr=1e-3), device=torch.device("cpu"))
        history = loop.run(SupervisedPhase(X, y, batch_size=128))
    """

    def __init__(
        self,
        model: nn.Module,
        config: LoopConfig,
        *,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        log: logging.Logger | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.callbacks = list(callbacks)
        self.log = log or logger
        self.history = History()
        self.optimizer = _adam(model, config)
        # Autocast runs on CUDA (float16 or bfloat16) and on the CPU in bfloat16, which lets CI
        # exercise the mixed-precision path and its skipped-step accounting without a GPU.
        supported = device.type == "cuda" or (device.type == "cpu" and config.amp_dtype == "bfloat16")
        self.amp_active = bool(config.mixed_precision and supported)
        self.amp_dtype = AMP_DTYPES[config.amp_dtype] if self.amp_active else None
        if config.mixed_precision and not self.amp_active:
            self.log.info(
                "mixed_precision requested on %s with %s: not active (autocast runs on CUDA, or on the CPU in bfloat16)",
                device,
                config.amp_dtype,
            )
        use_scaler = self.amp_active and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self._fused = bool(self.optimizer.defaults.get("fused"))
        self.skipped_steps = 0
        self.step = 0
        self.steps_per_epoch = 1
        self.epoch = 0
        self.best_epoch: int | None = None
        self.best_loss = math.inf
        self.best_record: dict[str, Any] | None = None
        self._best_model: nn.Module | None = None
        self._bad_epochs = 0
        self.stop_reason: str | None = None
        self.timers = _SectionTimers(device)
        self.phase_ref: Phase | None = None  # the phase being run; snapshot() reads its state
        # Training forwards go through self.forward: the model, or torch.compile's wrapper of it
        # (same parameters; state_dicts come from self.model, so they carry no wrapper prefix).
        self.compiled_graphs = 0
        self.compile_seconds = 0.0
        self._fresh_graph = False
        self.forward = torch.compile(model, backend=self._compile_backend) if config.compile else model
        self._commit_state = _state_commit(model)  # None for stateless models (resolved again in run)

    # -- torch.compile ---------------------------------------------------------------------------
    def _compile_backend(self, graph: Any, example_inputs: Any) -> Any:
        """Inductor, counted and timed: each call is one graph (re)compiled."""
        started = time.perf_counter()
        compiled = _inductor()(graph, example_inputs)
        self.compile_seconds += time.perf_counter() - started
        self.compiled_graphs += 1
        self._fresh_graph = True
        return compiled

    # -- used by phases ------------------------------------------------------------------------
    def autocast(self):
        """Autocast context for forward passes (a no-op unless AMP is active)."""
        if not self.amp_active:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip, step and advance the schedule for one update, without a host sync.

        Under AMP a step whose gradients are inf/NaN is skipped on the device (fused Adam's
        ``found_inf``, GradScaler's own check) and counted in a device counter that ``run`` reads
        once per epoch (``skipped_steps``). Without AMP no check is made per step; the phase checks
        its epoch loss once per epoch and raises on a non-finite value. A stateful model's
        ``commit_state()`` (on the model or its wrapped ``net``) is called after every step.
        """
        lr = lr_at_step(self.config, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a group's own rate (lsm_lr) follows the schedule
        self.optimizer.zero_grad(set_to_none=True)
        backward_started = time.perf_counter() if self._fresh_graph else None
        with self.timers.section("backward"):
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        if backward_started is not None:
            # A new graph's backward is compiled lazily, on its first call: counted as compile time.
            self.compile_seconds += time.perf_counter() - backward_started
            self._fresh_graph = False
        with self.timers.section("optimizer"):
            if self.amp_active:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip or math.inf)
                found_inf = (~torch.isfinite(norm)).to(torch.float32)
                self._skipped.add_(found_inf)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)  # fused Adam: skipped on the device, no sync
                    self.scaler.update()
                elif self._fused:
                    self.optimizer.found_inf = found_inf  # fused Adam skips the update on the device
                    try:
                        self.optimizer.step()
                    finally:
                        del self.optimizer.found_inf
                elif bool(found_inf == 0):  # a non-fused optimiser cannot skip on the device
                    self.optimizer.step()
            else:
                if self.config.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.step()
        commit = self._commit_state
        if commit is not None:
            # Stateful models stage their next state in the forward; it becomes current only now,
            # after backward has used the old one and the weights have moved.
            commit()
        self.step += 1

    @property
    def skipped_steps(self) -> int:
        """Updates skipped for non-finite gradients under AMP so far (reads the device counter)."""
        return int(self._skipped.item()) if isinstance(self._skipped, torch.Tensor) else int(self._skipped)

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self._skipped = torch.tensor(float(value), device=self.device)

    def add_parameters(self, params: Sequence[nn.Parameter]) -> None:
        """Register parameters created during training (e.g. progressive depth) with the optimiser."""
        params = list(params)
        if params:
            self.optimizer.add_param_group(
                {"params": params, "lr": self.optimizer.param_groups[0]["lr"], "weight_decay": self.config.weight_decay}
            )

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current epoch (callbacks use this)."""
        self.stop_reason = reason

    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- the loop ------------------------------------------------------------------------------
    def run(self, phase: Phase) -> History:
        """Train for the configured epochs (or until stopped); returns the history."""
        self.phase_ref = phase
        self._commit_state = _state_commit(self.model)
        self.steps_per_epoch = max(1, int(phase.steps_per_epoch))
        info = {"phase": phase.name, **phase.describe()}
        for callback in self.callbacks:
            callback.on_train_begin(self, info)
        start_epoch = self.epoch + 1
        for epoch in range(start_epoch, self.config.epochs + 1):
            if self.stop_reason:
                break
            self.epoch = epoch
            for callback in self.callbacks:
                callback.on_epoch_begin(self, epoch)
            started = time.perf_counter()
            self.model.train()
            train_metrics = phase.train_epoch(self, epoch)
            self.model.eval()
            with torch.no_grad():
                val_metrics = phase.validate(self)
            record: dict[str, Any] = {"epoch": epoch, "phase": self.config.phase, "lr": self.current_lr}
            record.update(train_metrics)
            record.update(val_metrics)
            record.update(self.timers.collect())
            record["epoch_seconds"] = time.perf_counter() - started
            record["skipped_steps"] = self.skipped_steps  # the epoch's one read of the device counter
            if self.config.compile:
                record["compile_seconds"] = self.compile_seconds
                record["compiled_graphs"] = self.compiled_graphs
            self._track_best(record)
            self.history.append(record)
            for callback in self.callbacks:
                callback.on_epoch_end(self, record)
            if self.config.early_stopping and self._bad_epochs >= self.config.patience:
                self.stop_reason = self.stop_reason or (
                    f"early stopping: no improvement of {self.monitor_key(record)} for {self.config.patience} epochs"
                )
        if self.stop_reason:
            self.log.info("stopped after epoch %d: %s", self.epoch, self.stop_reason)
        if self.config.restore_best and self._best_model is not None and self.best_epoch != self.epoch:
            if _same_structure(self.model, self._best_model):
                self.model.load_state_dict(self._best_model.state_dict())
            else:
                # The architecture changed since the best epoch (progressive depth): the best
                # epoch's module replaces the current one; callers read loop.model afterwards.
                self.model = self._best_model
            _copy_first_layer_w0(self.model, self._best_model)
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self.history

    @staticmethod
    def monitor_key(record: dict[str, Any]) -> str:
        return "val_loss" if record.get("val_loss") is not None else "train_loss"

    def _track_best(self, record: dict[str, Any]) -> None:
        key = self.monitor_key(record)
        value = record.get(key)
        record["monitor"] = key
        if value is not None and math.isfinite(value) and value < self.best_loss - self.config.min_delta:
            self.best_loss = float(value)
            self.best_epoch = record["epoch"]
            self.best_record = dict(record)
            self._bad_epochs = 0
            if self.config.restore_best:
                self._best_model = copy.deepcopy(self.model)
            record["is_best"] = True
        else:
            self._bad_epochs += 1
            record["is_best"] = False

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this loop after the last completed epoch."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "history": list(self.history),
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "best_record": self.best_record,
            "best_model": self._best_model.state_dict() if self._best_model is not None else None,
            "bad_epochs": self._bad_epochs,
            "skipped_steps": self.skipped_steps,
        }

    def snapshot(self) -> "TrainingSnapshot":
        """A versioned, resumable snapshot of this loop after its last completed epoch."""
        return TrainingSnapshot.capture(self)

    def restore(self, snapshot: "TrainingSnapshot | dict[str, Any]", phase: Phase) -> None:
        """Load a ``snapshot()`` (or its ``to_dict()``) into this freshly built loop before ``run``."""
        self.phase_ref = phase
        TrainingSnapshot.coerce(snapshot).restore_into(self, phase)

    @property
    def best_model(self) -> nn.Module | None:
        """The best epoch's snapshot (None until an epoch improved or without restore_best)."""
        return self._best_model

    def load_state_dict(self, state: dict[str, Any], *, best_template: nn.Module | None = None) -> None:
        """Restore a state_dict (the model's own weights are restored by the caller).

        ``best_template`` is a module shaped like the best epoch's model, for when the network's
        architecture changed after the best epoch (progressive depth); default: a copy of the model.
        """
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = History(state["history"])
        self.best_epoch = state["best_epoch"]
        self.best_loss = float(state["best_loss"])
        self.best_record = state["best_record"]
        self._bad_epochs = int(state["bad_epochs"])
        self.skipped_steps = int(state["skipped_steps"])
        if state.get("best_model") is not None:
            best = best_template if best_template is not None else copy.deepcopy(self.model)
            try:
                best.load_state_dict(state["best_model"])
            except RuntimeError:
                best = None  # architecture changed since and no template given; current model stands in
            self._best_model = best


def _adam(model: nn.Module, config: LoopConfig) -> torch.optim.Adam:
    """Adam, fused when every parameter is a float tensor on CPU or CUDA.

    The default (for-loop) Adam costs a dozen small ops per parameter tensor per step; a sine
    network has 3 extra tensors per layer (amplitude, frequency, decay), so at the batch sizes of
    small regressions the optimiser step was a third of the step time (bench/fit_throughput.py).
    """
    # A model with parts that train at their own rate (an LSM expander's lsm_lr) gives its parameter
    # groups; each group's ``lr_scale`` is kept through the schedule by optimizer_step.
    groups = model.param_groups(config.lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _inductor() -> Any:
    import torch._dynamo  # imported on first compile only: it costs about a second

    return torch._dynamo.lookup_backend("inductor")


def _copy_first_layer_w0(model: nn.Module, best: nn.Module) -> None:
    """Give the restored model the best epoch's stem w0, a plain attribute outside the state_dict
    that a w0 warm-up changes between epochs."""
    net, best_net = getattr(model, "net", model), getattr(best, "net", best)
    if net is not best_net and hasattr(net, "set_first_layer_w0") and hasattr(best_net, "first_layer_w0"):
        net.set_first_layer_w0(best_net.first_layer_w0)


def _state_commit(model: nn.Module) -> Any:
    """The ``commit_state`` method of a stateful model (or of the network it wraps), else None."""
    for candidate in (model, getattr(model, "net", None)):
        if candidate is not None and getattr(candidate, "stateful", False):
            commit = getattr(candidate, "commit_state", None)
            if callable(commit):
                return commit
    return None


def _same_structure(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
