"""Reconstruction terms, per example: each returns shape (B,), summed over every non-batch axis.

Decoders output logits. `squared_error` compares `sigmoid(logits)` (a mean in [0, 1]) with x;
`bernoulli` is the exact negative log-likelihood of x in [0, 1] under Bernoulli(sigmoid(logits)).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _check_same_shape(a: jax.Array, b: jax.Array) -> None:
  if a.shape != b.shape:
    raise ValueError(f"prediction shape {a.shape} does not match target shape {b.shape}")


def _sum_per_example(v: jax.Array) -> jax.Array:
  return v.reshape(v.shape[0], -1).sum(axis=1)


def squared_error(prediction: ArrayLike, target: ArrayLike) -> jax.Array:
  """sum_i (prediction_i - target_i)^2 per example."""
  prediction, target = jnp.asarray(prediction), jnp.asarray(target)
  _check_same_shape(prediction, target)
  return _sum_per_example(jnp.square(prediction - target))


def bernoulli(logits: ArrayLike, target: ArrayLike) -> jax.Array:
  """-log Bernoulli(target | sigmoid(logits)) per example; stable for any logits, target in [0, 1].

  Equals the binary cross-entropy sum_i softplus(l_i) - x_i l_i; for non-binary x it is the usual
  "continuous" cross-entropy, which is minimised (not zeroed) at sigmoid(l) = x.
  """
  logits, target = jnp.asarray(logits), jnp.asarray(target)
  _check_same_shape(logits, target)
  return _sum_per_example(jax.nn.softplus(logits) - target * logits)


def gaussian(mean: ArrayLike, target: ArrayLike, *, log_scale: ArrayLike = 0.0) -> jax.Array:
  """-log N(target | mean, exp(log_scale)^2) per example, constants included."""
  mean, target = jnp.asarray(mean), jnp.asarray(target)
  _check_same_shape(mean, target)
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, mean.dtype), mean.shape)
  nll = 0.5 * jnp.square((target - mean) * jnp.exp(-log_scale)) + log_scale + 0.5 * jnp.log(2 * jnp.pi)
  return _sum_per_example(nll)


def from_logits(logits: ArrayLike, target: ArrayLike, *, kind: str) -> jax.Array:
  """The reconstruction term named `kind` ('bernoulli', 'squared_error' or 'gaussian') from logits."""
  if kind == "bernoulli":
    return bernoulli(logits, target)
  if kind == "squared_error":
    return squared_error(jax.nn.sigmoid(logits), target)
  if kind == "gaussian":  # Unit-variance Gaussian on the sigmoid mean.
    return gaussian(jax.nn.sigmoid(logits), target)
  raise ValueError(f"unknown reconstruction {kind!r}; choose 'bernoulli', 'squared_error' or 'gaussian'")


KINDS = ("bernoulli", "squared_error", "gaussian")
