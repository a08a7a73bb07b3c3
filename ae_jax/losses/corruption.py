"""Input corruptions for denoising autoencoders, driven by an explicit PRNG key.

Each maps (key, x) -> x_tilde of x's shape. Use one key per example (`jax.vmap`) when the result
must not depend on how a batch is split across devices.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _check_rate(name: str, value: ArrayLike) -> None:
  # Python numbers are checked here; traced hyperparameters were checked with the config.
  if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}")


def gaussian(key: jax.Array, x: ArrayLike, *, sigma: ArrayLike) -> jax.Array:
  """x + sigma * N(0, I) (not clipped, so the noise stays zero-mean)."""
  if isinstance(sigma, (int, float)) and sigma < 0:
    raise ValueError(f"sigma must be non-negative, got {sigma}")
  x = jnp.asarray(x)
  return x + sigma * jax.random.normal(key, x.shape, x.dtype)


def masking(key: jax.Array, x: ArrayLike, *, rate: ArrayLike) -> jax.Array:
  """Sets each input to zero independently with probability `rate` (masking noise)."""
  _check_rate("rate", rate)
  x = jnp.asarray(x)
  return jnp.where(jax.random.bernoulli(key, rate, x.shape), jnp.zeros_like(x), x)


def salt_and_pepper(key: jax.Array, x: ArrayLike, *, rate: ArrayLike, low: float = 0.0, high: float = 1.0) -> jax.Array:
  """Replaces each input with probability `rate` by `low` or `high`, chosen with equal odds."""
  _check_rate("rate", rate)
  x = jnp.asarray(x)
  hit_key, coin_key = jax.random.split(key)
  hit = jax.random.bernoulli(hit_key, rate, x.shape)
  salt = jax.random.bernoulli(coin_key, 0.5, x.shape)
  return jnp.where(hit, jnp.where(salt, high, low).astype(x.dtype), x)


def corrupt(key: jax.Array, x: ArrayLike, *, kind: str, level: ArrayLike) -> jax.Array:
  """The corruption named `kind` ('gaussian', 'masking', 'salt_and_pepper') at `level` (sigma or rate)."""
  if kind == "gaussian":
    return gaussian(key, x, sigma=level)
  if kind == "masking":
    return masking(key, x, rate=level)
  if kind == "salt_and_pepper":
    return salt_and_pepper(key, x, rate=level)
  raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(KINDS)}")


KINDS = ("gaussian", "masking", "salt_and_pepper")
