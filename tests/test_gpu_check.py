"""bench/gpu_check.sh on a machine without a GPU: it says so, writes its report and exits 0."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_skips_cleanly_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is present: the check would run for minutes")
    report = REPO / "bench" / "reports" / "gpu_check.md"
    before = report.read_text() if report.exists() else None
    try:
        result = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "GPU_CHECK_PYTHON": sys.executable})
        assert result.returncode == 0, result.stderr
        assert "skipped: torch" in result.stdout and "no CUDA device visible to torch" in result.stdout
        assert report.read_text().startswith("# GPU check")
    finally:  # a real GPU run's report is never replaced by this test's
        if before is None:
            report.unlink(missing_ok=True)
        else:
            report.write_text(before)
