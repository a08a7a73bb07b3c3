"""Activations by name, so configs can say `activation="gelu"`, and TopK.

At the bottom of the package: models and losses both import it, it imports neither.
"""

from collections.abc import Callable

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike

Activation = Callable[[jax.Array], jax.Array]

_ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "leaky_relu": jax.nn.leaky_relu,
}

NAMES = tuple(sorted(_ACTIVATIONS))


def get(name: str) -> Activation:
  """Returns the elementwise activation called `name`; raises ValueError for unknown names."""
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(NAMES)}") from None


def derivative(name: str) -> Activation:
  """Returns x -> s'(x) for the elementwise activation `name` (one JVP with a ones tangent)."""
  fn = get(name)
  return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


def topk(pre: ArrayLike, *, k: int) -> jax.Array:
  """TopK activation (Gao et al. 2024): relu of the k largest pre-activations per example, 0 elsewhere.

  Ties at the k-th value may keep a few more than k units; gradients flow to the kept units only.
  """
  pre = jnp.asarray(pre)
  if not 0 < k <= pre.shape[-1]:
    raise ValueError(f"k must be in [1, {pre.shape[-1]}] (the code size), got {k}")
  kth = lax.top_k(pre, k)[0][..., -1:]
  return jnp.where(pre >= kth, jax.nn.relu(pre), 0.0)
