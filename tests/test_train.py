"""The data-parallel step: device-count invariance, determinism, and loud failure on non-finite loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import models
from ae_jax import objectives
from ae_jax import train
from tests.conftest import family_config

NUM_EXAMPLES = 64


def _run(family, devices, *, chunks=(3, 3), feed=train.DeviceFeed, **overrides):
  """Trains `sum(chunks)` steps of `family` on random images with `devices`; returns (state, metrics)."""
  config = family_config(family)
  config.update({"batch_size": 16, "learning_rate": 1e-2, **overrides})
  model = models.build(architecture="mlp", input_shape=(8, 8, 1), latent_dim=config.latent_dim,
                       widths=tuple(config.widths), code_activation=config.code_activation,
                       variational=family == "vae")
  optimizer = train.make_optimizer(config)
  mesh = train.make_mesh(devices)
  state = train.init_state(models.init(model, jax.random.key(0), (8, 8, 1)), optimizer)
  step = train.make_train_step(objectives.build(config, model, axis_name=train.AXIS), optimizer, mesh,
                               dynamic_binarize=config.binarize == "dynamic")
  images = np.asarray(jax.random.uniform(jax.random.key(1), (NUM_EXAMPLES, 8, 8, 1)))
  labels = np.zeros(NUM_EXAMPLES, np.int32)
  feed = feed(step, images, labels, jax.random.key(2), batch_size=16, mesh=mesh)
  metrics, done = [], 0
  for i, length in enumerate(chunks):
    state, m = feed.run(state, done, length, chunks[i + 1] if i + 1 < len(chunks) else 0)
    metrics.append(m)
    done += length
  feed.close()
  return state, jax.tree.map(lambda *m: np.concatenate(m), *metrics)


@pytest.mark.parametrize("family,overrides", [
    ("undercomplete", {}),
    ("sparse", {}),  # KL sparsity: the batch-mean activation is pmean-ed over devices.
    ("denoising", {"binarize": "dynamic"}),  # Per-example keys: the same noise on any device count.
    ("vae", {}),
    ("contractive", {"contractive_path": "stochastic"}),  # Per-example random probes.
])
def test_one_and_four_devices_give_the_same_parameters(family, overrides):
  assert len(jax.devices()) >= 4, "conftest should have set 4 fake CPU devices"
  # SGD: Adam divides by sqrt(v), which turns float-rounding differences in near-zero gradients
  # (the all-reduce sums in another order) into differences of a whole learning rate.
  overrides = {"optimizer": "sgd", "learning_rate": 1e-3, **overrides}
  one, m1 = _run(family, jax.devices()[:1], **overrides)
  four, m4 = _run(family, jax.devices()[:4], **overrides)
  assert int(one.step) == int(four.step) == 6
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunking_does_not_change_the_result():
  # Data order and noise are pure functions of (key, step): 6 steps as 6x1 equal 2x3 equal 1x6.
  a, _ = _run("denoising", jax.devices()[:1], chunks=(6,))
  b, _ = _run("denoising", jax.devices()[:1], chunks=(1,) * 6)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_metrics_include_norms_and_the_loss_decreases():
  _, metrics = _run("undercomplete", jax.devices()[:1], chunks=(20,))
  for name in ("loss", "loss_rec", "grad_norm", "param_norm", "update_norm"):
    assert metrics[name].shape == (20,) and np.all(np.isfinite(metrics[name]))
  assert metrics["loss"][-5:].mean() < metrics["loss"][:5].mean()


def test_non_finite_loss_fails_loudly():
  with pytest.raises(train.TrainingError, match="loss became nan at step 2"):
    train._check_finite({"loss": np.array([1.0, np.nan, np.inf])}, first_step=0)  # pylint: disable=protected-access


def test_streaming_from_the_host_trains_on_the_same_batches_as_the_device_feed():
  # 64 examples / batch 16 = 4 steps per epoch: chunks of 3, 3 and 2 cross two epoch boundaries.
  device, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2))
  host, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2), feed=train.HostFeed)
  for x, y in zip(jax.tree.leaves(device.params), jax.tree.leaves(host.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
