"""Fit throughput: PSANN estimators against a plain ReLU MLP trained by a hand-written loop.

For each input width (1 and 16 features) and each estimator (PSANNRegressor: 2 sine layers of 64;
WaveResNetRegressor: 64 units, depth 4), one run measures side by side, interleaved repeat by
repeat so that load on a shared machine hits every variant alike:

  estimator        est.fit(X, y) end to end (validation of inputs, standardisation, the one
                   training loop with its callbacks and timers): samples/s = n * epochs / wall
  net, hand loop   the same PSANN network in the minimal loop below (torch.optim.Adam, fused as
                   the training loop uses): the estimator layer's own overhead is the gap
  ReLU MLP         a plain MLP with the same Linear layers and ReLU in the minimal loop with the
                   default torch.optim.Adam (what a user would write), and with fused Adam

The minimal loop: per epoch one torch.randperm, then per batch of 128 an index gather, forward,
MSE, zero_grad, backward, Adam step. Reported: the median samples/s over --repeats, and the cost
ratio per sample, estimator vs ReLU MLP (target <= 1.5x). Writes bench/reports/fit_throughput.md
and .json.

    python bench/fit_throughput.py            # 5 repeats of 3 epochs on 4096 samples
    python bench/fit_throughput.py --quick    # a short run (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from bench._common import machine, machine_line, markdown_table, median, write_report  # noqa: E402
from psann import PSANNRegressor, WaveResNetRegressor  # noqa: E402

HIDDEN = 64
BATCH = 128
WAVE_DEPTH = 4


def make_data(n: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (np.exp(-0.3 * np.abs(X.sum(axis=1))) * np.sin(3 * X.sum(axis=1))).astype(np.float32)
    return X, y


def relu_mlp(features: int, hidden_linears: int) -> nn.Module:
    """Linear(F, 64), ReLU, then hidden_linears x (Linear(64, 64), ReLU), then Linear(64, 1)."""
    layers: list[nn.Module] = [nn.Linear(features, HIDDEN), nn.ReLU()]
    for _ in range(hidden_linears):
        layers += [nn.Linear(HIDDEN, HIDDEN), nn.ReLU()]
    layers.append(nn.Linear(HIDDEN, 1))
    return nn.Sequential(*layers)


def hand_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, *, fused: bool) -> float:
    """The minimal training loop; returns samples/s."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused else None)
    generator = torch.Generator().manual_seed(0)
    n = X.shape[0]
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, BATCH):
            idx = order[start : start + BATCH]
            xb, yb = X.index_select(0, idx), y.index_select(0, idx)
            loss = torch.mean((model(xb) - yb) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return n * epochs / (time.perf_counter() - started)


def estimator_fit(make: Callable[[], object], X: np.ndarray, y: np.ndarray, epochs: int) -> float:
    est = make()
    started = time.perf_counter()
    est.fit(X, y)
    return X.shape[0] * epochs / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    families = {
        "PSANNRegressor": dict(
            make=lambda epochs: PSANNRegressor(
                hidden_layers=2, hidden_units=HIDDEN, batch_size=BATCH, epochs=epochs, random_state=0, device="cpu"
            ),
            hidden_linears=1,  # 2 sine layers = Linear(F,64) + 1 x Linear(64,64)
        ),
        "WaveResNetRegressor": dict(
            make=lambda epochs: WaveResNetRegressor(
                hidden_units=HIDDEN, depth=WAVE_DEPTH, batch_size=BATCH, epochs=epochs, random_state=0, device="cpu"
            ),
            hidden_linears=2 * WAVE_DEPTH,  # stem + 2 Linear(64,64) per block
        ),
    }
    results = []
    for features in args.features:
        X, y = make_data(args.samples, features)
        X_t, y_t = torch.from_numpy(X), torch.from_numpy(y).unsqueeze(1)
        for name, family in families.items():
            make = family["make"]
            # The PSANN network exactly as the estimator builds it (fit once to get model_.net).
            net_template = make(1).fit(X[:BATCH], y[:BATCH]).model_.net
            variants: dict[str, Callable[[], float]] = {
                "estimator": lambda: estimator_fit(lambda: make(args.epochs), X, y, args.epochs),
                "net_hand_loop": lambda: hand_loop(
                    __import__("copy").deepcopy(net_template), X_t, y_t, args.epochs, fused=True
                ),
                "mlp_default_adam": lambda: hand_loop(relu_mlp(features, family["hidden_linears"]), X_t, y_t, args.epochs, fused=False),
                "mlp_fused_adam": lambda: hand_loop(relu_mlp(features, family["hidden_linears"]), X_t, y_t, args.epochs, fused=True),
            }
            for fn in variants.values():  # warm-up: first calls pay one-off allocation and dispatch costs
                fn()
            samples: dict[str, list[float]] = {key: [] for key in variants}
            for _ in range(args.repeats):
                for key, fn in variants.items():
                    samples[key].append(fn())
            med = {key: median(values) for key, values in samples.items()}
            row = {
                "model": name,
                "features": features,
                "samples_per_second": med,
                "all_samples_per_second": samples,
                "cost_ratio_vs_mlp_default_adam": med["mlp_default_adam"] / med["estimator"],
                "cost_ratio_vs_mlp_fused_adam": med["mlp_fused_adam"] / med["estimator"],
                "estimator_overhead_vs_hand_loop": med["net_hand_loop"] / med["estimator"],
            }
            results.append(row)
            print(
                f"{name:20s} F={features:2d}  estimator {med['estimator']:9.0f}/s  net+hand loop {med['net_hand_loop']:9.0f}/s  "
                f"MLP (Adam) {med['mlp_default_adam']:9.0f}/s  MLP (fused Adam) {med['mlp_fused_adam']:9.0f}/s  "
                f"cost ratio {row['cost_ratio_vs_mlp_default_adam']:.2f}x / {row['cost_ratio_vs_mlp_fused_adam']:.2f}x",
                flush=True,
            )
    return {"results": results}


def report(args: argparse.Namespace, info: dict, data: dict) -> str:
    rows = []
    for r in data["results"]:
        m = r["samples_per_second"]
        rows.append([
            r["model"], r["features"], f"{m['estimator']:,.0f}", f"{m['net_hand_loop']:,.0f}",
            f"{m['mlp_default_adam']:,.0f}", f"{m['mlp_fused_adam']:,.0f}",
            f"{r['cost_ratio_vs_mlp_default_adam']:.2f}x", f"{r['cost_ratio_vs_mlp_fused_adam']:.2f}x",
            f"{r['estimator_overhead_vs_hand_loop']:.2f}x",
        ])
    header = [
        "model", "features", "estimator samples/s", "same net, hand loop", "ReLU MLP (Adam)",
        "ReLU MLP (fused Adam)", "cost vs MLP (Adam)", "cost vs MLP (fused)", "estimator / hand loop",
    ]
    return "\n\n".join([
        f"- {machine_line(info)}",
        f"- {args.samples} samples, batch {BATCH}, hidden {HIDDEN}, {args.epochs} epochs per fit; median of "
        f"{args.repeats} interleaved repeats after one warm-up each. Cost ratio = MLP samples/s / estimator "
        "samples/s (target <= 1.5x).",
        markdown_table(header, rows),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per variant (median reported)")
    parser.add_argument("--samples", type=int, default=4096, help="training rows per fit")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit")
    parser.add_argument("--features", type=int, nargs="+", default=[1, 16], help="input widths to measure")
    parser.add_argument("--quick", action="store_true", help="short run: 1024 samples, 1 epoch, 2 repeats")
    parser.add_argument("--name", default="fit_throughput", help="report file stem under bench/reports/")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.epochs, args.repeats = 1024, 1, 2
    info = machine(args.threads)
    data = run(args)
    body = report(args, info, data)
    md, js = write_report(args.name, "Fit throughput (bench/fit_throughput.py)", body, {"machine": info, "args": vars(args), **data})
    print(body)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
