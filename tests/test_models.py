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
  mean, logvar = model.apply({"params": params}, jnp.ones((2, 8, 8, 1)), method="encode")
  assert mean.shape == logvar.shape == (2, 3)
  assert not np.allclose(mean, logvar)


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
