"""Sparsity of code activations: L1 and KL penalties, and TopK with its AuxK revival of dead units.

A TopK unit is dead (Gao et al. 2024) when it has not fired for `dead_after` training examples: the
train state keeps, per unit, the examples seen since it last fired (`examples_since_fired`), and
`update_since_fired` advances it by one global batch.

`l1` is per example. `kl_divergence` compares each unit's *batch-mean* activation with a target rate
rho, so it is a per-unit quantity: under data parallelism pass `axis_name` so the mean is taken over
the global batch, which keeps the loss independent of how the batch is split across devices.
"""

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike


def l1(code: ArrayLike) -> jax.Array:
  """sum_j |z_j| per example, shape (B,)."""
  code = jnp.asarray(code)
  return jnp.abs(code).reshape(code.shape[0], -1).sum(axis=1)


L0_THRESHOLD = 1e-3  # A code unit is "on" above this (ReLU and TopK codes are exactly 0 when off)...
L0_THRESHOLD_BOUNDED = 0.1  # ...or above 10% of full scale for sigmoid and tanh codes, never exactly 0.


def l0_threshold(code_activation: str, *, variational: bool = False) -> float:
  """When a code unit counts as on: a bounded (sigmoid, tanh) unit idles near rho, above 1e-3."""
  return L0_THRESHOLD_BOUNDED if not variational and code_activation in ("sigmoid", "tanh") else L0_THRESHOLD


def l0(code: ArrayLike, *, threshold: float = L0_THRESHOLD) -> jax.Array:
  """Units on (|z| > threshold) per example, shape (B,): what eval.json's `l0` averages."""
  code = jnp.asarray(code)
  return (jnp.abs(code) > threshold).reshape(code.shape[0], -1).sum(axis=1).astype(jnp.float32)


def bernoulli_kl(rho: ArrayLike, rho_hat: ArrayLike) -> jax.Array:
  """KL(Bernoulli(rho) || Bernoulli(rho_hat)), elementwise."""
  rho, rho_hat = jnp.asarray(rho), jnp.asarray(rho_hat)
  return rho * (jnp.log(rho) - jnp.log(rho_hat)) + (1 - rho) * (jnp.log1p(-rho) - jnp.log1p(-rho_hat))


def kl_divergence(
    code: ArrayLike, *, rho: ArrayLike = 0.05, axis_name: str | None = None, eps: float = 1e-6
) -> jax.Array:
  """KL(rho || rho_hat_j) per unit j, shape (k,), where rho_hat_j is unit j's mean activation.

  Codes must lie in [0, 1] (a sigmoid code layer). rho_hat is clipped to [eps, 1 - eps] so a dead or
  saturated unit gives a large finite penalty instead of inf.
  """
  if isinstance(rho, (int, float)) and not 0.0 < rho < 1.0:  # A traced rho was checked with the config.
    raise ValueError(f"rho must be in (0, 1), got {rho}")
  code = jnp.asarray(code)
  if code.ndim != 2:
    raise ValueError(f"code must be (batch, units), got shape {code.shape}")
  rho_hat = code.mean(axis=0)
  if axis_name is not None:
    rho_hat = lax.pmean(rho_hat, axis_name)
  return bernoulli_kl(rho, jnp.clip(rho_hat, eps, 1.0 - eps))


def dead_units(code: ArrayLike, *, axis_name: str | None = None) -> jax.Array:
  """Units that fired for no example of the (global) batch, shape (k,) bool."""
  fired = jnp.any(jnp.asarray(code) > 0, axis=0).astype(jnp.float32)
  if axis_name is not None:
    fired = lax.pmax(fired, axis_name)
  return fired == 0


# The counter stops here (about 1e9 examples): it never wraps around to a "live" negative count.
SINCE_FIRED_CAP = 2**30


def update_since_fired(since_fired: ArrayLike, code: ArrayLike, *, axis_name: str | None = None) -> jax.Array:
  """Examples since each unit last fired, after one more batch: 0 for units that fired for some example
  of the (global) batch, else the old count plus the global batch size (capped at SINCE_FIRED_CAP).

  `since_fired` is (k,) int32; under data parallelism `axis_name` makes both the firing test and the
  batch size global, so every device (and any device count) computes the same counts.
  """
  code = jnp.asarray(code)
  fired = jnp.any(code > 0, axis=0).astype(jnp.int32)
  batch = jnp.asarray(code.shape[0], jnp.int32)
  if axis_name is not None:
    fired, batch = lax.pmax(fired, axis_name), lax.psum(batch, axis_name)
  since_fired = jnp.asarray(since_fired, jnp.int32)
  grown = jnp.minimum(since_fired, SINCE_FIRED_CAP - batch) + batch
  return jnp.where(fired > 0, 0, grown).astype(jnp.int32)


def windowed_dead_units(since_fired: ArrayLike, *, dead_after: int) -> jax.Array:
  """Units that have not fired for `dead_after` or more training examples, shape (k,) bool.

  With `dead_after` <= the batch size this is `dead_units` of the batch (after `update_since_fired`).
  """
  return jnp.asarray(since_fired) >= dead_after


def auxk_code(pre: ArrayLike, dead: ArrayLike, *, k: int) -> jax.Array:
  """The TopK code restricted to `dead` units (AuxK): what the dead latents would add if they fired."""
  pre = jnp.asarray(pre)
  k = min(k, pre.shape[-1])
  masked = jnp.where(dead, pre, -jnp.inf)
  kth = lax.top_k(masked, k)[0][..., -1:]
  return jnp.where(dead & (masked >= kth), jax.nn.relu(pre), 0.0)
