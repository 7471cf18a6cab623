#!/usr/bin/env bash
# The one prepared GPU check: run it whenever a GPU is lent, then copy its figures into
# docs/benchmarks.md. Under 5 minutes on one GPU. It runs:
#   1. the `gpu`-marked tests (tests/psann: they need neither Ray nor DuckDB),
#   2. the CUDA rows of bench/hisso_throughput.py: the seeds' WaveResNet shape (4 x 128 windows),
#      fp32 / fp16 / bf16, batch_episodes 8, 64 and 1024,
#   3. the CUDA rows of bench/fit_throughput.py, eager and with torch.compile,
# and writes one report, bench/reports/gpu_check.md (each step's own report beside it).
#
# It needs only what a bare GPU image has: torch (2.4 or newer), numpy, pyyaml, scikit-learn, and
# pytest for step 1. Nothing is installed and nothing is fetched: the project is imported from the
# working tree (PYTHONPATH=.). A step that cannot run says why in the report and the rest go on.
#
#     bash bench/gpu_check.sh                # from the repository root, or from anywhere
#     GPU_CHECK_PYTHON=python3.11 bash bench/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${GPU_CHECK_PYTHON:-python}
REPORTS=bench/reports
REPORT=$REPORTS/gpu_check.md
mkdir -p "$REPORTS"

note() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# run NAME SECONDS CMD...: one step, time-boxed; its status goes into the report.
run() {
  local name=$1 limit=$2
  shift 2
  note ""
  note "## $name"
  note ""
  note '    '"$*"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tail -n 40 | sed 's/^/    /' | tee -a "$REPORT"
  local status=${PIPESTATUS[0]}
  note ""
  note "status: $status ($((SECONDS - started)) s; 124 = stopped at the ${limit} s limit)"
}

: > "$REPORT"
note "# GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
note ""
if ! facts=$("$PY" - <<'EOF' 2>&1
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch")
print(f"GPU {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s), "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
EOF
); then
  note "skipped: $facts"
  exit 0
fi
note "$facts"

if "$PY" -c "import pytest" 2>/dev/null; then
  # -o addopts= drops the project's pytest options (pytest-timeout may be absent on a bare image).
  run "gpu tests" 240 "$PY" -m pytest -m gpu -o addopts= -q -p no:cacheprovider tests/psann
else
  note ""
  note "## gpu tests"
  note ""
  note "skipped: pytest is not installed"
fi

run "HISSO throughput, CUDA" 300 "$PY" bench/hisso_throughput.py --cuda-only --configs seeds \
  --batch-episodes 8 64 1024 --repeats 1 --epochs 3 --updates 16 --naive-updates 32 --name gpu_hisso_throughput
run "fit throughput, CUDA, eager and compiled" 300 "$PY" bench/fit_throughput.py --device cuda --quick \
  --name gpu_fit_throughput

note ""
note "Reports: $REPORTS/gpu_hisso_throughput.md, $REPORTS/gpu_fit_throughput.md"
