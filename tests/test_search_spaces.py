"""Drawn sweep members: one equals the single run with its values, and the command line draws and records them."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ae_jax import sweep
from ae_jax import sweep_spec
from ae_jax import train
from tests.conftest import family_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = "learning_rate=loguniform(1e-3,1e-2);beta=uniform(0.5,2)"


def _config(**overrides):
  config = family_config("vae")
  # SGD: Adam divides by sqrt(v), which turns reduction-order rounding into whole learning-rate steps.
  config.update({"num_steps": 10, "num_pictures": 0, "evaluate": "quick", "optimizer": "sgd", **overrides})
  return config


def test_a_drawn_member_equals_the_single_run_with_its_values(tmp_path):
  base = _config()
  members = sweep_spec.parse_inline(SEARCH, members=2, config=base)
  record = sweep_spec.search_record(SEARCH, members=2, config=base)
  out = sweep.run(base, members, str(tmp_path / "sweep"), drawn=record)
  stored = json.load(open(tmp_path / "sweep" / "sweep.json", encoding="utf-8"))
  assert stored["members"] == members  # The drawn numbers, exactly.
  assert stored["drawn"] == {"members": 2, "search_seed": 0,
                              "spaces": {"learning_rate": "loguniform(0.001, 0.01)", "beta": "uniform(0.5, 2)"}}
  for i, member in enumerate(members):
    single = train.train_and_evaluate(_config(**member), str(tmp_path / f"single{i}"))
    result = out["results"][i]
    assert result.status == "done"
    for x, y in zip(jax.tree.leaves(result.params), jax.tree.leaves(single.params)):
      np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6)
    assert result.test["loss"] == pytest.approx(single.test["loss"], rel=1e-4)


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
                         "--config=experiments/configs/test.py", "--config.num_steps=10", "--config.evaluate=quick",
                         "--config.num_pictures=0", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
                        check=False)


def test_the_command_line_draws_records_and_trains_the_members(tmp_path):
  out = _cli("--sweep=learning_rate=loguniform(1e-3,1e-2)", "--members=2", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  stored = json.load(open(tmp_path / "sweep.json", encoding="utf-8"))
  drawn = sweep_spec.sample(2, learning_rate=sweep_spec.loguniform(1e-3, 1e-2))
  assert stored["members"] == drawn
  assert stored["drawn"] == {"members": 2, "search_seed": 0, "spaces": {"learning_rate": "loguniform(0.001, 0.01)"}}
  for name in stored["member_names"]:
    assert os.path.exists(tmp_path / name / "eval.json"), name
  assert stored["member_names"] == [f"learning_rate={m['learning_rate']:g}" for m in drawn]


@pytest.mark.parametrize("args, match", [
    (["--members=2", "--sweep=beta=1,2"], "--members=2 needs a drawn key"),
    (["--sweep=beta=uniform(0.5,2)"], "pass --members=N"),
    (["--members=2", "--sweep=learning_rate=loguniform(0,1e-2)"], "needs 0 < low"),
    (["--search_seed=3", "--sweep=beta=1,2"], "--members"),
    (["--members=2", "--sweep_file=experiments/sweeps/vae_search.py"], "sweep_spec.sample"),
])
def test_bad_search_input_is_one_line_and_exit_code_2(args, match, tmp_path):
  out = _cli(*args, f"--workdir={tmp_path}")
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], out.stderr
  assert not os.listdir(tmp_path)
