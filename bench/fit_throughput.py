"""Fit throughput: PSANN against a plain ReLU MLP, and the sine kernel against today's activation.

Two sections, each measured side by side in one run, interleaved repeat by repeat so that load on a
shared machine hits every variant alike:

1. Step time (``--batches``, default 128 and 1024; 16 inputs). One training step: index gather,
   forward, MSE, zero_grad, backward, fused Adam step. For PSANNNet (2 sine layers of 64) and
   WaveResNet (64 units, depth 4), each in four variants:

     kernel            the network as the library builds it (psann/_sine_kernel.py's Function)
     today             the same weights with today's activation, the plain formula in autograd
                       ops (``TodaySineActivation`` below: the baseline, kept here, not in psann)
     kernel, compiled  torch.compile(network), dynamic=False (under compile the library traces
                       the plain formula, which inductor fuses)
     today, compiled

   beside the ReLU MLP with the same Linear layers, eager and compiled. Reported: median us/step,
   the kernel's change against today (target: >= 30% lower eagerly), PSANN / MLP (target <= 1.5x
   with compile; <= 1.5x eagerly is the long-range goal), and each compiled variant's first-step
   compile time (inductor's caches disabled: the time a first use pays).

2. Estimator (1 and 16 features, batch 128): samples/s of ``est.fit(X, y)`` end to end, against
   the same PSANN network in the minimal loop and the ReLU MLP (default and fused Adam).

Writes bench/reports/<name>.md and .json.

    python bench/fit_throughput.py                 # the full run (about 6 minutes on 2 cores)
    python bench/fit_throughput.py --quick         # a short run (smoke test); skips "today, compiled"
                                                   # and keeps inductor's caches
    python bench/fit_throughput.py --no-compile    # eager rows only (no C++ compiler needed)
    python bench/fit_throughput.py --device cuda   # the CUDA rows (bench/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from bench._common import machine, machine_line, markdown_table, median, write_report  # noqa: E402
from psann import PSANNRegressor, WaveResNetRegressor  # noqa: E402
from psann.activations import SineActivation  # noqa: E402
from psann.models import PSANNNet, WaveResNet  # noqa: E402

HIDDEN = 64
BATCH = 128
WAVE_DEPTH = 4
STEP_FEATURES = 16
TARGET_EAGER_REDUCTION = 0.30
TARGET_RATIO = 1.5


class TodaySineActivation(SineActivation):
    """The activation before the hand-written kernel: the plain formula in autograd ops.

    The baseline of the step-time rows. Layers pass w0 as a tensor (or None at w0 = 1); today's
    layers multiplied the pre-activation by their float w0 unless it was 1, as here.
    """

    def forward(self, z: torch.Tensor, w0: torch.Tensor | None = None) -> torch.Tensor:
        if w0 is not None:
            z = w0 * z
        shape = [1] * z.dim()
        shape[self.feature_dim % z.dim()] = self.features
        amplitude = self.amplitude.view(shape)
        sine = torch.sin(self.frequency.view(shape) * z)
        if self.config.decay_mode == "none":
            return amplitude * sine
        envelope = z.abs() if self.config.decay_mode == "abs" else torch.relu(z)
        log_amplitude = torch.log(amplitude.clamp_min(1e-30))
        return sine * torch.exp(torch.addcmul(log_amplitude, envelope, self.decay.view(shape), value=-1.0))


def with_todays_activation(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (same weights) whose sine activations use today's formula."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if type(module) is SineActivation:
            module.__class__ = TodaySineActivation
    return net


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- section 1: step time --------------------------------------------------------------------------


class StepTimer:
    """One variant's training steps on fixed random batches; ``time(steps)`` returns seconds/step."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], X: torch.Tensor, y: torch.Tensor, batch: int):
        self.model, self.X, self.y, self.batch = model, X, y, batch
        self.optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
        self.generator = torch.Generator(device="cpu").manual_seed(0)

    def step(self, idx: torch.Tensor) -> None:
        xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
        loss = torch.mean((self.model(xb) - yb) ** 2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def time(self, steps: int) -> float:
        batches = torch.randint(0, self.X.shape[0], (steps, self.batch), generator=self.generator).to(self.X.device)
        _sync(self.X.device)
        started = time.perf_counter()
        for idx in batches:
            self.step(idx)
        _sync(self.X.device)
        return (time.perf_counter() - started) / steps


def step_families() -> dict[str, dict]:
    return {
        "PSANNNet": dict(make=lambda: PSANNNet(STEP_FEATURES, 1, hidden_layers=2, hidden_units=HIDDEN), hidden_linears=1),
        "WaveResNet": dict(
            make=lambda: WaveResNet(STEP_FEATURES, 1, hidden_units=HIDDEN, depth=WAVE_DEPTH), hidden_linears=2 * WAVE_DEPTH
        ),
    }


def run_steps(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    X = torch.randn(4096, STEP_FEATURES, device=device)
    y = torch.randn(4096, 1, device=device)
    for batch in args.batches:
        for name, family in step_families().items():
            torch.manual_seed(0)
            kernel_net = family["make"]().to(device)
            nets = {"kernel": kernel_net, "today": with_todays_activation(kernel_net)}
            nets["mlp"] = relu_mlp(STEP_FEATURES, family["hidden_linears"]).to(device)
            compiled = [] if args.no_compile else ["kernel", "mlp"] + ([] if args.quick else ["today"])
            if compiled:
                torch._dynamo.reset()  # fresh caches per shape: no automatic dynamic shapes, no limit
            timers = {key: StepTimer(net, list(net.parameters()), X, y, batch) for key, net in nets.items()}
            compile_seconds: dict[str, float | str] = {}
            for key in compiled:
                net = nets[key]
                timer = StepTimer(torch.compile(net, dynamic=False), list(net.parameters()), X, y, batch)
                try:
                    compile_seconds[key] = timer.time(2) * 2  # the first two steps compile forward and backward
                except Exception as exc:  # no C++ compiler, an unsupported backend: say so, go on
                    compile_seconds[key] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    continue
                timers[f"{key}_compiled"] = timer
            for timer in timers.values():  # warm-up: one-off allocation, dispatch and lazy init costs
                timer.time(max(5, args.steps // 10))
            samples: dict[str, list[float]] = {key: [] for key in timers}
            for _ in range(args.repeats):
                for key, timer in timers.items():
                    samples[key].append(timer.time(args.steps) * 1e6)
            us = {key: median(values) for key, values in samples.items()}
            row = {"model": name, "batch": batch, "us_per_step": us, "all_us_per_step": samples}
            row["compile_seconds"] = compile_seconds
            row["eager_reduction_vs_today"] = 1.0 - us["kernel"] / us["today"]
            row["eager_ratio_vs_mlp"] = us["kernel"] / us["mlp"]
            row["today_eager_ratio_vs_mlp"] = us["today"] / us["mlp"]
            if "kernel_compiled" in us:
                row["compiled_ratio_vs_mlp_eager"] = us["kernel_compiled"] / us["mlp"]
                if "mlp_compiled" in us:
                    row["compiled_ratio_vs_mlp_compiled"] = us["kernel_compiled"] / us["mlp_compiled"]
            rows.append(row)
            print(
                f"{name:10s} batch {batch:5d}  "
                + "  ".join(f"{key} {value:8.0f} us" for key, value in us.items())
                + f"  eager change {-100 * row['eager_reduction_vs_today']:+.0f}%",
                flush=True,
            )
    return rows


# -- section 2: estimator fit ----------------------------------------------------------------------


def hand_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, *, fused: bool) -> float:
    """The minimal training loop; returns samples/s."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused else None)
    generator = torch.Generator().manual_seed(0)
    n = X.shape[0]
    _sync(X.device)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(X.device)
        for start in range(0, n, BATCH):
            idx = order[start : start + BATCH]
            xb, yb = X.index_select(0, idx), y.index_select(0, idx)
            loss = torch.mean((model(xb) - yb) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _sync(X.device)
    return n * epochs / (time.perf_counter() - started)


def estimator_fit(make: Callable[[], object], X: np.ndarray, y: np.ndarray, epochs: int) -> float:
    est = make()
    started = time.perf_counter()
    est.fit(X, y)
    return X.shape[0] * epochs / (time.perf_counter() - started)


def run_estimators(args: argparse.Namespace, device: torch.device) -> list[dict]:
    families = {
        "PSANNRegressor": dict(
            make=lambda epochs: PSANNRegressor(
                hidden_layers=2, hidden_units=HIDDEN, batch_size=BATCH, epochs=epochs, random_state=0, device=device.type
            ),
            hidden_linears=1,  # 2 sine layers = Linear(F,64) + 1 x Linear(64,64)
        ),
        "WaveResNetRegressor": dict(
            make=lambda epochs: WaveResNetRegressor(
                hidden_units=HIDDEN, depth=WAVE_DEPTH, batch_size=BATCH, epochs=epochs, random_state=0, device=device.type
            ),
            hidden_linears=2 * WAVE_DEPTH,  # stem + 2 Linear(64,64) per block
        ),
    }
    results = []
    for features in args.features:
        X, y = make_data(args.samples, features)
        X_t, y_t = torch.from_numpy(X).to(device), torch.from_numpy(y).unsqueeze(1).to(device)
        for name, family in families.items():
            make = family["make"]
            # The PSANN network exactly as the estimator builds it (fit once to get model_.net).
            net_template = make(1).fit(X[:BATCH], y[:BATCH]).model_.net
            variants: dict[str, Callable[[], float]] = {
                "estimator": lambda: estimator_fit(lambda: make(args.epochs), X, y, args.epochs),
                "net_hand_loop": lambda: hand_loop(copy.deepcopy(net_template), X_t, y_t, args.epochs, fused=True),
                "mlp_default_adam": lambda: hand_loop(
                    relu_mlp(features, family["hidden_linears"]).to(device), X_t, y_t, args.epochs, fused=False
                ),
                "mlp_fused_adam": lambda: hand_loop(
                    relu_mlp(features, family["hidden_linears"]).to(device), X_t, y_t, args.epochs, fused=True
                ),
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
    return results


# -- report ----------------------------------------------------------------------------------------


def _us(row: dict, key: str) -> str:
    value = row["us_per_step"].get(key)
    return "-" if value is None else f"{value:,.0f}"


def _ratio(row: dict, key: str) -> str:
    return "-" if key not in row else f"{row[key]:.2f}x"


def _seconds(row: dict, key: str) -> str:
    value = row["compile_seconds"].get(key)
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def verdicts(steps: list[dict]) -> list[str]:
    """One line per target and row: the targets are PSANNNet's; WaveResNet is reported beside it."""
    lines = []
    for row in steps:
        where = f"{row['model']} batch {row['batch']}"
        reduction = row["eager_reduction_vs_today"]
        met = "met" if reduction >= TARGET_EAGER_REDUCTION else "NOT met"
        change = f"{100 * reduction:.0f}% lower" if reduction >= 0 else f"{-100 * reduction:.0f}% higher"
        lines.append(f"eager step >= 30% lower than today, {where}: {change}: {met}")
    for row in steps:
        where = f"{row['model']} batch {row['batch']}"
        for key, against in (("compiled_ratio_vs_mlp_compiled", "compiled MLP"), ("compiled_ratio_vs_mlp_eager", "eager MLP")):
            if key in row:
                met = "met" if row[key] <= TARGET_RATIO else "NOT met"
                lines.append(f"compiled PSANN / {against} <= 1.5x, {where}: {row[key]:.2f}x: {met}")
    for row in steps:
        where = f"{row['model']} batch {row['batch']}"
        met = "met" if row["eager_ratio_vs_mlp"] <= TARGET_RATIO else "NOT met"
        lines.append(f"long-range goal, eager PSANN / eager MLP <= 1.5x, {where}: {row['eager_ratio_vs_mlp']:.2f}x: {met}")
    return lines


def report(args: argparse.Namespace, info: dict, data: dict) -> str:
    parts = [f"- {machine_line(info)}"]
    if data["steps"]:
        rows = [
            [
                r["model"], r["batch"], _us(r, "today"), _us(r, "kernel"), f"{-100 * r['eager_reduction_vs_today']:+.0f}%",
                _us(r, "mlp"), _ratio(r, "eager_ratio_vs_mlp"), _us(r, "today_compiled"), _us(r, "kernel_compiled"),
                _us(r, "mlp_compiled"), _ratio(r, "compiled_ratio_vs_mlp_compiled"), _ratio(r, "compiled_ratio_vs_mlp_eager"),
                _seconds(r, "kernel"), _seconds(r, "today"), _seconds(r, "mlp"),
            ]
            for r in data["steps"]
        ]
        header = [
            "model", "batch", "today us/step", "kernel us/step", "kernel vs today", "ReLU MLP us/step",
            "kernel / MLP", "today compiled", "kernel compiled", "MLP compiled", "compiled / compiled MLP",
            "compiled / eager MLP", "compile s (kernel)", "compile s (today)", "compile s (MLP)",
        ]
        parts += [
            "## Step time",
            f"- {STEP_FEATURES} inputs; PSANNNet 2 x {HIDDEN} sine units, WaveResNet {HIDDEN} units x depth {WAVE_DEPTH}; "
            "ReLU MLP with the same Linear layers. One step: gather, forward, MSE, zero_grad, backward, fused Adam. "
            f"Median of {args.repeats} interleaved repeats of {args.steps} steps after a warm-up; compiled = "
            "torch.compile(net, dynamic=False), its compile time = the first two steps with inductor's caches "
            f"{'on (--quick)' if args.quick else 'off'} (the run's first compile also pays the one-off import and "
            "warm-up of dynamo and inductor).",
            markdown_table(header, rows),
            "Targets (PSANNNet; WaveResNet beside it):\n\n" + "\n".join(f"- {line}" for line in verdicts(data["steps"])),
        ]
    if data["estimators"]:
        rows = []
        for r in data["estimators"]:
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
        parts += [
            "## Estimator fit",
            f"- {args.samples} samples, batch {BATCH}, hidden {HIDDEN}, {args.epochs} epochs per fit; median of "
            f"{args.repeats} interleaved repeats after one warm-up each. Cost ratio = MLP samples/s / estimator "
            "samples/s (target <= 1.5x).",
            markdown_table(header, rows),
        ]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (median reported)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per timed step-time repeat")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024], help="step-time batch sizes")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-estimators", action="store_true", help="skip the estimator section")
    parser.add_argument("--samples", type=int, default=4096, help="estimator section: training rows per fit")
    parser.add_argument("--epochs", type=int, default=3, help="estimator section: epochs per fit")
    parser.add_argument("--features", type=int, nargs="+", default=[1, 16], help="estimator section: input widths")
    parser.add_argument("--quick", action="store_true", help="short run: 2 repeats, 30 steps, 1024 samples, 1 epoch")
    parser.add_argument("--name", default="fit_throughput", help="report file stem under bench/reports/")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.samples, args.epochs = 2, 30, 1024, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    torch.set_num_threads(args.threads)
    if not (args.no_compile or args.quick):  # --quick keeps the caches: bench/gpu_check.sh has 300 s
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True  # compile times as a first use pays them
    info = machine(args.threads)
    data = {
        "steps": run_steps(args, device),
        "estimators": [] if args.no_estimators else run_estimators(args, device),
    }
    body = report(args, info, data)
    md, js = write_report(args.name, "Fit throughput (bench/fit_throughput.py)", body, {"machine": info, "args": vars(args), **data})
    print(body)
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
