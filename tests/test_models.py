"""Shapes and construction errors of the Flax models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import activations
from ae_jax import models


@pytest.mark.parametrize("architecture,widths", [("mlp", (16, 8)), ("conv", (4, 8))])
def test_autoencoder_shapes(architecture, widths):
  model = models.build(architecture=architecture, input_shape=(8, 8, 1), latent_dim=5, widths=widths)
  params = models.init(model, jax.random.key(0), (8, 8, 1))
  z, logits = model.apply({"params": params}, jnp.zeros((3, 8, 8, 1)))
  assert z.shape == (3, 5) and logits.shape == (3, 8, 8, 1)
  assert model.apply({"params": params}, z, method="decode").shape == (3, 8, 8, 1)


@pytest.mark.parametrize("architecture,widths", [("mlp", (16,)), ("conv", (4,))])
def test_vae_returns_mean_and_logvar(architecture, widths):
  model = models.build(architecture=architecture, input_shape=(8, 8, 1), latent_dim=3, widths=widths,
                       variational=True)
  params = models.init(model, jax.random.key(0), (8, 8, 1))
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  mean, logvar = model.apply({"params": params}, x, method="encode")
  assert mean.shape == logvar.shape == (2, 3)
  # Each is its own Dense head on the trunk's features: "mean" gives the mean, "logvar" the log-variance.
  h = np.asarray(model.apply({"params": params}, x, method=lambda m, v: m.encoder.trunk(v)), np.float64)
  for value, head in ((mean, "mean"), (logvar, "logvar")):
    kernel, bias = (np.asarray(params["encoder"][head][k], np.float64) for k in ("kernel", "bias"))
    np.testing.assert_allclose(value, h @ kernel + bias, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(mean) - np.asarray(logvar)).max() > 0.1


def test_mlp_layers_and_overcomplete_code():
  model = models.build(architecture="mlp", input_shape=(4,), latent_dim=10, widths=(6, 5),
                       code_activation="sigmoid")
  params = models.init(model, jax.random.key(0), (4,))
  layers = models.mlp_layers(params["encoder"])
  assert [k.shape for k, _ in layers] == [(4, 6), (6, 5), (5, 10)]
  z = model.apply({"params": params}, jnp.ones((2, 4)), method="encode")
  assert z.shape == (2, 10) and np.all((z > 0) & (z < 1))


def test_activations_by_name():
  x = jnp.array([-1.0, 0.0, 2.0])
  np.testing.assert_allclose(activations.get("relu")(x), [0.0, 0.0, 2.0])
  np.testing.assert_allclose(activations.derivative("sigmoid")(jnp.zeros(1)), [0.25])
  np.testing.assert_allclose(activations.derivative("tanh")(jnp.zeros(1)), [1.0])
  with pytest.raises(ValueError, match="unknown activation"):
    activations.get("swoosh")


@pytest.mark.parametrize("kwargs,match", [
    ({"architecture": "rnn"}, "unknown architecture"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"widths": (8, -1)}, "widths"),
    ({"architecture": "conv", "input_shape": (6, 6, 1), "widths": (4, 4)}, "divisible"),
    ({"activation": "swoosh"}, "unknown activation"),
])
def test_build_errors(kwargs, match):
  args = {"architecture": "mlp", "input_shape": (8, 8, 1), "latent_dim": 4, "widths": (8,), **kwargs}
  with pytest.raises(ValueError, match=match):
    models.build(**args)


def _kernels(params):
  return {"/".join(str(k.key) for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(params)
          if path[-1].key == "kernel"}


@pytest.mark.parametrize("architecture,widths", [("mlp", (32, 16)), ("conv", (4, 8))])
@pytest.mark.parametrize("variational", [False, True])
def test_kernel_init_by_name_reaches_every_layer(architecture, widths, variational):
  def build(name):
    model = models.build(architecture=architecture, input_shape=(8, 8, 1), latent_dim=6, widths=widths,
                         variational=variational, kernel_init=name)
    return _kernels(models.init(model, jax.random.key(0), (8, 8, 1)))
  default, glorot = build("lecun_normal"), build("glorot_uniform")
  assert default.keys() == glorot.keys()
  for name, kernel in glorot.items():
    # glorot_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), fans times the receptive field for convs.
    receptive = int(np.prod(kernel.shape[:-2]))
    limit = np.sqrt(6 / (receptive * (kernel.shape[-2] + kernel.shape[-1])))
    assert np.abs(kernel).max() <= limit + 1e-7, name
    assert not np.allclose(kernel, default[name]), name  # Every layer took the named initialiser.


def test_he_normal_has_the_he_scale():
  model = models.build(architecture="mlp", input_shape=(400,), latent_dim=300, widths=(), kernel_init="he_normal")
  kernel = np.asarray(models.init(model, jax.random.key(0), (400,))["encoder"]["code"]["kernel"])
  assert kernel.std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)  # Var = 2 / fan_in (truncated normal).
  with pytest.raises(ValueError, match="unknown kernel_init 'zeros'; choose one of lecun_normal"):
    models.build(architecture="mlp", input_shape=(4,), latent_dim=2, widths=(), kernel_init="zeros")


@pytest.mark.parametrize("architecture,variational", [("mlp", False), ("mlp", True), ("conv", False)])
def test_output_bias_draws_the_data_mean_before_training(architecture, variational):
  images = np.asarray(jax.random.uniform(jax.random.key(1), (50, 8, 8, 1))) ** 3
  images[:, 0, 0, 0] = 0.0  # A pixel that is always off: its logit is clipped, not -inf.
  bias = models.data_mean_logits(images)
  mean = np.clip(images.mean(0), 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(jax.nn.sigmoid(bias), mean, rtol=1e-5)
  assert np.isfinite(bias).all() and bias[0, 0, 0] == pytest.approx(np.log(1e-3 / (1 - 1e-3)), rel=1e-5)
  model = models.build(architecture=architecture, input_shape=(8, 8, 1), latent_dim=4, widths=(4,),
                       variational=variational)
  plain = models.init(model, jax.random.key(0), (8, 8, 1))
  params = models.init(model, jax.random.key(0), (8, 8, 1), output_bias=bias)
  got = np.asarray(params["decoder"]["logits"]["bias"])
  expected = bias.reshape(-1) if architecture == "mlp" else bias.mean(axis=(0, 1))  # Conv: one per channel.
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert not np.allclose(plain["decoder"]["logits"]["bias"], got)
  for a, b in zip(jax.tree.leaves(plain["encoder"]), jax.tree.leaves(params["encoder"])):
    np.testing.assert_array_equal(a, b)  # Only the output bias changed.
  with pytest.raises(ValueError, match="output_bias has shape"):
    models.init(model, jax.random.key(0), (8, 8, 1), output_bias=bias[:4])


@pytest.mark.parametrize("overrides,fragment", [
    ({"kernel_init": "orthogonal"}, "--config.kernel_init='orthogonal' is not one of: lecun_normal"),
    ({"init_output_bias": "mean"}, "--config.init_output_bias='mean' is not one of: zero, data_mean"),
])
def test_bad_model_init_options_fail_in_one_line(overrides, fragment):
  from ae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import family_config  # pylint: disable=g-import-not-at-top
  config = family_config("undercomplete")
  config.update(overrides)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  assert fragment in str(e.value) and "\n" not in str(e.value)


def test_conv_transpose_2x_equals_flax_conv_transpose():
  """Same params, initial values, outputs and gradients as the flax layer it replaces."""
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  ours, flax = models.ConvTranspose2x(6), models.nn.ConvTranspose(6, (3, 3), strides=(2, 2), padding="SAME")
  params = ours.init(jax.random.key(1), x)
  flax_params = flax.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, flax_params)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)  # Nonzero bias.
  y = ours.apply(params, x)
  assert y.shape == (2, 6, 8, 6)
  np.testing.assert_allclose(y, flax.apply(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda module: lambda p, x: (module.apply(p, x) * jnp.arange(6.0)).sum() ** 2
  grads, flax_grads = (jax.grad(loss(m), argnums=(0, 1))(params, x) for m in (ours, flax))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3), grads, flax_grads)
