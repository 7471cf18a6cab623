import math

import numpy as np
import pytest
import torch

from psann.hisso.rewards import (
    RewardStrategy,
    available_reward_strategies,
    call_reward,
    get_reward_strategy,
    portfolio_reward,
    register_reward_strategy,
    resolve_reward,
)
from psann.errors import ValidationError
from psann.metrics import GROWTH_FLOOR, portfolio_metrics

PRICES = torch.tensor([[100.0, 50.0], [110.0, 40.0], [121.0, 60.0]])
ALLOCATIONS = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])


# Module-level reward functions so they can be resolved by import path.
def reward_with_trans_cost(actions, context, trans_cost=0.0):
    return torch.full(actions.shape[:1], float(trans_cost))


def reward_with_kwargs(actions, context, **kwargs):
    return torch.full(actions.shape[:1], float(kwargs.get("transition_penalty", -1.0)))


def reward_without_penalty(actions, context):
    return torch.full(actions.shape[:1], 7.0)


CUSTOM_STRATEGY = RewardStrategy(name="custom", reward_fn=reward_without_penalty, metrics_fn=portfolio_metrics)


@pytest.fixture
def clean_registry():
    """Drop any strategy a test registers, so tests stay independent."""
    before = set(available_reward_strategies())
    yield
    from psann.hisso import rewards

    for name in set(available_reward_strategies()) - before:
        del rewards._REGISTRY[name]


def test_portfolio_reward_equals_hand_formula():
    reward = portfolio_reward(ALLOCATIONS[None], PRICES[None], transition_penalty=0.01)
    # log(0.95) + log(1.1) - 0.01 * (|a1 - a0|_1 + |a2 - a1|_1) = ... - 0.01 * 3
    expected = math.log(0.95) + math.log(1.1) - 0.03
    assert reward.shape == (1,)
    assert reward.item() == pytest.approx(expected, abs=1e-6)  # float32


def test_portfolio_reward_log_growth_matches_metrics_log_return():
    reward = portfolio_reward(ALLOCATIONS[None].double(), PRICES[None].double())
    assert reward.item() == pytest.approx(portfolio_metrics(ALLOCATIONS, PRICES)["log_return"])


def test_portfolio_reward_is_per_episode_and_differentiable():
    torch.manual_seed(0)
    logits = torch.randn(5, 8, 3, requires_grad=True)
    prices = torch.exp(torch.cumsum(0.05 * torch.randn(5, 8, 3), dim=1))
    reward = portfolio_reward(torch.softmax(logits, dim=-1), prices, transition_penalty=0.1)
    assert reward.shape == (5,)
    (-reward.mean()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_single_column_context_broadcasts_to_every_asset():
    actions = torch.softmax(torch.randn(2, 6, 3), dim=-1)
    prices = torch.exp(torch.cumsum(0.1 * torch.randn(2, 6, 1), dim=1))
    broadcast = portfolio_reward(actions, prices)
    expanded = portfolio_reward(actions, prices.expand(2, 6, 3))
    torch.testing.assert_close(broadcast, expanded)


def test_context_with_wrong_last_dim_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 6, 3\).*\(2, 6, 2\)"):
        portfolio_reward(torch.ones(2, 6, 3), torch.ones(2, 6, 2))


def test_episode_of_one_step_is_refused():
    with pytest.raises(ValueError, match="at least 2 steps"):
        portfolio_reward(torch.ones(2, 1, 3), torch.ones(2, 1, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_actions_are_computed_in_float32(dtype):
    actions = torch.full((1, 3, 2), 0.5, dtype=dtype)
    # Price levels beyond float16's range (max 65504): computing in the actions' dtype would overflow.
    context = torch.tensor([[[1.0, 1.0], [3e4, 3e4], [9e8, 9e8]]])
    reward = portfolio_reward(actions, context)
    assert reward.dtype == torch.float32
    assert torch.isfinite(reward).all()
    assert reward.item() == pytest.approx(math.log(3e4) + math.log(3e4), rel=1e-2)


def test_reward_and_metrics_floor_a_total_loss_at_the_same_growth():
    prices = torch.tensor([[1.0], [1e-12]], dtype=torch.float64)  # the asset loses everything
    allocations = torch.ones(2, 1, dtype=torch.float64)
    reward = portfolio_reward(allocations[None], prices[None])
    assert reward.item() == pytest.approx(math.log(GROWTH_FLOOR))
    assert portfolio_metrics(allocations, prices)["log_return"] == pytest.approx(math.log(GROWTH_FLOOR))


def test_builtin_strategies_are_registered_and_finance_aliases_portfolio():
    assert {"portfolio", "finance"} <= set(available_reward_strategies())
    portfolio, finance = get_reward_strategy("portfolio"), get_reward_strategy("finance")
    assert finance.reward_fn is portfolio.reward_fn is portfolio_reward
    assert finance.metrics_fn is portfolio.metrics_fn is portfolio_metrics


def test_registry_names_are_case_insensitive(clean_registry):
    registered = register_reward_strategy("MyReward", (reward_without_penalty, portfolio_metrics))
    assert registered.name == "myreward"
    assert get_reward_strategy("MYREWARD") is registered
    assert "myreward" in available_reward_strategies()


def test_registering_an_existing_name_needs_overwrite(clean_registry):
    register_reward_strategy("mine", (reward_without_penalty, portfolio_metrics))
    with pytest.raises(ValueError, match="overwrite=True"):
        register_reward_strategy("MINE", (reward_with_kwargs, portfolio_metrics))
    replaced = register_reward_strategy("Mine", CUSTOM_STRATEGY, overwrite=True)
    assert replaced.name == "mine" and get_reward_strategy("mine").reward_fn is reward_without_penalty


def test_register_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        register_reward_strategy("broken", (reward_without_penalty, "not a function"))


def test_unknown_name_lists_available_and_suggests_close_match():
    with pytest.raises(ValidationError, match=r"did you mean 'portfolio'\?.*finance, portfolio") as info:
        get_reward_strategy("portfoli")
    assert info.value.key == "hisso.reward"
    with pytest.raises(ValueError, match=r"hisso\.reward.*did you mean 'finance'"):
        resolve_reward("Finanse")


def test_resolve_reward_by_name_is_case_insensitive():
    assert resolve_reward(" Portfolio ") is get_reward_strategy("portfolio")


@pytest.mark.parametrize(
    "path",
    [f"{__name__}:reward_with_kwargs", f"{__name__}.reward_with_kwargs"],
)
def test_resolve_reward_by_import_path_records_the_path(path):
    strategy = resolve_reward(path)
    assert strategy.name == path
    assert strategy.reward_fn is reward_with_kwargs
    assert strategy.metrics_fn is portfolio_metrics


def test_resolve_reward_import_path_to_a_strategy_keeps_its_functions_and_is_named_by_the_path():
    path = f"{__name__}:CUSTOM_STRATEGY"
    strategy = resolve_reward(path)
    assert (strategy.reward_fn, strategy.metrics_fn) == (CUSTOM_STRATEGY.reward_fn, CUSTOM_STRATEGY.metrics_fn)
    # The recorded name resolves again (a run records it; evaluation and reloading resolve it).
    assert strategy.name == path and resolve_reward(strategy.name) == strategy


@pytest.mark.parametrize(
    "spec", ["no_such_module.reward", f"{__name__}:missing_function", f"{__name__}:PRICES", "nonsense"]
)
def test_resolve_reward_unknown_path_names_the_setting_and_allowed_names(spec):
    with pytest.raises(ValidationError, match=r"hisso\.reward.*portfolio") as info:
        resolve_reward(spec)
    assert info.value.key == "hisso.reward"


def test_resolve_reward_callable_is_named_by_module_and_qualname():
    strategy = resolve_reward(reward_with_trans_cost)
    assert strategy.name == f"{__name__}.reward_with_trans_cost"
    assert strategy.reward_fn is reward_with_trans_cost
    assert resolve_reward(lambda a, c: a.sum((1, 2))).name == "<lambda>"
    with pytest.raises(TypeError):
        resolve_reward(42)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (reward_with_trans_cost, 0.25),  # receives trans_cost=
        (reward_with_kwargs, 0.25),  # **kwargs receives transition_penalty=
        (reward_without_penalty, 7.0),  # receives nothing extra
    ],
)
def test_call_reward_passes_the_penalty_under_the_accepted_keyword(fn, expected):
    reward = call_reward(fn, torch.ones(3, 4, 2), torch.ones(3, 4, 2), transition_penalty=0.25)
    torch.testing.assert_close(reward, torch.full((3,), expected))


def test_call_reward_passes_transition_penalty_to_the_builtin():
    actions = ALLOCATIONS[None].repeat(2, 1, 1)
    prices = PRICES[None].repeat(2, 1, 1)
    with_penalty = call_reward(portfolio_reward, actions, prices, transition_penalty=0.01)
    torch.testing.assert_close(with_penalty, portfolio_reward(actions, prices) - 0.03)


def test_call_reward_rejects_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 1\)"):
        call_reward(lambda a, c: a.sum(dim=(1, 2))[:, None], torch.ones(3, 4, 2), torch.ones(3, 4, 2), 0.0)


def test_reward_keeps_the_input_device_and_dtype_float64():
    actions = torch.full((2, 3, 2), 0.5, dtype=torch.float64)
    reward = portfolio_reward(actions, torch.ones(2, 3, 2, dtype=torch.float64))
    assert reward.dtype == torch.float64 and reward.device == actions.device
    np.testing.assert_allclose(reward.numpy(), 0.0)
