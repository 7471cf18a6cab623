"""The one home of resume state: a versioned snapshot of a running training loop.

``TrainingLoop.snapshot()`` returns a ``TrainingSnapshot`` after any completed epoch;
``TrainingLoop.restore(snapshot, phase)`` loads it into a freshly built loop before ``run``, and the
loop then continues with the next epoch. ``fit(..., resume_state=snapshot)`` does both for an
estimator; the Tune trainable stores ``snapshot.to_dict()`` (plain tensors and containers, so
``torch.load(weights_only=True)`` reads it back) and rebuilds it with ``TrainingSnapshot.from_dict``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from torch import nn

__all__ = ["SNAPSHOT_FORMAT", "TrainingSnapshot"]

SNAPSHOT_FORMAT = 2  # 1: the dict written by the first trainable (same keys, no dataclass)


def _net(model: nn.Module) -> nn.Module:
    """The network inside an estimator's input-standardising wrapper (or the model itself)."""
    return getattr(model, "net", model)


@dataclass(frozen=True)
class TrainingSnapshot:
    """Everything needed to continue a fit after its last completed epoch.

    Fields hold deep copies: a live model and optimiser keep training in place after the snapshot.
    """

    phase: str  # the loop's phase name ("supervised", "warm_start", "hisso")
    model: dict[str, Any]  # the model's state_dict at the end of the epoch
    loop: dict[str, Any]  # TrainingLoop.state_dict(): optimiser, step, history, best epoch
    phase_state: dict[str, Any]  # the phase's RNG state and counters
    callbacks: list[Any] = field(default_factory=list)  # each callback's state_dict() or None
    depth: int | None = None  # network depth now (progressive depth grows it)
    best_depth: int | None = None  # network depth at the best epoch
    format: int = SNAPSHOT_FORMAT

    @property
    def epoch(self) -> int:
        """The last completed epoch."""
        return int(self.loop["epoch"])

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records up to the snapshot."""
        return list(self.loop.get("history") or [])

    @property
    def best_record(self) -> dict[str, Any] | None:
        """The record of the best epoch so far (None when no epoch improved)."""
        return self.loop.get("best_record")

    @classmethod
    def capture(cls, loop: Any) -> "TrainingSnapshot":
        """Snapshot a running loop (use ``TrainingLoop.snapshot()``)."""
        best = loop.best_model
        return cls(**copy.deepcopy({
            "phase": loop.config.phase,
            "model": loop.model.state_dict(),
            "loop": loop.state_dict(),
            "phase_state": loop.phase_ref.state_dict(),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in loop.callbacks],
            "depth": getattr(_net(loop.model), "depth", None),
            "best_depth": getattr(_net(best), "depth", None) if best is not None else None,
        }))

    def restore_into(self, loop: Any, phase: Any) -> None:
        """Load this snapshot into a freshly built loop and phase (use ``TrainingLoop.restore``)."""
        net = _net(loop.model)
        if self.depth is not None and hasattr(net, "add_blocks"):
            # Progressive depth adds one block (one optimiser param group) at a time; replay that
            # so the optimiser state's groups line up.
            while net.depth < self.depth:
                loop.add_parameters(net.add_blocks(1))
        loop.model.load_state_dict(self.model)
        best_template = None
        if self.best_depth is not None and self.depth is not None and self.best_depth < self.depth:
            # The best epoch ran on a shallower net: rebuild that shape so its weights load.
            best_template = copy.deepcopy(loop.model)
            del _net(best_template).blocks[self.best_depth:]
        loop.load_state_dict(self.loop, best_template=best_template)
        phase.load_state_dict(self.phase_state)
        for callback, state in zip(loop.callbacks, self.callbacks):
            if state is not None and hasattr(callback, "load_state_dict"):
                callback.load_state_dict(state)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers and tensors, for ``torch.save`` and ``torch.load(weights_only=True)``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "TrainingSnapshot":
        """Rebuild a snapshot from ``to_dict()`` output, upgrading older formats."""
        data = dict(state)
        version = data.get("format", 1)
        if not isinstance(version, int) or version > SNAPSHOT_FORMAT:
            raise ValueError(
                f"training snapshot format {version!r} is newer than this library reads (<= {SNAPSHOT_FORMAT}); "
                "upgrade psann-sweeps"
            )
        missing = [key for key in ("phase", "model", "loop", "phase_state") if key not in data]
        if missing:
            raise ValueError(f"training snapshot is missing {', '.join(missing)}; it was not written by snapshot()")
        # Format 1 had the same keys as plain dict entries; only the version number changes.
        data["format"] = SNAPSHOT_FORMAT
        data.setdefault("callbacks", [])
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__ if key in data})

    @classmethod
    def coerce(cls, state: "TrainingSnapshot | Mapping[str, Any]") -> "TrainingSnapshot":
        """Accept a snapshot or its ``to_dict()`` form."""
        return state if isinstance(state, cls) else cls.from_dict(state)
