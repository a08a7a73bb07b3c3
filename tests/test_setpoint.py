"""Set-point members: the controller's update, its state in the program, its checks and the frontier."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import families
from ae_jax import frontier
from ae_jax import hparams
from ae_jax import setpoint
from ae_jax import sweep
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config
from tests.test_train import _run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KL = families.get("vae").setpoints["kl_target"]
GECO = families.get("vae").setpoints["reconstruction_target"]


def _hp(**values):
  return {k: jnp.float32(v) for k, v in {"beta": 2.0, "kl_target": 4.0, setpoint.RATE: 0.1, **values}.items()}


def test_the_update_is_dual_ascent_in_log_space_on_the_clipped_relative_error():
  state = setpoint.init_state()
  # KL 5 against a target of 4: +25% error, beta's log moves up by 0.1 * 0.25.
  new, logged = setpoint.update(KL, _hp(), state, jnp.float32(5.0))
  assert float(new[setpoint.STATE]) == pytest.approx(0.025)
  assert float(logged[setpoint.COEFFICIENT]) == pytest.approx(2.0)  # The coefficient this step's loss used.
  assert float(logged[setpoint.MEASURED]) == 5.0 and float(logged[setpoint.TARGET]) == 4.0
  # 3x the target: the error is clipped at 100%.
  new, _ = setpoint.update(KL, _hp(), state, jnp.float32(12.0))
  assert float(new[setpoint.STATE]) == pytest.approx(0.1)
  # GECO's direction: a reconstruction error above its target lowers beta.
  new, _ = setpoint.update(GECO, _hp(reconstruction_target=10.0), state, jnp.float32(15.0))
  assert float(new[setpoint.STATE]) == pytest.approx(-0.05)
  # The next step's loss uses beta * exp(scale).
  hp = setpoint.controlled_hp(KL, _hp(), {setpoint.STATE: jnp.float32(math.log(3.0))})
  assert float(hp["beta"]) == pytest.approx(6.0) and float(hp["kl_target"]) == 4.0


def test_the_coefficient_is_bounded():
  state = {setpoint.STATE: jnp.float32(math.log(setpoint.COEFFICIENT_MAX / 2.0) - 0.01)}
  for _ in range(3):
    state, _ = setpoint.update(KL, _hp(**{setpoint.RATE: 10.0}), state, jnp.float32(100.0))
  assert 2.0 * math.exp(float(state[setpoint.STATE])) == pytest.approx(setpoint.COEFFICIENT_MAX, rel=1e-5)
  state = setpoint.init_state()
  for _ in range(3):
    state, _ = setpoint.update(KL, _hp(**{setpoint.RATE: 100.0}), state, jnp.float32(0.0))
  assert 2.0 * math.exp(float(state[setpoint.STATE])) == pytest.approx(setpoint.COEFFICIENT_MIN, rel=1e-4)


def test_the_measured_quantity_is_averaged_over_the_data_axis():
  # Two devices see KL 2 and 6: both move as for their mean, 4 (= the target: no move).
  out = jax.vmap(lambda m: setpoint.update(KL, _hp(), setpoint.init_state(), m, axis_name="d")[0][setpoint.STATE],
                 axis_name="d")(jnp.array([2.0, 6.0]))
  np.testing.assert_array_equal(out, [0.0, 0.0])


def test_a_target_is_structure_and_its_value_data():
  config = family_config("vae")
  plain = hparams.structure_key(config)
  config.kl_target = 4.0
  targeted = hparams.structure_key(config)
  config.kl_target = 8.0
  assert plain != targeted == hparams.structure_key(config)
  assert hparams.from_config(config)["kl_target"] == 8.0


def test_with_rate_zero_a_member_is_the_plain_member():
  plain, _ = _run("vae", jax.devices()[:1], chunks=(6,))
  held, metrics = _run("vae", jax.devices()[:1], chunks=(6,), kl_target=3.0, setpoint_rate=0.0)
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(held.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(metrics[setpoint.COEFFICIENT], 1.0)
  assert float(held.model_state[setpoint.STATE][0]) == 0.0


@pytest.mark.parametrize("family,overrides", [
    ("vae", {"kl_target": 0.01}),  # A tiny target: beta must grow.
    ("vae", {"reconstruction_target": 1.0}),  # An unreachable reconstruction: beta must shrink.
    ("sparse", {"sparsity": "l1", "code_activation": "relu", "sparsity_weight": 1e-3, "l0_target": 1.0}),
    ("contractive", {"jacobian_target": 1e-3}),
])
def test_the_controller_moves_the_coefficient_toward_the_target(family, overrides):
  _, metrics = _run(family, jax.devices()[:1], chunks=(8,), setpoint_rate=0.2, **overrides)
  coefficient = np.asarray(metrics[setpoint.COEFFICIENT])[:, 0]
  grows = family != "vae" or "kl_target" in overrides
  assert (coefficient[-1] > coefficient[0]) if grows else (coefficient[-1] < coefficient[0])
  assert np.all(np.diff(coefficient) >= 0) if grows else np.all(np.diff(coefficient) <= 0)
  if family == "vae":  # The loss each step is the one with the controller's beta, not the initial one.
    loss, rec, kl = (np.asarray(metrics[k])[:, 0] for k in ("loss", "loss_rec", "loss_kl"))
    np.testing.assert_allclose(loss, rec + coefficient * kl, rtol=1e-5)


def test_one_and_four_devices_give_the_same_controller():
  overrides = {"optimizer": "sgd", "learning_rate": 1e-3, "kl_target": 2.0, "setpoint_rate": 0.1}
  one, m1 = _run("vae", jax.devices()[:1], **overrides)
  four, m4 = _run("vae", jax.devices()[:4], **overrides)
  np.testing.assert_allclose(m1[setpoint.COEFFICIENT], m4[setpoint.COEFFICIENT], rtol=1e-5)
  np.testing.assert_allclose(one.model_state[setpoint.STATE], four.model_state[setpoint.STATE], rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _vae(num_steps, **overrides):
  config = family_config("vae")
  config.update({"num_steps": num_steps, "num_pictures": 0, "evaluate": "quick", "kl_target": 2.0,
                 "setpoint_rate": 0.05, **overrides})
  return config


def test_resume_restores_the_controller_exactly(tmp_path):
  full = train.train_and_evaluate(_vae(40), str(tmp_path / "full"))
  train.train_and_evaluate(_vae(20), str(tmp_path / "cut"))
  resumed = train.train_and_evaluate(_vae(40), str(tmp_path / "cut"))
  want = {r["step"]: r for r in workdir_lib.read_metrics(str(tmp_path / "full")) if setpoint.COEFFICIENT in r}
  got = {r["step"]: r for r in workdir_lib.read_metrics(str(tmp_path / "cut")) if setpoint.COEFFICIENT in r}
  assert sorted(got) == sorted(want) == [10, 20, 30, 40]
  for step in want:
    assert got[step][setpoint.COEFFICIENT] == pytest.approx(want[step][setpoint.COEFFICIENT], rel=1e-6)
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family,overrides,words", [
    ("sparse", {"kl_target": 4.0}, "has no such quantity"),
    ("undercomplete", {"l0_target": 4.0}, "has no such quantity"),
    ("vae", {"kl_target": -1.0}, "must be >= 0"),
    ("vae", {"kl_target": 4.0, "reconstruction_target": 50.0}, "both adapt beta"),
    ("vae", {"kl_target": 4.0, "beta": 0.0}, "positive starting value"),
    ("vae", {"kl_target": 4.0, "vae_objective": "iwae"}, "IWAE"),
    ("sparse", {"sparsity": "topk", "code_activation": "linear", "l0_target": 4.0}, "--config.topk"),
    ("vae", {"setpoint_rate": -0.1}, "setpoint_rate"),
])
def test_bad_targets_are_one_config_error(family, overrides, words):
  config = family_config(family)
  config.update(overrides)
  with pytest.raises(config_lib.ConfigError, match=words):
    config_lib.validate(config)


def test_bad_targets_from_the_command_line_are_one_line_and_exit_2(tmp_path):
  cases = [
      ["experiments/train.py", "--config=experiments/configs/sparse.py", "--config.kl_target=8",
       f"--workdir={tmp_path}/a"],
      ["experiments/sweep.py", "--config=experiments/configs/vae.py", "--config.kl_target=4",
       "--config.validation_fraction=0.1", "--sweep=beta=0.5,1", "--search=pbt", "--explore=beta",
       f"--workdir={tmp_path}/b"],
  ]
  for args in cases:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.stderr, out.stderr


def test_a_sweep_over_targets_writes_its_frontier(tmp_path):
  base = _vae(30, setpoint_rate=0.2, validation_fraction=0.0)
  members = [{"kl_target": t, "seed": s} for t in (0.0, 1.0, 3.0) for s in (0, 1)]
  out = sweep.run(base, members, str(tmp_path))
  rows = out["rows"]
  assert {r["member"]: r[sweep.SETPOINT] for r in rows if r["kl_target"] > 0}  # Targeted rows say met/missed.
  assert all(sweep.SETPOINT not in r or r["kl_target"] > 0 for r in rows)
  for kind in ("markdown", "csv", "png"):
    assert os.path.exists(out["paths"][f"frontier_{kind}"])
  text = open(out["paths"]["frontier_markdown"], encoding="utf-8").read()
  assert "measured on the test split" in text and "| off |" in text and "2/2" in text
  lines = open(out["paths"]["frontier_csv"], encoding="utf-8").read().splitlines()
  assert lines[0].startswith("kl_target,target,achieved_mean") and len(lines) == 4
  # The achieved KL is each setting's mean over its seeds of eval.json's elbo_kl.
  for t, line in zip((0.0, 1.0, 3.0), lines[1:]):
    kl = [r["elbo_kl"] for r in rows if r["kl_target"] == t]
    assert float(line.split(",")[2]) == pytest.approx(np.mean(kl), rel=1e-6)


def test_frontier_verdicts_and_monotonicity():
  assert setpoint.achieved(KL, 8.0, 8.3) == "met"
  assert setpoint.achieved(KL, 8.0, 9.0) == "missed by +12%"
  assert frontier.monotone([1.0, 2.0, 4.0]) and frontier.monotone([3.0, 2.0, math.nan, 1.0])
  assert not frontier.monotone([1.0, 3.0, 2.0])
  configs = [family_config("vae") for _ in range(2)]
  for c, t in zip(configs, (2.0, 4.0)):
    c.kl_target = t
  rows = [{"kl_target": 2.0, "elbo_kl": 2.05, "status": "done"}, {"kl_target": 4.0, "elbo_kl": 5.0, "status": "done"}]
  results = [workdir_lib.Result(train={setpoint.COEFFICIENT: c}) for c in (1.5, setpoint.COEFFICIENT_MIN)]
  point, entries = frontier.points(configs, rows, results, ["kl_target"])
  assert point is KL and [e["verdict"] for e in entries] == ["met", "missed by +25% (coefficient at its bound: "
                                                                      "unreachable)"]
  assert json.dumps(entries)  # Plain data, for the csv.
