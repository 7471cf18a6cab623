"""The HISSO episodic trainer through the estimators: errors, learning, schedules, resume, AMP."""

import logging

import numpy as np
import pytest
import torch

from psann import PSANNRegressor, WaveResNetRegressor
from psann.hisso import HISSOOptions, hisso_evaluate_reward, hisso_infer_series, portfolio_reward
from psann.training import Callback

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _est(cls=PSANNRegressor, **kwargs):
    base = dict(hidden_units=16, epochs=3, lr=0.01, random_state=0, device="cpu")
    if cls is PSANNRegressor:
        base["hidden_layers"] = 1
    else:
        base["depth"] = 1
    base.update(kwargs)
    return cls(**base)


def _opts(**kwargs):
    base = dict(window=8, batch_episodes=16, updates_per_epoch=8, val_episodes=32)
    base.update(kwargs)
    return HISSOOptions(**base)


def signal_market(steps=300, seed=0, edge=0.01):
    """Two assets and a visible sign s_t: asset 0 gains edge when s_t = +1, asset 1 when -1."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=steps)
    X = np.stack([sign, rng.normal(size=steps)], axis=1).astype(np.float32)
    gross = np.stack([1 + edge * sign, 1 - edge * sign], axis=1)
    prices = np.vstack([np.ones((1, 2)), np.cumprod(gross[:-1], axis=0)]).astype(np.float32)
    return X, prices


def growth_market(steps=200, seed=0):
    """Asset 0 grows 1% a step, asset 1 is flat; the inputs carry no information."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(steps, 3)).astype(np.float32)
    prices = np.stack([1.01 ** np.arange(steps), np.ones(steps)], axis=1).astype(np.float32)
    return X, prices


class Records(Callback):
    def __init__(self):
        self.records = []

    def on_epoch_end(self, loop, record):
        self.records.append(dict(record))


# -- validation errors -----------------------------------------------------------------------------


def test_window_longer_than_the_series_is_refused():
    X, prices = growth_market(steps=20)
    with pytest.raises(ValueError, match=r"hisso.window: 32 is longer than the training series \(20 rows\)"):
        _est().fit(X, hisso=True, hisso_options=_opts(window=32), context=prices)


def test_window_longer_than_the_validation_series_is_refused():
    X, prices = growth_market(steps=60)
    with pytest.raises(ValueError, match=r"hisso.window: 16 is longer than the validation series \(10 rows\)"):
        _est().fit(X, hisso=True, hisso_options=_opts(window=16), context=prices, validation_data=(X[:10], None, prices[:10]))


def test_unknown_reward_name_lists_the_registered_ones():
    X, prices = growth_market(steps=40)
    with pytest.raises(ValueError, match=r"(?i)hisso.reward: unknown reward 'portfolo'.*did you mean 'portfolio'\?.*finance, portfolio") as excinfo:
        _est().fit(X, hisso=True, hisso_options=_opts(reward="portfolo"), context=prices)
    assert excinfo.value.key == "hisso.reward"


def test_softmax_over_a_single_output_is_refused():
    X, prices = growth_market(steps=40)
    with pytest.raises(ValueError, match="hisso.primary_transform: softmax over a single output is a constant action"):
        _est().fit(X, hisso=True, hisso_options=_opts(), context=prices[:, :1])


def test_context_last_dim_mismatch_names_both_shapes():
    X, prices = growth_market(steps=40)
    y = np.zeros((40, 2), np.float32)  # two actions
    context = np.concatenate([prices, prices[:, :1]], axis=1)  # three columns
    with pytest.raises(ValueError, match=r"M=2 \(or be 1\); got context \(40, 3\) for actions \(T, 2\)"):
        _est().fit(X, y, hisso=True, hisso_options=_opts(), context=context)


def test_context_with_other_row_count_names_both_shapes():
    X, prices = growth_market(steps=40)
    with pytest.raises(ValueError, match=r"context must have one row per row of X: X \(40, 3\), context \(39, 2\)"):
        _est().fit(X, hisso=True, hisso_options=_opts(), context=prices[:39])


def test_context_of_one_column_is_broadcast_over_the_actions():
    X, prices = growth_market(steps=60)
    y = np.zeros((60, 2), np.float32)
    est = _est(epochs=1).fit(X, y, hisso=True, hisso_options=_opts(), context=prices[:, :1])
    assert est.hisso_["output_dim"] == 2 and est.hisso_["context_source"] == "context"
    assert hisso_infer_series(est, X).shape == (60, 2)


def test_inputs_are_read_as_prices_only_when_positive():
    X, prices = growth_market(steps=60)
    est = _est(epochs=1).fit(prices, hisso=True, hisso_options=_opts())
    assert est.hisso_["context_source"] == "inputs" and est.hisso_["reward"] == "portfolio"
    with pytest.raises(ValueError, match="inputs are read as price levels, but X has non-positive values"):
        _est(epochs=1).fit(X, hisso=True, hisso_options=_opts())


def test_validation_needs_a_context_when_fit_has_one():
    X, prices = growth_market(steps=60)
    with pytest.raises(ValueError, match=r"validation_data: needs a third item \(context_val\)"):
        _est().fit(X, hisso=True, hisso_options=_opts(), context=prices, validation_data=(X, None))


# -- learning --------------------------------------------------------------------------------------


def test_hisso_learns_a_visible_pattern_and_validation_reward_improves():
    X, prices = signal_market(steps=400, seed=0)
    X_val, prices_val = signal_market(steps=200, seed=1)
    est = _est(epochs=6).fit(
        X, hisso=True, hisso_options=_opts(reward="portfolio"), context=prices, validation_data=(X_val, None, prices_val)
    )
    val = est.history_.column("val_reward_mean")
    # the best possible per-episode reward is 7 * log(1.01) = 0.0697; uniform weights earn ~0.
    assert val[-1] > val[0] + 0.01
    assert val[-1] > 0.03
    assert est.hisso_["reward"] == "portfolio"


def test_policy_learns_to_hold_the_growing_asset_and_its_reward_rises():
    X, prices = growth_market()
    est = _est(epochs=8).fit(X, hisso=True, hisso_options=_opts(), context=prices)
    allocations = hisso_infer_series(est, X)
    assert allocations[:, 0].mean() > 0.7
    rewards = est.history_.column("reward_mean")
    assert rewards[-1] > rewards[0]


def test_same_seed_gives_the_same_cpu_result():
    X, prices = signal_market(steps=120)
    fit = lambda: _est(epochs=2).fit(X, hisso=True, hisso_options=_opts(input_noise=0.1), context=prices)
    a, b = fit(), fit()
    assert a.history_.column("reward_mean") == b.history_.column("reward_mean")
    for key, value in a.model_.state_dict().items():
        assert torch.equal(value, b.model_.state_dict()[key]), key
    c = _est(epochs=2, random_state=1).fit(X, hisso=True, hisso_options=_opts(input_noise=0.1), context=prices)
    assert c.history_.column("reward_mean") != a.history_.column("reward_mean")


def test_epoch_records_carry_the_hisso_observability_fields():
    X, prices = growth_market(steps=80)
    records = Records()
    est = _est(epochs=2).fit(X, hisso=True, hisso_options=_opts(), context=prices, validation_data=(X, None, prices), callbacks=[records])
    assert records.records == list(est.history_)
    expected = {
        "epoch", "phase", "lr", "train_loss", "reward_mean", "reward_std", "val_loss", "val_reward_mean",
        "episodes", "episodes_per_second", "data_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds",
    }
    assert expected <= set(records.records[0])
    assert [r["episodes"] for r in records.records] == [128, 256]
    assert all(r["phase"] == "hisso" for r in records.records)


# -- schedules under HISSO ---------------------------------------------------------------------------


def test_w0_ramps_and_depth_grows_during_a_hisso_fit_of_wave_resnet():
    X, prices = growth_market(steps=80)
    est = _est(
        WaveResNetRegressor, epochs=4, depth=3, first_layer_w0=30.0, w0_warmup_epochs=3,
        progressive_depth_initial=1, progressive_depth_interval=1,
    ).fit(X, hisso=True, hisso_options=_opts(), context=prices)
    assert est.history_.column("first_layer_w0") == pytest.approx([1.0, 1.0 + 29 / 3, 1.0 + 58 / 3, 30.0])
    assert est.history_.column("depth") == [2, 3, 3, 3]
    assert est.model_.net.depth == 3


# -- warm start ------------------------------------------------------------------------------------


def test_supervised_warm_start_runs_before_hisso_and_is_seen_by_callbacks():
    X, prices = growth_market(steps=80)
    y = np.tile([[1.0, 0.0]], (80, 1)).astype(np.float32)
    records = Records()
    opts = HISSOOptions.from_mapping(
        {"window": 8, "batch_episodes": 16, "updates_per_epoch": 4, "supervised": {"epochs": 2, "batch_size": 16}}
    )
    est = _est(epochs=2).fit(X, y, hisso=True, hisso_options=opts, context=prices, callbacks=[records])
    assert [r["phase"] for r in records.records] == ["warm_start", "warm_start", "hisso", "hisso"]
    assert records.records[0]["train_loss"] > records.records[1]["train_loss"]
    assert est.hisso_["warm_start"] is True
    assert [r["phase"] for r in est.history_] == ["hisso", "hisso"]


def test_warm_start_without_targets_is_refused():
    X, prices = growth_market(steps=80)
    opts = HISSOOptions.from_mapping({"window": 8, "supervised": {"epochs": 1}})
    with pytest.raises(ValueError, match="hisso.supervised: a warm start needs targets"):
        _est().fit(X, hisso=True, hisso_options=opts, context=prices)


# -- inference and evaluation ------------------------------------------------------------------------


def test_infer_series_gives_allocations_on_the_simplex_for_softmax():
    X, prices = signal_market(steps=100)
    est = _est(epochs=1).fit(X, hisso=True, hisso_options=_opts(), context=prices)
    allocations = hisso_infer_series(est, X)
    assert allocations.shape == (100, 2)
    assert (allocations >= 0).all()
    np.testing.assert_allclose(allocations.sum(axis=1), 1.0, atol=1e-6)


def test_evaluate_reward_scores_the_whole_split_with_the_portfolio_formula():
    X, prices = signal_market(steps=120)
    penalty = 0.002
    est = _est(epochs=2).fit(X, hisso=True, hisso_options=_opts(transition_penalty=penalty), context=prices)
    result = hisso_evaluate_reward(est, X, context=prices)
    actions = torch.from_numpy(hisso_infer_series(est, X))
    expected_full = portfolio_reward(actions[None], torch.from_numpy(prices)[None], transition_penalty=penalty)
    assert result["reward_full"] == pytest.approx(float(expected_full[0]), rel=1e-5, abs=1e-6)
    # and by hand, straight from DESIGN.md: sum_t log(a_t . c_{t+1}/c_t) - penalty * |a_{t+1} - a_t|_1
    a = actions.double().numpy()
    growth = (a[:-1] * (prices[1:] / prices[:-1])).sum(axis=1)
    by_hand = np.log(growth).sum() - penalty * np.abs(np.diff(a, axis=0)).sum()
    assert result["reward_full"] == pytest.approx(by_hand, rel=1e-4)
    assert result["windows"] == 120 // 8 and result["reward"] == "portfolio"
    windows = [float(portfolio_reward(actions[s : s + 8][None], torch.from_numpy(prices[s : s + 8])[None], transition_penalty=penalty)[0]) for s in range(0, 113, 8)]
    assert result["reward_window_mean"] == pytest.approx(np.mean(windows), rel=1e-5)


def test_evaluate_reward_requires_the_context_the_policy_was_trained_with():
    X, prices = signal_market(steps=60)
    est = _est(epochs=1).fit(X, hisso=True, hisso_options=_opts(), context=prices)
    with pytest.raises(ValueError, match="pass context= for evaluation"):
        hisso_evaluate_reward(est, X)


def test_inference_helpers_refuse_a_supervised_fit():
    X, prices = signal_market(steps=60)
    est = _est(epochs=1).fit(X, prices)
    with pytest.raises(ValueError, match="was not fitted with hisso=True"):
        hisso_infer_series(est, X)


def test_hisso_fit_survives_save_and_load(tmp_path):
    X, prices = signal_market(steps=80)
    est = _est(epochs=1).fit(X, hisso=True, hisso_options=_opts(transition_penalty=0.001), context=prices)
    est.save(tmp_path / "m")
    loaded = PSANNRegressor.load(tmp_path / "m")
    np.testing.assert_array_equal(hisso_infer_series(loaded, X), hisso_infer_series(est, X))
    assert hisso_evaluate_reward(loaded, X, prices) == hisso_evaluate_reward(est, X, prices)


# -- custom rewards ----------------------------------------------------------------------------------

CALLS = {}


def reward_with_transition_penalty(actions, context, transition_penalty):
    CALLS["transition_penalty"] = transition_penalty
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


def reward_with_trans_cost(actions, context, *, trans_cost=0.0):
    CALLS["trans_cost"] = trans_cost
    return portfolio_reward(actions, context, transition_penalty=trans_cost)


def reward_without_penalty(actions, context):
    CALLS["neither"] = True
    return portfolio_reward(actions, context)


@pytest.mark.parametrize(
    "fn, key, value",
    [(reward_with_transition_penalty, "transition_penalty", 0.003), (reward_with_trans_cost, "trans_cost", 0.003), (reward_without_penalty, "neither", True)],
)
def test_custom_reward_callables_train_with_or_without_a_penalty_keyword(fn, key, value):
    CALLS.clear()
    X, prices = growth_market(steps=60)
    est = _est(epochs=2).fit(X, hisso=True, hisso_options=_opts(reward=fn, transition_penalty=0.003), context=prices)
    assert CALLS[key] == value
    assert est.hisso_["reward"] == f"{__name__}.{fn.__qualname__}"
    assert np.isfinite(est.history_.column("reward_mean")).all()


def test_reward_named_by_import_path_is_recorded_by_that_path():
    X, prices = growth_market(steps=60)
    path = f"{__name__}:reward_without_penalty"
    est = _est(epochs=1).fit(X, hisso=True, hisso_options=_opts(reward=path), context=prices)
    assert est.hisso_["reward"] == path


# -- mixed precision -------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_mixed_precision_on_cpu_is_accepted_recorded_inactive_and_logged_once(caplog):
    X, prices = growth_market(steps=60)
    with caplog.at_level(logging.INFO, logger="psann.training"):
        est = _est(epochs=2).fit(X, hisso=True, hisso_options=_opts(mixed_precision=True), context=prices)
    assert est.amp_ == {"enabled": False, "dtype": None, "skipped_steps": 0}
    notes = [r for r in caplog.records if "mixed_precision requested" in r.getMessage()]
    assert len(notes) == 1 and "not active" in notes[0].getMessage()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_amp_hisso_fit_on_cuda_runs_and_counts_skipped_steps(amp_dtype):
    X, prices = signal_market(steps=400)
    est = WaveResNetRegressor(hidden_units=32, depth=2, epochs=3, lr=0.01, random_state=0, device="cuda").fit(
        X, hisso=True, hisso_options=_opts(mixed_precision=True, amp_dtype=amp_dtype, batch_episodes=64), context=prices,
        validation_data=(X, None, prices),
    )
    assert est.amp_["enabled"] is True and est.amp_["dtype"] == amp_dtype
    assert isinstance(est.amp_["skipped_steps"], int) and 0 <= est.amp_["skipped_steps"] < 3 * 8
    assert est.history_[-1]["skipped_steps"] == est.amp_["skipped_steps"]
    assert np.isfinite(est.history_.column("reward_mean")).all()
    assert est.history_.column("val_reward_mean")[-1] > est.history_.column("val_reward_mean")[0]


# -- resume ----------------------------------------------------------------------------------------


class CaptureAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch
        self.state = None

    def on_epoch_end(self, loop, record):
        if record["epoch"] == self.epoch and record["phase"] == loop.config.phase == "hisso":
            self.state = loop.snapshot()


RESUMABLE = {
    "dense": lambda: _est(epochs=5),
    "wave_resnet_schedules": lambda: _est(
        WaveResNetRegressor, epochs=5, depth=3, w0_warmup_epochs=3, progressive_depth_initial=1, progressive_depth_interval=2
    ),
}


@pytest.mark.parametrize("kind", sorted(RESUMABLE))
def test_resume_from_an_epoch_snapshot_reproduces_the_uninterrupted_fit(kind):
    X, prices = signal_market(steps=160)
    X_val, prices_val = signal_market(steps=60, seed=1)
    opts = _opts(input_noise=0.05)
    kwargs = dict(hisso=True, hisso_options=opts, context=prices, validation_data=(X_val, None, prices_val))
    capture = CaptureAt(2)
    full = RESUMABLE[kind]().fit(X, callbacks=[capture], **kwargs)
    resumed = RESUMABLE[kind]().fit(X, resume_state=capture.state, **kwargs)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4, 5]
    assert resumed.history_.column("reward_mean") == full.history_.column("reward_mean")
    full_state, resumed_state = full.model_.state_dict(), resumed.model_.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key


def test_resume_of_a_supervised_fit_reproduces_the_uninterrupted_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 2)).astype(np.float32)
    y = np.sin(X.sum(axis=1))

    class Capture(Callback):
        state = None

        def on_epoch_end(self, loop, record):
            if record["epoch"] == 2:
                self.state = loop.snapshot()

    capture = Capture()
    full = _est(epochs=4, batch_size=32).fit(X, y, callbacks=[capture])
    resumed = _est(epochs=4, batch_size=32).fit(X, y, resume_state=capture.state)
    np.testing.assert_array_equal(resumed.predict(X), full.predict(X))
