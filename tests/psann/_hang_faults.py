"""Rewards that make a run hang or crawl, for the --hang-timeout tests.

Run configs name them by import path (``tests.psann._hang_faults:hanging_reward``); the CLI runs
with the repository as its working directory, so ``tests`` imports as a namespace package. Each
run is its own process, so the call counter is per run.
"""

from __future__ import annotations

import time

import torch
import torch._dynamo  # noqa: F401 - see below

from psann.hisso.rewards import portfolio_reward

# torch imports its compiler stack on a process's first fit: seconds in which a run writes nothing.
# Importing it here, when the config names this module (before the run starts), keeps that silence
# out of the runs these tests time with a short --hang-timeout.

HANG_AFTER_CALLS = 3  # with updates_per_epoch 2: epoch 1 (2 updates, 1 validation pass), then it never returns
SLOW_CALL_SECONDS = 0.1

_calls = {"hanging": 0}


def hanging_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward for HANG_AFTER_CALLS calls, then a stuck call that writes nothing."""
    _calls["hanging"] += 1
    if _calls["hanging"] > HANG_AFTER_CALLS:
        while True:
            time.sleep(1.0)
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


def slow_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, SLOW_CALL_SECONDS late: a long run that keeps writing epoch rows."""
    time.sleep(SLOW_CALL_SECONDS)
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)
