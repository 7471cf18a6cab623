"""HISSO throughput: episodes/s of the vectorised trainer against a naive one-episode loop.

Configurations (window 48, batch_episodes 8 and 64, "portfolio" reward against the data's prices):

  wave_resnet  WaveResNet (hidden 64, depth 4) on psann.data.regime_market_dataset rows
               (8 features, 4 assets).
  dense        the dense PSANN net (2 sine layers of 64) on the same rows.
  seeds        the seeds' experiment shape: WaveResNet (hidden 64, depth 4) on channels-first
               windows from psann.data.sequence_market_dataset (4 features x lookback 128, 4 assets),
               each (4, 128) sample flattened channels-first into 512 inputs
               (data_format="channels_first", preserve_shape=False), transition_penalty 0.001 as
               in configs/hisso/wave_resnet_*.yaml.

All run on CPU, and on CUDA in fp32, fp16 and bf16 autocast when a GPU is present.

  vectorised   est.fit(X, hisso=True, ...): each update gathers batch_episodes windows with one
               indexed read, one forward over all of them, rewards on the device, one host sync
               per epoch. episodes/s = the epoch records' episodes_per_second (median over the
               epochs after the first, which pays one-off costs).
  naive        the reference the issue asks for: one episode per update (a Python slice of the
               window's samples at a random start, flattened like the estimator flattens them),
               forward through the estimator's own model (its input standardisation included),
               softmax, portfolio reward with the same transition penalty, backward, the same
               gradient clipping, Adam (fused on CPU/CUDA, as the trainer's), and .item() on the
               reward after every update. episodes/s = updates / wall seconds (CUDA: synchronised).
               Its model comes from a public one-update fit of the same estimator (est.model_), so
               the bench needs no private builder.

Each repeat runs the naive loop and then the vectorised fits of one configuration back to back,
so a ratio compares figures measured under the same machine load. Reported side by side with the
ratio vectorised / naive (target >= 5x at batch_episodes 64 on CPU). Writes
bench/reports/<name>.md and .json (default name hisso_throughput).

    python bench/hisso_throughput.py                  # full run, every configuration
    python bench/hisso_throughput.py --configs seeds  # one configuration
    python bench/hisso_throughput.py --quick          # a short run (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, machine_line, markdown_table, median, write_report  # noqa: E402
from psann import PSANNRegressor, WaveResNetRegressor  # noqa: E402
from psann.data import regime_market_dataset, sequence_market_dataset  # noqa: E402
from psann.hisso import HISSOOptions, portfolio_reward  # noqa: E402

HIDDEN = 64
DEPTH = 4
WINDOW = 48
BATCH_EPISODES = (8, 64)
SEQUENCE_FEATURES = 4
SEQUENCE_LOOKBACK = 128


@dataclass(frozen=True)
class Configuration:
    """One benchmarked workload: a model family on one dataset."""

    name: str  # row label in the report
    model: str  # "wave_resnet" or "dense"
    data: str  # "regime" (rows of 8 features) or "sequence" ((4, 128) channels-first windows)
    transition_penalty: float  # HISSO transition penalty, the same in both loops


CONFIGURATIONS = {
    "wave_resnet": Configuration("wave_resnet", "wave_resnet", "regime", 0.0),
    "dense": Configuration("dense", "dense", "regime", 0.0),
    "seeds": Configuration("seeds", "wave_resnet", "sequence", 0.001),
}


def load_data(kind: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(X_train, prices_train) of the configuration's dataset."""
    if kind == "sequence":
        data = sequence_market_dataset(
            steps=steps, assets=4, features=SEQUENCE_FEATURES, lookback=SEQUENCE_LOOKBACK, seed=0
        )
    else:
        data = regime_market_dataset(steps=steps, assets=4, features=8, seed=0)
    return data["X_train"], data["prices_train"]


def make_estimator(model: str, device: str, epochs: int):
    if model == "wave_resnet":
        return WaveResNetRegressor(
            hidden_units=HIDDEN, depth=DEPTH, epochs=epochs, lr=1e-3, random_state=0, device=device,
            data_format="channels_first", preserve_shape=False,
        )
    return PSANNRegressor(hidden_layers=2, hidden_units=HIDDEN, epochs=epochs, lr=1e-3, random_state=0, device=device)


def hisso_options(config: Configuration, batch_episodes: int, updates: int, precision: str = "fp32") -> HISSOOptions:
    return HISSOOptions(
        window=WINDOW,
        batch_episodes=batch_episodes,
        updates_per_epoch=updates,
        reward="portfolio",
        transition_penalty=config.transition_penalty,
        mixed_precision=precision != "fp32",
        amp_dtype={"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float16"),
    )


def vectorised(config: Configuration, device: str, precision: str, batch_episodes: int, X, prices, args) -> dict:
    est = make_estimator(config.model, device, args.epochs)
    started = time.perf_counter()
    est.fit(X, hisso=True, hisso_options=hisso_options(config, batch_episodes, args.updates, precision), context=prices)
    wall = time.perf_counter() - started
    rates = est.history_.column("episodes_per_second")[1:]
    return {
        "episodes_per_second": median(rates),
        "fit_wall_seconds": wall,
        "amp": est.amp_,
        "final_reward_mean": est.history_[-1]["reward_mean"],
    }


def naive(config: Configuration, device: str, X, prices, updates: int) -> float:
    """One episode per update, .item() after each: the loop the vectorised design replaces."""
    dev = torch.device(device)
    # The estimator's own model (network and input standardisation), from a one-update public fit.
    est = make_estimator(config.model, device, 1)
    est.fit(X, hisso=True, hisso_options=hisso_options(config, 1, 1), context=prices)
    model = est.model_.train()
    X_t = torch.as_tensor(X, device=dev)
    prices_t = torch.as_tensor(prices, device=dev)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=dev.type in ("cpu", "cuda") or None)
    rng = np.random.default_rng(0)
    T = X.shape[0]

    def one_update() -> float:
        start = int(rng.integers(0, T - WINDOW + 1))
        # (WINDOW, *sample) -> (WINDOW, features): channels-first samples flatten as the estimator's do.
        xb = X_t[start : start + WINDOW].flatten(1)
        actions = torch.softmax(model(xb), dim=-1)
        reward = portfolio_reward(
            actions[None], prices_t[start : start + WINDOW][None], transition_penalty=config.transition_penalty
        )
        loss = -reward.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return reward.item()

    for _ in range(5):
        one_update()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(updates):
        one_update()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    targets = [] if args.cuda_only else [("cpu", "fp32")]
    if torch.cuda.is_available() and not args.cpu_only:
        targets += [("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")]
    elif args.cuda_only:
        print("no CUDA device: no rows to measure (--cuda-only)", flush=True)
    rows = []
    for name in args.configs:
        config = CONFIGURATIONS[name]
        X, prices = load_data(config.data, args.steps)
        for device, precision in targets:
            naive_rates: list[float] = []
            runs: dict[int, list[dict]] = {batch: [] for batch in args.batch_episodes}
            # Interleaved repeats: each ratio's two figures are measured minutes apart, not a whole run.
            for _ in range(args.repeats):
                naive_rates.append(naive(config, device, X, prices, args.naive_updates))
                for batch in args.batch_episodes:
                    runs[batch].append(vectorised(config, device, precision, batch, X, prices, args))
            naive_rate = median(naive_rates)
            for batch in args.batch_episodes:
                rate = median([r["episodes_per_second"] for r in runs[batch]])
                rows.append({
                    "config": name,
                    "model": config.model,
                    "sample_shape": list(X.shape[1:]),
                    "train_rows": int(X.shape[0]),
                    "transition_penalty": config.transition_penalty,
                    "device": device,
                    "precision": precision,
                    "batch_episodes": batch,
                    "episodes_per_second": rate,
                    "naive_episodes_per_second": naive_rate,
                    "speedup_vs_naive": rate / naive_rate,
                    "runs": runs[batch],
                    "naive_runs": naive_rates,
                })
                print(
                    f"{name:11s} {device}:{precision} B={batch:2d}  vectorised {rate:9.0f} episodes/s  "
                    f"naive {naive_rate:7.0f} episodes/s  {rate / naive_rate:6.1f}x",
                    flush=True,
                )
    return {"results": rows}


def report(args: argparse.Namespace, info: dict, data: dict, finished_load: tuple[float, ...] | None) -> str:
    rows = [
        [
            r["config"], "x".join(str(s) for s in r["sample_shape"]), f"{r['device']} {r['precision']}",
            r["batch_episodes"], f"{r['episodes_per_second']:,.0f}", f"{r['naive_episodes_per_second']:,.0f}",
            f"{r['speedup_vs_naive']:.1f}x", r["runs"][0]["amp"]["enabled"],
        ]
        for r in data["results"]
    ]
    header = ["config", "sample", "device", "batch_episodes", "vectorised episodes/s", "naive episodes/s", "ratio", "AMP active"]
    load_end = f"; load average at end {finished_load[0]:.2f}" if finished_load else ""
    return "\n\n".join([
        f"- {machine_line(info)}{load_end}",
        f"- window {WINDOW}, hidden {HIDDEN}, WaveResNet depth {DEPTH}, dense 2 sine layers; wave_resnet / dense: "
        f"regime market rows, 8 features, 4 assets; seeds: sequence market, {SEQUENCE_FEATURES} x "
        f"{SEQUENCE_LOOKBACK} channels-first samples, 4 assets, transition_penalty 0.001; steps {args.steps}; "
        f"{args.epochs} epochs x {args.updates} updates per vectorised fit (median episodes/s of epochs 2..), "
        f"{args.naive_updates} naive updates; median of {args.repeats} interleaved repeat(s). Target: >= 5x naive "
        "at batch_episodes 64 on CPU.",
        markdown_table(header, rows),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per configuration (median reported)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per vectorised fit (the first is not counted)")
    parser.add_argument("--updates", type=int, default=16, help="updates per epoch")
    parser.add_argument("--naive-updates", type=int, default=64, help="timed updates of the naive loop")
    parser.add_argument("--steps", type=int, default=3000, help="market steps of each dataset (60%% are trained on)")
    parser.add_argument(
        "--configs", nargs="+", choices=sorted(CONFIGURATIONS), default=list(CONFIGURATIONS),
        help="configurations to run (default: all)",
    )
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    parser.add_argument("--cuda-only", action="store_true", help="only the CUDA rows (none without a GPU)")
    parser.add_argument("--batch-episodes", type=int, nargs="+", default=list(BATCH_EPISODES),
                        help=f"episodes per update to measure (default: {' '.join(map(str, BATCH_EPISODES))})")
    parser.add_argument(
        "--quick", action="store_true", help="short run: 2 epochs x 4 updates, 16 naive updates, 1 repeat, 600 steps"
    )
    parser.add_argument("--name", default="hisso_throughput", help="report file stem under bench/reports/")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.updates, args.naive_updates, args.repeats, args.steps = 2, 4, 16, 1, 600
    info = machine(args.threads)
    data = run(args)
    finished_load = machine(args.threads)["load_average_at_start"]
    body = report(args, info, data, finished_load)
    md, js = write_report(
        args.name, "HISSO throughput (bench/hisso_throughput.py)", body,
        {"machine": info, "load_average_at_end": finished_load, "args": vars(args), **data},
    )
    print(body)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
