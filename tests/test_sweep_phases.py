"""benchmarks/sweep_phases.py --quick: a sweep's wall time split into its phases, which add up."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_reports_every_phase(tmp_path):
  out = tmp_path / "phases.jsonl"
  result = subprocess.run([sys.executable, "-m", "benchmarks.sweep_phases", "--quick", f"--out={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  row = json.loads(out.read_text())
  assert row["members"] == 2 and row["chunks"] == 2  # 20 steps logged every 10.
  phases = ("data_s", "assembly_s", "compile_and_first_chunk_s", "train_s", "evaluation_s", "pictures_s",
            "checkpoints_s", "test_losses_s", "other_s")
  assert all(row[k] >= 0 for k in phases) and row["imports_s"] > 0
  assert sum(row[k] for k in phases) == pytest_approx(row["sweep_wall_s"])


def pytest_approx(value):
  import pytest  # pylint: disable=g-import-not-at-top
  return pytest.approx(value, abs=0.05)
