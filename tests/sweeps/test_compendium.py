"""sweeps.compendium: pages, plots and index built from the Arrow tables."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys

import pytest

from psann.contract import EXIT_BAD_INPUT, TRIAL_STATUSES
from sweeps.compendium import build_compendium
from sweeps.results import ingest_sweep

try:
    from ._trial_folders import TrialSpec, standard_sweep, tune_dir_name, write_stage, write_trial
except ImportError:
    from _trial_folders import TrialSpec, standard_sweep, tune_dir_name, write_stage, write_trial

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep(tmp_path):
    path = standard_sweep(tmp_path / "sweeps")
    ingest_sweep(path)
    return path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_compendium_writes_page_plots_and_index(sweep, tmp_path):
    out = tmp_path / "docs"
    written = build_compendium(sweep, out)
    names = sorted(p.relative_to(out).as_posix() for p in written)
    # No equity files in these folders: no equity plot, and the page says so.
    assert names == ["hisso_wave.md", "hisso_wave/learning_curves_hisso.png",
                     "hisso_wave/learning_curves_smoke.png", "hisso_wave/parameter_importance_hisso.png",
                     "hisso_wave/parameter_importance_smoke.png", "hisso_wave/reward_vs_turnover.png",
                     "hisso_wave/top_trials_hisso.png", "hisso_wave/top_trials_smoke.png", "index.md"]
    for png in out.glob("hisso_wave/*.png"):
        width, height = png_size(png.read_bytes())
        assert width >= 600 and height >= 400 and png.stat().st_size > 5_000


def test_page_lists_stage_counts_devices_runs_and_failures(sweep, tmp_path):
    build_compendium(sweep, tmp_path)
    page = (tmp_path / "hisso_wave.md").read_text()
    lines = page.splitlines()
    assert lines[1] == "# Sweep `hisso_wave`"
    # per-stage counts, in run order: success, pruned, error, hung, incomplete, running, interrupted
    assert "| stage | trials | success | pruned | error | hung | incomplete | running | interrupted " in page
    # The best trial by val_loss_smoothed (mean of the last 3 epochs), pruned trials included.
    assert any(line.startswith("| smoke | 3 | 3 | 0 | 0 | 0 | 0 | 0 | 0 | aaaaa_00002 |") for line in lines)
    assert any(line.startswith("| hisso | 5 | 2 | 1 | 1 | 1 | 0 | 0 | 0 | bbbbb_00001 |") for line in lines)
    assert page.index("| smoke | 3 |") < page.index("| hisso | 5 |")
    assert "| hisso | cuda:0 | 5 | 2 | bfloat16, float16, off |" in page
    # HISSO trials only: an episodes/s column, no samples/s column.
    assert "| stage | device | trials | success | AMP | median episodes/s | median duration (s) |" in page
    runs = page[page.index("### hisso", page.index("## Runs")):page.index("## Reward vs turnover")]
    assert "| rank | trial | status | episodes/s | best epoch | train | val | val_loss_smoothed | test (test) " \
           "| reward_mean | turnover | Sharpe | AMP | duration (s) | estimator.params.lr | hisso.window |" in runs
    # Ranked runs first in ranking order (the pruned one included), then the unranked ones.
    ranked = [line.split(" | ")[:3] for line in runs.splitlines() if line.startswith("| ") and "bbbbb_" in line]
    assert ranked == [["| 1", "bbbbb_00001", "SUCCESS"], ["| 2", "bbbbb_00000", "SUCCESS"],
                      ["| 3", "bbbbb_00002", "PRUNED"], ["| –", "bbbbb_00003", "ERROR"],
                      ["| –", "bbbbb_00004", "HUNG"]]
    assert "| float16 | 12.25 | 0.003 | 32 |" in runs
    assert "![val_loss per epoch, stage hisso](hisso_wave/learning_curves_hisso.png)" in page
    assert "| hisso | bbbbb_00003 | ERROR | RuntimeError: CUDA out of memory |" in page
    assert "| hisso | bbbbb_00004 | HUNG | epoch 3 at 18:00:07; no report for 600 s |" in page


def test_regenerating_from_the_same_tables_gives_identical_files(sweep, tmp_path):
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build_compendium(sweep, tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in build_compendium(sweep, tmp_path / "b")}
    assert first == second
    again = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build_compendium(sweep, tmp_path / "a")}
    assert again == first


def test_index_links_every_sweep_and_stale_plots_are_removed(sweep, tmp_path):
    other = standard_sweep(tmp_path / "more", name="wave_lr_scan")
    ingest_sweep(other)
    out = tmp_path / "docs"
    build_compendium(sweep, out)
    build_compendium(other, out)
    index = (out / "index.md").read_text()
    assert "| [hisso_wave](hisso_wave.md) | 8 | smoke, hisso |" in index
    assert "| [wave_lr_scan](wave_lr_scan.md) | 8 | smoke, hisso |" in index
    shutil.rmtree(other / "smoke")
    ingest_sweep(other)
    build_compendium(other, out)
    assert not (out / "wave_lr_scan" / "learning_curves_smoke.png").exists()
    assert "| [wave_lr_scan](wave_lr_scan.md) | 5 | hisso |" in (out / "index.md").read_text()


def test_new_trials_change_the_page(sweep, tmp_path):
    build_compendium(sweep, tmp_path)
    before = (tmp_path / "hisso_wave.md").read_text()
    spec = TrialSpec("bbbbb_00005", {"estimator.params.lr": 5e-4, "hisso.window": 8},
                     status="success", epochs=4, start_seconds=600)
    write_trial(sweep / "hisso" / tune_dir_name(spec, 5), spec)
    ingest_sweep(sweep)
    build_compendium(sweep, tmp_path)
    after = (tmp_path / "hisso_wave.md").read_text()
    assert after != before and "| bbbbb_00005 | SUCCESS |" in after


def test_compendium_of_a_sweep_without_tables_says_to_ingest(tmp_path):
    path = standard_sweep(tmp_path)
    with pytest.raises(FileNotFoundError, match="ingest"):
        build_compendium(path, tmp_path / "docs")


def test_module_entry_point_can_ingest_first(tmp_path):
    path = standard_sweep(tmp_path / "s")
    done = subprocess.run([sys.executable, "-m", "sweeps.compendium", str(path), "--ingest",
                           "--out", str(tmp_path / "docs")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docs" / "hisso_wave.md").is_file()


def test_cli_reports_a_sweep_without_tables_on_stderr(tmp_path, capsys):
    from sweeps.compendium.__main__ import main

    assert main([str(tmp_path), "--out", str(tmp_path / "docs")]) == EXIT_BAD_INPUT == 2
    assert "no results tables" in capsys.readouterr().err


def test_every_trial_status_has_a_plot_colour():
    from sweeps.compendium._plots import STATUS_COLORS

    assert set(STATUS_COLORS) == set(TRIAL_STATUSES)


def test_supervised_runs_show_samples_per_second_and_a_mixed_eval_split_gets_its_column(tmp_path):
    sweep = tmp_path / "mixed"
    supervised = TrialSpec("ccccc_00000", {"estimator.params.lr": 1e-3}, outcome="SUCCESS", portfolio=False,
                           extra_metrics={"loss_kind": "mse", "throughput_eps_per_sec": None,
                                          "throughput_samples_per_sec": 5000.0, "eval_split": "val"})
    hisso = TrialSpec("ccccc_00001", {"estimator.params.lr": 3e-3}, outcome="SUCCESS", seed=1)
    write_stage(sweep / "runs_a", [supervised, hisso])
    ingest_sweep(sweep)
    build_compendium(sweep, tmp_path / "docs")
    page = (tmp_path / "docs" / "mixed.md").read_text()
    assert "| rank | trial | status | episodes/s | samples/s | best epoch | train | val | val_loss_smoothed " \
           "| test | eval split |" in page
    assert "| ccccc_00000 | SUCCESS | – | 5000 |" in page
    assert "| median episodes/s | median samples/s |" in page
