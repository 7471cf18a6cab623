"""HISSO throughput: episodes/s of the vectorised trainer against a naive one-episode loop.

Configurations: WaveResNet (hidden 64, depth 4) and the dense PSANN net (2 sine layers of 64),
window 48, batch_episodes 8 and 64, on CPU (and on CUDA in fp32, fp16 and bf16 autocast when a
GPU is present). The data is psann.data.regime_market_dataset (8 features, 4 assets), rewarded by
the "portfolio" reward against its prices.

  vectorised   est.fit(X, hisso=True, ...): each update gathers batch_episodes windows with one
               indexed read, one forward over all of them, rewards on the device, one host sync
               per epoch. episodes/s = the epoch records' episodes_per_second (median over the
               epochs after the first, which pays one-off costs).
  naive        the reference the issue asks for: one episode per update (a Python slice at a
               random start), forward, softmax, portfolio reward, backward, Adam with the same
               gradient clipping, and .item() on the reward after every update.
               episodes/s = updates / wall seconds (CUDA: synchronised).

Reported side by side with the ratio vectorised / naive (target >= 5x at batch_episodes 64 on
CPU). Writes bench/reports/hisso_throughput.md and .json.

    python bench/hisso_throughput.py            # full run
    python bench/hisso_throughput.py --quick    # a short run (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, machine_line, markdown_table, median, write_report  # noqa: E402
from psann import PSANNRegressor, WaveResNetRegressor  # noqa: E402
from psann.data import regime_market_dataset  # noqa: E402
from psann.hisso import HISSOOptions, portfolio_reward  # noqa: E402

HIDDEN = 64
DEPTH = 4
WINDOW = 48


def make_estimator(model: str, device: str, epochs: int):
    if model == "wave_resnet":
        return WaveResNetRegressor(hidden_units=HIDDEN, depth=DEPTH, epochs=epochs, lr=1e-3, random_state=0, device=device)
    return PSANNRegressor(hidden_layers=2, hidden_units=HIDDEN, epochs=epochs, lr=1e-3, random_state=0, device=device)


def vectorised(model: str, device: str, precision: str, batch_episodes: int, X, prices, args) -> dict:
    opts = HISSOOptions(
        window=WINDOW,
        batch_episodes=batch_episodes,
        updates_per_epoch=args.updates,
        reward="portfolio",
        mixed_precision=precision != "fp32",
        amp_dtype={"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float16"),
    )
    est = make_estimator(model, device, args.epochs)
    started = time.perf_counter()
    est.fit(X, hisso=True, hisso_options=opts, context=prices)
    wall = time.perf_counter() - started
    rates = est.history_.column("episodes_per_second")[1:]
    return {
        "episodes_per_second": median(rates),
        "fit_wall_seconds": wall,
        "amp": est.amp_,
        "final_reward_mean": est.history_[-1]["reward_mean"],
    }


def naive(model: str, device: str, X, prices, updates: int) -> float:
    """One episode per update, .item() after each: the loop the vectorised design replaces."""
    dev = torch.device(device)
    est = make_estimator(model, device, 1)
    # Build the same network the estimator would (and its input standardisation).
    X_t = torch.as_tensor(X, device=dev)
    prices_t = torch.as_tensor(prices, device=dev)
    net = est._build_network(X.shape[1], prices.shape[1]).to(dev)
    mean, std = X_t.mean(0), X_t.std(0).clamp_min(1e-6)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    T = X.shape[0]

    def one_update() -> float:
        start = int(rng.integers(0, T - WINDOW + 1))
        xb = (X_t[start : start + WINDOW] - mean) / std
        actions = torch.softmax(net(xb), dim=-1)
        reward = portfolio_reward(actions[None], prices_t[start : start + WINDOW][None])
        loss = -reward.mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
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
    data = regime_market_dataset(steps=3000, assets=4, features=8, seed=0)
    X, prices = data["X_train"], data["prices_train"]
    targets = [("cpu", "fp32")]
    if torch.cuda.is_available() and not args.cpu_only:
        targets += [("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")]
    rows = []
    for model in ("wave_resnet", "dense"):
        for device, precision in targets:
            naive_rates = [naive(model, device, X, prices, args.naive_updates) for _ in range(args.repeats)]
            naive_rate = median(naive_rates)
            for batch in (8, 64):
                runs = [vectorised(model, device, precision, batch, X, prices, args) for _ in range(args.repeats)]
                rate = median([r["episodes_per_second"] for r in runs])
                row = {
                    "model": model,
                    "device": device,
                    "precision": precision,
                    "batch_episodes": batch,
                    "episodes_per_second": rate,
                    "naive_episodes_per_second": naive_rate,
                    "speedup_vs_naive": rate / naive_rate,
                    "runs": runs,
                    "naive_runs": naive_rates,
                }
                rows.append(row)
                print(
                    f"{model:11s} {device}:{precision} B={batch:2d}  vectorised {rate:9.0f} episodes/s  "
                    f"naive {naive_rate:7.0f} episodes/s  {rate / naive_rate:6.1f}x",
                    flush=True,
                )
    return {"results": rows}


def report(args: argparse.Namespace, info: dict, data: dict) -> str:
    rows = [
        [
            r["model"], f"{r['device']} {r['precision']}", r["batch_episodes"], f"{r['episodes_per_second']:,.0f}",
            f"{r['naive_episodes_per_second']:,.0f}", f"{r['speedup_vs_naive']:.1f}x",
            r["runs"][0]["amp"]["enabled"],
        ]
        for r in data["results"]
    ]
    header = ["model", "device", "batch_episodes", "vectorised episodes/s", "naive episodes/s", "ratio", "AMP active"]
    return "\n\n".join([
        f"- {machine_line(info)}",
        f"- window {WINDOW}, hidden {HIDDEN}, WaveResNet depth {DEPTH}, dense 2 sine layers; regime market, 8 features, "
        f"4 assets; {args.epochs} epochs x {args.updates} updates per vectorised fit (median episodes/s of epochs 2..), "
        f"{args.naive_updates} naive updates; median of {args.repeats} repeat(s). Target: >= 5x naive at "
        "batch_episodes 64 on CPU.",
        markdown_table(header, rows),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per configuration (median reported)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per vectorised fit (the first is not counted)")
    parser.add_argument("--updates", type=int, default=16, help="updates per epoch")
    parser.add_argument("--naive-updates", type=int, default=64, help="timed updates of the naive loop")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    parser.add_argument("--quick", action="store_true", help="short run: 2 epochs x 4 updates, 16 naive updates, 1 repeat")
    parser.add_argument("--name", default="hisso_throughput", help="report file stem under bench/reports/")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.updates, args.naive_updates, args.repeats = 2, 4, 16, 1
    info = machine(args.threads)
    data = run(args)
    body = report(args, info, data)
    md, js = write_report(args.name, "HISSO throughput (bench/hisso_throughput.py)", body, {"machine": info, "args": vars(args), **data})
    print(body)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
