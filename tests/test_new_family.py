"""A new family is one objective and one registry entry: it validates, trains, sweeps and evaluates.

The family is registered by the config file that uses it (as a researcher would), so the CLI entry
points see it without any change to ae_jax.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from ae_jax import config as config_lib
from ae_jax import families
from ae_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIG = '''
import jax.numpy as jnp

from ae_jax import families
from configs import test  # experiments/ is on sys.path when train.py or sweep.py runs.


def code_l2(setup, params, x, keys, hp, state):
  """Reconstruction plus an L2 penalty on the code, weighted by hp["sparsity_weight"]."""
  forward, _ = setup.autoencode(params, x, x, keys)
  rec = setup.reconstruction(forward.logits, x)
  penalty = jnp.square(forward.code).sum(axis=-1)
  return rec + hp["sparsity_weight"] * penalty, {"loss_rec": rec.mean(), "loss_code_l2": penalty.mean()}, forward, state


families.register("code_l2", families.Family(
    code_l2, ("sparsity_weight",), "an L2 penalty on the code", "a test of the registry", ("mse",)))


def get_config():
  c = test.get_config()
  c.family = "code_l2"
  c.num_steps = 20
  c.evaluate = "quick"
  c.num_pictures = 2
  return c
'''


@pytest.fixture
def toy_config(tmp_path):
  path = tmp_path / "code_l2.py"
  path.write_text(TOY_CONFIG)
  return str(path)


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)


def test_a_registered_family_trains_through_the_cli(toy_config, tmp_path):
  out = _run("train.py", f"--config={toy_config}", f"--workdir={tmp_path}/run")
  assert out.returncode == 0, out.stderr[-2000:]
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  tested = [row for row in rows if "test_loss" in row]
  assert tested[-1]["step"] == 20 and "loss_code_l2" in rows[0] and "test_loss_code_l2" in tested[-1]
  with open(tmp_path / "run" / "eval.json", encoding="utf-8") as f:
    assert 0 < json.load(f)["mse"] < 1


def test_a_registered_family_sweeps_and_refuses_keys_it_does_not_read(toy_config, tmp_path):
  out = _run("sweep.py", f"--config={toy_config}", "--sweep=sparsity_weight=0,10", f"--workdir={tmp_path}/sweep")
  assert out.returncode == 0, out.stderr[-2000:]
  with open(tmp_path / "sweep" / "sweep.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["done", "done"]
  assert float(rows[0]["train_loss"]) < float(rows[1]["train_loss"])  # The penalty's weight counts.
  refused = _run("sweep.py", f"--config={toy_config}", "--sweep=beta=1,2", f"--workdir={tmp_path}/beta")
  assert refused.returncode == 2 and "--config.beta is not read by the code_l2 family" in refused.stderr


def test_unread_hyperparameters_are_named_for_the_builtin_families(tiny_config, tmp_path):
  config = tiny_config("undercomplete")
  assert families.unread_hparams(config, ["beta", "learning_rate", "seed"]) == ["beta"]
  assert families.unread_hparams(tiny_config("vae"), ["beta"]) == []
  with pytest.raises(config_lib.ConfigError, match="noise_level is not read by the undercomplete family"):
    sweep.run(config, [{"noise_level": 0.1}], str(tmp_path))
