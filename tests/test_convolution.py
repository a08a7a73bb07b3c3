"""conv2d and Conv: flax's convolution, with gradients in XLA:CPU's canonical form."""

import re

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import convolution


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((2, 9, 8, 3), (3, 3, 3, 5), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 3), (3, 3, 3, 5), (2, 2), ((0, 1), (0, 1))),
    ((2, 5, 6, 3), (2, 1, 3, 4), (1, 1), ((1, 0), (0, 0))),
    ((2, 7, 7, 3), (3, 3, 3, 1), (1, 1), ((1, 1), (1, 1))),
])
def test_conv2d_value_and_gradients_equal_lax(shape, kernel, strides, padding):
  x, k = jax.random.normal(jax.random.key(0), shape), jax.random.normal(jax.random.key(1), kernel)
  ref = lambda x, k: lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y, ref_vjp = jax.vjp(ref, x, k)
  ours, vjp = jax.vjp(lambda x, k: convolution.conv2d(x, k, strides, padding), x, k)
  np.testing.assert_allclose(ours, y, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(2), y.shape)
  for a, b in zip(vjp(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_conv_equals_flax_conv(strides):
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
  ours, flax = convolution.Conv(4, (3, 3), strides), nn.Conv(4, (3, 3), strides, padding="SAME")
  params = ours.init(jax.random.key(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, flax.init(jax.random.key(1), x))
  params = jax.tree.map(lambda p: p + 1.0, params)
  np.testing.assert_allclose(ours.apply(params, x), flax.apply(params, x), rtol=1e-5, atol=1e-5)


def test_gradients_inside_a_scan_are_canonical_convolutions():
  """The reason for conv2d: XLA:CPU leaves other forms in a while loop to its slow generic emitter."""
  x, k = jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 5))

  def steps(k, conv):
    grad = jax.grad(lambda k: conv(x, k).sum())
    return lax.scan(lambda k, _: (k - grad(k), None), k, length=2)[0]

  def labels(conv):
    hlo = jax.jit(lambda k: steps(k, conv)).lower(k).compile().as_text()
    return set(re.findall(r"dim_labels=([\w>-]+)", hlo))

  # (Autodiff of lax's conv leaves f01b_i01o->01bf and b01f_01oi->b01f there, jax-ml/jax#12868.)
  assert labels(lambda x, k: convolution.conv2d(x, k, (2, 2), ((0, 1), (0, 1)))) == {"b01f_01io->b01f"}
