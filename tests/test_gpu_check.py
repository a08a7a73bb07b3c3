"""benchmarks/gpu_check.sh: its dry run (what it does on a machine without a GPU) runs every part tiny."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _run(*args, tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT)
  return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                        check=False)


def test_dry_run_writes_one_json_lines_file_of_every_part(tmp_path):
  out = tmp_path / "gpu.jsonl"
  result = _run("--dry-run", f"--out={out}", tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  status = {r["check"]: r for r in rows if "rc" in r}
  assert list(status) == ["device", "tests", "benchmark", "sweep", "eval"]
  assert all(r["rc"] == 0 and r["wall_s"] >= 0 for r in status.values()), status
  device = next(r for r in rows if r["check"] == "device" and "rc" not in r)
  assert device["dry_run"] and device["backend"] == "cpu"
  assert "selected" in next(r for r in rows if r["check"] == "tests" and "rc" not in r)["summary"]
  bench = [r for r in rows if r["check"] == "benchmark" and "family" in r]
  assert sorted(r["loop_form"] for r in bench if "loop_form" in r) == ["scan", "step"]
  assert all(r["vs_plain"] > 0 for r in bench if "loop_form" in r)
  assert any(r.get("part") == "throughput" and "vs_sequential" in r for r in rows if r["check"] == "sweep")
  assert any("vs_bound" in r for r in rows if r["check"] == "eval")


def test_a_bad_argument_fails_in_one_line(tmp_path):
  result = _run("--fast", tmp_path=tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == ["error: unknown argument '--fast'; use --dry-run and/or --out=PATH"]
