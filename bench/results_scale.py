"""Scale benchmark of the Arrow results store (sweeps.results).

Generates a synthetic sweep (default 10,000 trial folders x 100 epochs, about 1M event rows,
in two stages, smoke 10% and hisso 90%), then measures:
  - ingest time (cold), a no-change re-ingest, and an incremental ingest of 1% more trials;
  - size of tables/ on disk (and of the trial folders, for scale);
  - query latency (median of --repeats runs, each opening the tables from disk):
      Q1 top-10 trials by val_loss among SUCCESS        (sweeps.results.query)
      Q2 filter + group-by over events: mean val_loss and episodes/s of epochs >= 50 per
         stage and phase                                (pyarrow.dataset; and DuckDB SQL)
  - the common baseline: read every progress.csv with pandas, concatenate, answer Q1 and Q2
    (Q2 on progress.csv columns), timed once end to end.
Writes bench/reports/results_scale.md and prints the figures.

    python bench/results_scale.py                      # full size
    python bench/results_scale.py --trials 1000        # smaller, e.g. on a busy machine
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeps.results import ingest_sweep, query, sql  # noqa: E402


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "_trial_folders", ROOT / "tests" / "sweeps" / "_trial_folders.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_trial_folders"] = module
    spec.loader.exec_module(module)
    return module


def generate(root: Path, trials: int, epochs: int, first: int = 0) -> Path:
    gen = _load_generator()
    sweep = root / "bench_sweep"
    smoke_n = max(1, trials // 10)
    outcomes = ["SUCCESS"] * 6 + ["PRUNED"] * 3 + ["ERROR"]
    by_stage: dict[str, list] = {"smoke": [], "hisso": []}
    for i in range(first, first + trials):
        stage = "smoke" if i < smoke_n else "hisso"
        outcome = "SUCCESS" if stage == "smoke" else outcomes[i % len(outcomes)]
        spec = gen.TrialSpec(
            f"{i // 100000:05x}_{i % 100000:05d}",
            {"estimator.params.lr": [1e-4, 3e-4, 1e-3, 3e-3][i % 4], "hisso.window": [16, 32, 64][i % 3],
             "estimator.params.hidden_units": [32, 64][i % 2]},
            epochs=epochs, seed=i, outcome=outcome,
            status={"SUCCESS": "success", "PRUNED": "running", "ERROR": "error"}[outcome],
            device="cpu" if stage == "smoke" else "cuda:0",
            start_seconds=0.0 if stage == "smoke" else 3600.0,
        )
        by_stage[stage].append(spec)
    for stage, specs in by_stage.items():
        stage_dir = sweep / stage
        folders = [gen.write_trial(stage_dir / gen.tune_dir_name(s, int(s.trial_id[-5:])), s) for s in specs]
        old = []
        status_file = stage_dir / "stage_status.json"
        if status_file.exists():  # appending trials: keep the earlier entries
            import json
            old = json.loads(status_file.read_text())["trials"]
        if specs:
            gen.write_stage_status(stage_dir, specs, folders, max_epochs=epochs)
            if old:
                import json
                data = json.loads(status_file.read_text())
                data["trials"] = old + data["trials"]
                status_file.write_text(json.dumps(data))
    return sweep


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def median_ms(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm the OS cache and imports once
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def q1_top10(sweep: Path) -> pa.Table:
    return query(sweep, where="status == 'SUCCESS'", sort="val_loss", top=10,
                 columns=["stage", "trial_id", "val_loss"])


def q2_events_pyarrow(sweep: Path) -> pa.Table:
    dataset = ds.dataset(sweep / "tables" / "events", format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["stage", "phase", "val_loss", "episodes_per_second"],
                             filter=(pc.field("event") == "epoch") & (pc.field("epoch") >= 50))
    return table.group_by(["stage", "phase"]).aggregate(
        [("val_loss", "mean"), ("episodes_per_second", "mean"), ("val_loss", "count")])


Q2_SQL = ("SELECT stage, phase, avg(val_loss) AS val_loss_mean, avg(episodes_per_second) AS eps, "
          "count(*) AS n FROM events WHERE event = 'epoch' AND epoch >= 50 GROUP BY stage, phase")


def pandas_baseline(sweep: Path) -> dict[str, float]:
    import pandas as pd

    start = time.perf_counter()
    frames = []
    for stage_dir in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "tables"):
        for trial in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
            frame = pd.read_csv(trial / "progress.csv")
            frame["stage"] = stage_dir.name
            frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    loaded = time.perf_counter()
    best = data.groupby(["stage", "trial_id"])["val_loss"].min().nsmallest(10)
    q1 = time.perf_counter()
    late = data[data["training_iteration"] >= 50]
    late.groupby("stage")[["val_loss", "episodes_per_second"]].mean()
    q2 = time.perf_counter()
    assert len(best) == 10
    return {"load_s": loaded - start, "q1_s": q1 - loaded, "q2_s": q2 - q1, "rows": len(data)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15, help="query repetitions (median)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate (temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated sweep")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "reports" / "results_scale.md")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="results_scale_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        sweep = generate(workdir, args.trials, args.epochs)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.trials} trial folders x {args.epochs} epochs in {gen_s:.1f} s", flush=True)

        t0 = time.perf_counter()
        report = ingest_sweep(sweep)
        ingest_s = time.perf_counter() - t0
        print(f"cold ingest: {ingest_s:.1f} s ({report.trials_added} trials, {report.events_added} events)", flush=True)
        t0 = time.perf_counter()
        again = ingest_sweep(sweep)
        reingest_s = time.perf_counter() - t0
        assert again.trials_added == 0 and again.stages_written == ()
        more = max(1, args.trials // 100)
        generate(workdir, more, args.epochs, first=args.trials)
        t0 = time.perf_counter()
        incr = ingest_sweep(sweep)
        incr_s = time.perf_counter() - t0
        assert incr.trials_added == more, incr
        tables_bytes = du(sweep / "tables")
        folders_bytes = du(sweep) - tables_bytes

        q1_ms, top = q1_top10(sweep), None
        q1_ms, top = median_ms(lambda: q1_top10(sweep), args.repeats)
        q2_ms, _ = median_ms(lambda: q2_events_pyarrow(sweep), args.repeats)
        try:
            import duckdb  # noqa: F401
            q2_sql_ms, _ = median_ms(lambda: sql(sweep, Q2_SQL), args.repeats)
        except ImportError:
            q2_sql_ms = None
        base = pandas_baseline(sweep)
        base_q1 = (base["load_s"] + base["q1_s"]) * 1000
        base_q2 = (base["load_s"] + base["q2_s"]) * 1000
        events_rows = report.events_added + incr.events_added
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        "# results_scale benchmark",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"pyarrow {pa.__version__}",
        f"- sweep: {args.trials} trial folders x {args.epochs} epochs (smoke 10%, hisso 90% of which 30% "
        f"PRUNED or ERROR), {events_rows:,} event rows (epochs plus start/end rows)",
        f"- generating the folders: {gen_s:.1f} s; trial folders on disk: {folders_bytes / 2**20:.1f} MiB",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| cold ingest | {ingest_s:.1f} s | <= 60 s |",
        f"| re-ingest, nothing changed | {reingest_s:.2f} s | |",
        f"| incremental ingest (+{more} trials) | {incr_s:.1f} s | |",
        f"| tables on disk | {tables_bytes / 2**20:.1f} MiB | |",
        f"| Q1 top-10 by val_loss (query(), median) | {q1_ms:.1f} ms | <= 200 ms |",
        f"| Q2 filter + group-by over events (pyarrow, median) | {q2_ms:.1f} ms | <= 200 ms |",
        f"| Q2 through DuckDB sql() (median) | "
        f"{'n/a (duckdb not installed)' if q2_sql_ms is None else f'{q2_sql_ms:.1f} ms'} | |",
        f"| pandas baseline: read {args.trials + more} progress.csv + concat | {base['load_s']:.1f} s | |",
        f"| baseline Q1 end to end / ours | {base_q1:.0f} ms / {q1_ms:.1f} ms = {base_q1 / q1_ms:.0f}x | >= 10x |",
        f"| baseline Q2 end to end / ours | {base_q2:.0f} ms / {q2_ms:.1f} ms = {base_q2 / q2_ms:.0f}x | >= 10x |",
        "",
        f"Top-10 check: best val_loss {top['val_loss'][0].as_py():.4g} ({top['trial_id'][0].as_py()}).",
        "",
    ]
    text = "\n".join(lines)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
