"""2-D convolutions whose gradients XLA:CPU runs fast inside the training loop's `lax.scan`.

XLA:CPU only has a fast convolution kernel (Eigen's) for the canonical layout: NHWC input, HWIO
kernel, NHWC output. jax's autodiff writes a convolution's kernel gradient with the batch as the
contracted feature dimension (`f01b_i01o->01bf`) and its input gradient with a transposed kernel
(`b01f_01oi->b01f`). Outside a loop XLA rewrites both into the canonical form; inside a while loop
(`lax.scan`, as every ae_jax training chunk is) it does not, and they run in its generic loop
emitter (jax-ml/jax#12868): a conv (32, 64) MNIST step took 1550 ms inside a scan against 105 ms
outside (docs/speed.md, "Conv models on CPU"). `conv2d` gives the convolution a custom VJP that writes both gradients as
canonical convolutions itself, with explicit transposes, so the scan runs them at full speed.
"""

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_CANONICAL = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, padding)` for NHWC `x` and HWIO `kernel`."""
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_CANONICAL)


def _conv2d_fwd(x, kernel, strides, padding):
  return conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  dims = list(zip(x.shape[1:3], kernel.shape[:2], g.shape[1:3], strides, (lo for lo, _ in padding)))
  # Input: g dilated by the strides, correlated with the flipped kernel (its in and out swapped).
  pad = [(k - 1 - lo, n - 1 + lo - (o - 1) * s) for n, k, o, s, lo in dims]
  dx = lax.conv_general_dilated(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), (1, 1), pad,
                                lhs_dilation=strides, dimension_numbers=_CANONICAL)
  # Kernel: the in-channels as the batch, the examples as the contracted features, g (dilated by the
  # strides) as the window; the output (in, kh, kw, out) is the kernel, transposed.
  pad = [(lo, k + (o - 1) * s - n - lo) for n, k, o, s, lo in dims]
  dk = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pad,
                                rhs_dilation=strides, dimension_numbers=_CANONICAL)
  return dx, dk.transpose(1, 2, 0, 3)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, strides, padding)` on NHWC images through `conv2d`.

  Same params (`kernel` (kh, kw, in, features), `bias`), initial values and outputs as flax's layer.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: str = "SAME"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    strides = tuple(self.strides)
    padding = tuple(lax.padtype_to_pads(x.shape[1:3], self.kernel_size, strides, self.padding))
    return conv2d(x, kernel, strides, padding) + bias
