"""Elementwise activations by name, so configs can say `activation="gelu"`."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

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
