"""The VAE's pieces: reparameterized sampling, KL to N(0, I), the negative ELBO and the importance-weighted
bound (IWAE) per example."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def reparameterize(key: jax.Array, mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
  """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) from `key`; differentiable in mean and logvar."""
  mean, logvar = jnp.asarray(mean), jnp.asarray(logvar)
  if mean.shape != logvar.shape:
    raise ValueError(f"mean shape {mean.shape} does not match logvar shape {logvar.shape}")
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def kl_standard_normal(mean: ArrayLike, logvar: ArrayLike) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example, analytic: 0.5 sum(mean^2 + var - 1 - logvar)."""
  mean, logvar = jnp.asarray(mean), jnp.asarray(logvar)
  if mean.shape != logvar.shape:
    raise ValueError(f"mean shape {mean.shape} does not match logvar shape {logvar.shape}")
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return kl.reshape(kl.shape[0], -1).sum(axis=1)


def negative_elbo(rec: ArrayLike, kl: ArrayLike, *, beta: float = 1.0) -> jax.Array:
  """-ELBO = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z)) per example (beta = 1 is the true bound)."""
  rec, kl = jnp.asarray(rec), jnp.asarray(kl)
  if rec.shape != kl.shape:
    raise ValueError(f"reconstruction shape {rec.shape} does not match KL shape {kl.shape}")
  return rec + beta * kl


def gaussian_log_prob(z: ArrayLike, mean: ArrayLike = 0.0, logvar: ArrayLike = 0.0) -> jax.Array:
  """log N(z | mean, exp(logvar)) summed over the last axis (for importance-sampled bounds)."""
  z = jnp.asarray(z)
  logvar = jnp.broadcast_to(jnp.asarray(logvar, z.dtype), z.shape)
  lp = -0.5 * (jnp.square(z - mean) * jnp.exp(-logvar) + logvar + jnp.log(2 * jnp.pi))
  return lp.sum(axis=-1)


def log_importance_weights(log_px_given_z: ArrayLike, z: ArrayLike, mean: ArrayLike, logvar: ArrayLike
                           ) -> jax.Array:
  """log w = log p(x|z) + log N(z | 0, I) - log q(z|x) for samples z (..., B, d) of q = N(mean, exp(logvar)).

  `log_px_given_z` is (..., B), `mean` and `logvar` (B, d); leading sample axes broadcast.
  """
  z = jnp.asarray(z)
  return jnp.asarray(log_px_given_z) + gaussian_log_prob(z) - gaussian_log_prob(z, mean, logvar)


def iwae_bound(log_weights: ArrayLike, *, axis: int = 0) -> jax.Array:
  """The importance-weighted bound log (1/k) sum_i w_i over the k samples along `axis` (Burda et al. 2015).

  k = 1 is the one-sample ELBO with the KL estimated from the sample; the bound does not decrease
  in expectation as k grows and tends to log p(x).
  """
  log_weights = jnp.asarray(log_weights)
  return jax.nn.logsumexp(log_weights, axis=axis) - jnp.log(float(log_weights.shape[axis]))
