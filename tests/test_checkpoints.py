"""Resuming from a checkpoint reproduces an uninterrupted run; corrupt checkpoints and foreign workdirs."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config


def _config(num_steps, **overrides):
  config = family_config("denoising")  # Random noise and data order both have to line up on resume.
  config.update({"num_steps": num_steps, "num_pictures": 0, **overrides})
  return config


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  return train.train_and_evaluate(_config(40), str(tmp_path_factory.mktemp("full")))


def test_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
  train.train_and_evaluate(_config(20), str(tmp_path))  # "Stopped" after 20 steps.
  resumed = train.train_and_evaluate(_config(40), str(tmp_path))
  assert [row["step"] for row in resumed.history] == [30, 40]  # Only the remaining steps ran.
  _assert_same_params(resumed.params, uninterrupted.params)
  assert resumed.test == pytest.approx(uninterrupted.test, rel=1e-6)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 40]
  assert [r["step"] for r in rows if "eval/mse" in r] == [20, 40]  # Each run's end-of-run evaluation.
  again = train.train_and_evaluate(_config(40), str(tmp_path))  # Finished: nothing to train.
  assert again.history == [] and again.eval == pytest.approx(resumed.eval, rel=1e-6, nan_ok=True)
  assert [json.loads(line) for line in open(tmp_path / "metrics.jsonl")] == rows  # Nothing logged twice.


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_resume_across_an_epoch_boundary_matches_an_uninterrupted_run(placement, tmp_path):
  # 64 training examples at batch 16: 4 steps per epoch. Stopped at step 6 (inside epoch 1) and resumed to 12
  # (into epoch 2): the resumed run must pick epoch 1's order up where it stopped, then draw epoch 2's. The
  # uninterrupted run logs every 4 steps, so none of its chunks starts inside an epoch as the resumed one does.
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
           y_train=rng.integers(0, 10, 64), x_test=rng.integers(0, 256, (16, 8, 8), dtype=np.uint8),
           y_test=rng.integers(0, 10, 16))
  small = {"dataset": f"npz:{tmp_path}/d.npz", "batch_size": 16, "evaluate": "quick", "data_placement": placement}
  every = {"log_every": 2, "eval_every": 6, "checkpoint_every": 6}
  full = train.train_and_evaluate(_config(12, **small, log_every=4, eval_every=12, checkpoint_every=12),
                                  str(tmp_path / "full"))
  train.train_and_evaluate(_config(6, **small, **every), str(tmp_path / "cut"))
  resumed = train.train_and_evaluate(_config(12, **small, **every), str(tmp_path / "cut"))
  assert [row["step"] for row in resumed.history] == [8, 10, 12]
  _assert_same_params(resumed.params, full.params)
  assert resumed.test == pytest.approx(full.test, rel=1e-6)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path, caplog):
  train.train_and_evaluate(_config(40), str(tmp_path))  # Checkpoints at 20 and 40.
  for path in glob.glob(str(tmp_path / "checkpoints" / "40" / "**" / "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  caplog.set_level("WARNING")
  result = train.train_and_evaluate(_config(40), str(tmp_path))
  assert "checkpoints/40 cannot be restored" in caplog.text
  assert [row["step"] for row in result.history] == [30, 40]  # Retrained from step 20.
  _assert_same_params(result.params, uninterrupted.params)


def test_workdir_with_a_different_run_is_refused_unless_overwrite(tmp_path):
  train.train_and_evaluate(_config(20), str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match="different config.*latent_dim.*overwrite"):
    train.train_and_evaluate(_config(20, latent_dim=3), str(tmp_path))
  result = train.train_and_evaluate(_config(20, latent_dim=3, overwrite=True), str(tmp_path))
  assert [row["step"] for row in result.history] == [10, 20]  # Started afresh.


def test_probe_settings_are_resumable_and_a_cosine_schedule_fixes_the_length():
  config = family_config("undercomplete")
  base = workdir_lib.comparable(config.to_dict())
  assert workdir_lib.comparable({**config.to_dict(), "probe_examples": 10_000, "probe_max_iter": 5}) == base
  assert workdir_lib.comparable({**config.to_dict(), "num_steps": 99, "num_epochs": 3}) == base  # Train on.
  cosine = {**config.to_dict(), "lr_schedule": "warmup_cosine"}
  # The cosine ends at the last step: another length is another trajectory.
  assert workdir_lib.comparable(cosine) != workdir_lib.comparable({**cosine, "num_steps": 99})
  epochs = {**cosine, "num_epochs": 3}
  assert workdir_lib.comparable(epochs) != workdir_lib.comparable({**epochs, "num_epochs": 4})
  assert workdir_lib.comparable(epochs) == workdir_lib.comparable({**epochs, "num_steps": 99})  # Resolved there.


def test_a_checkpoint_from_before_model_state_restores_with_the_fresh_model_state(tmp_path):
  import flax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from ae_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top

  @flax.struct.dataclass
  class OldTrainState:  # The train state before TopK's counters joined it.
    step: jax.Array
    params: dict
    opt_state: tuple
    diverged_at: jax.Array

  old = OldTrainState(step=jnp.int32(7), params={"w": jnp.arange(3.0)}, opt_state=(jnp.ones(3),),
                      diverged_at=jnp.int32(0))
  saver = checkpoints.Checkpointer(str(tmp_path))
  saver.save(7, old)
  saver.close()
  for model_state in ({}, {"examples_since_fired": jnp.full(4, 99, jnp.int32)}):
    template = step_lib.TrainState(step=jnp.int32(0), params={"w": jnp.zeros(3)}, opt_state=(jnp.zeros(3),),
                                   diverged_at=jnp.int32(0), model_state=model_state)
    reader = checkpoints.Checkpointer(str(tmp_path))
    restored = reader.restore_latest(template)
    reader.close()
    assert int(restored.step) == 7
    np.testing.assert_array_equal(restored.params["w"], [0.0, 1.0, 2.0])
    assert jax.tree.map(np.asarray, restored.model_state).keys() == model_state.keys()  # The template's.
