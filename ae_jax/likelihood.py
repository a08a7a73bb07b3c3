"""A VAE's held-out likelihood metrics: the IWAE estimate of log p(x), the ELBO's terms and active units.

Like `ae_jax.evaluation`, functions take arrays and already-jitted callables, a VAE's
`encode(x) -> (mean, logvar)` and `decode_logits(z) -> logits`, and return host floats (float64 sums).
Randomness is drawn per example from `jax.random.fold_in(key, example_index)`, so results do not depend
on `batch_size` (nor, for `iwae_log_likelihood`, on `chunk_size`).
"""

from collections.abc import Callable
import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from ae_jax import batching
from ae_jax.losses import reconstruction
from ae_jax.losses import variational

# A log-likelihood log p(x | decoder output) per example: (decoder_output (M, ...), x (M, ...)) -> (M,).
LogLikelihood = Callable[[jax.Array, jax.Array], jax.Array]


def _check_nonempty(name: str, x: np.ndarray | jax.Array) -> None:
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty batch with a leading example axis, got shape {x.shape}")


def _log_likelihood(likelihood: str | LogLikelihood) -> LogLikelihood:
  """A named likelihood is minus the reconstruction term of that kind (Gaussian: unit variance around sigmoid)."""
  if callable(likelihood):
    return likelihood
  if likelihood not in reconstruction.LIKELIHOODS:
    raise ValueError(f"unknown likelihood {likelihood!r}; choose 'bernoulli', 'gaussian' or pass a callable")
  return lambda logits, x: -reconstruction.from_logits(logits, x, kind=likelihood)


def softplus_forward(x: jax.Array) -> jax.Array:
  """log(1 + e^x) as max(x, 0) + log1p(e^-|x|): jax.nn.softplus's values (it computes logaddexp(x, 0)),
  about 1.5x faster on XLA:CPU, where the IWAE estimate's per-pixel softplus costs about twice the
  decoder's matmuls (docs/speed.md). For evaluation only: under autodiff in the training step it made
  XLA:CPU's step about 2x slower than jax.nn.softplus, so the training loss keeps the latter."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _broadcast_log_likelihood(likelihood: str | LogLikelihood):
  """For a named likelihood, `(logits (B, C, D), x (B, 1, D)) -> (B, C)` without copying x C times."""
  if likelihood == "bernoulli":  # log Bernoulli(x | sigmoid(l)) = x l - softplus(l).
    return lambda logits, x: jnp.sum(x * logits - softplus_forward(logits), axis=-1)
  if likelihood == "gaussian":
    return lambda logits, x: -jnp.sum(0.5 * jnp.square(x - jax.nn.sigmoid(logits)) + 0.5 * jnp.log(2 * jnp.pi),
                                      axis=-1)
  return None


@functools.lru_cache(maxsize=None)
def _iwae_batch(num_samples: int, chunk_size: int, likelihood: str | LogLikelihood):
  log_px_given_z = _log_likelihood(likelihood)
  num_chunks = -(-num_samples // chunk_size)

  broadcast = _broadcast_log_likelihood(likelihood)

  @jax.jit
  def batch_fn(encode, decode_logits, key, xb: jax.Array, indices: jax.Array) -> jax.Array:
    mean, logvar = encode(xb)
    if mean.ndim != 2 or mean.shape != logvar.shape:
      raise ValueError(f"encode must return (B, k) mean and logvar, got {mean.shape} and {logvar.shape}")
    b, k = mean.shape
    example_keys = batching.example_keys(key, indices)
    x_flat = xb.reshape(b, 1, -1)
    log_norm = 0.5 * k * jnp.log(2 * jnp.pi)
    log_q_const = -0.5 * jnp.sum(logvar, axis=1, keepdims=True) - log_norm  # (B, 1)

    def chunk(log_total: jax.Array, c: jax.Array) -> tuple[jax.Array, None]:
      eps = jax.vmap(lambda ek: jax.random.normal(jax.random.fold_in(ek, c), (chunk_size, k), mean.dtype))(
          example_keys)  # (B, C, k)
      z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps
      logits = decode_logits(z.reshape(b * chunk_size, k))
      if broadcast is not None:
        log_px = broadcast(logits.reshape(b, chunk_size, -1), x_flat)
      else:
        x_rep = jnp.broadcast_to(xb[:, None], (b, chunk_size, *xb.shape[1:])).reshape(b * chunk_size, *xb.shape[1:])
        log_px = log_px_given_z(logits, x_rep).reshape(b, chunk_size)
      log_pz = -0.5 * jnp.sum(jnp.square(z), axis=2) - log_norm
      log_qz = -0.5 * jnp.sum(jnp.square(eps), axis=2) + log_q_const
      log_w = jnp.where(c * chunk_size + jnp.arange(chunk_size) < num_samples, log_px + log_pz - log_qz, -jnp.inf)
      return jnp.logaddexp(log_total, jax.nn.logsumexp(log_w, axis=1)), None

    log_total, _ = jax.lax.scan(chunk, jnp.full((b,), -jnp.inf, mean.dtype), jnp.arange(num_chunks))
    return log_total - jnp.log(float(num_samples))

  return batch_fn


def iwae_log_likelihood(
    encode: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    decode_logits: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    key: jax.Array,
    *,
    num_samples: int = 1000,
    chunk_size: int = 100,
    likelihood: str | LogLikelihood = "bernoulli",
    batch_size: int = 128,
) -> np.ndarray:
  """(N,) importance-sampled estimates of log p(x) = log mean_k p(x, z_k) / q(z_k | x), z_k ~ q(z|x).

  q(z|x) = N(mean, exp(logvar)) from `encode`, p(z) = N(0, I), and p(x|z) from `likelihood`:
  'bernoulli' (Bernoulli(sigmoid(logits))), 'gaussian' (unit variance around sigmoid(logits)), or a
  callable `log_prob(decoder_output, x) -> (M,)` over flattened sample batches (e.g. a Gaussian with
  another scale). A lower bound in expectation that tightens as num_samples grows (Burda et al.).
  Samples are drawn `chunk_size` at a time and folded into a running logsumexp (lax.scan), so the
  decoder sees at most chunk_size * batch_size latents at once. Chunk c of example i is drawn from
  fold_in(fold_in(key, i), c) in one call, so the estimate does not depend on batch_size. The named
  likelihoods broadcast the image against its samples instead of copying it per sample, and
  log q(z|x) is computed from the standard normal draws: the decoder's matmuls are most of the cost.
  """
  x = jnp.asarray(x)
  _check_nonempty("x", x)
  if num_samples <= 0 or chunk_size <= 0:
    raise ValueError(f"num_samples and chunk_size must be positive, got {num_samples} and {chunk_size}")
  chunk_size = min(chunk_size, num_samples)
  fn = _iwae_batch(num_samples, chunk_size, likelihood)
  args = (batching.as_pytree(encode), batching.as_pytree(decode_logits), key)
  return batching.map_batches(fn, (x,), batch_size=batch_size, args=args, with_indices=True,
                              label=f"IWAE log-likelihood ({num_samples} samples)").astype(np.float64)


@functools.lru_cache(maxsize=None)
def _vae_terms_batch(likelihood: str | LogLikelihood):
  log_px_given_z = _log_likelihood(likelihood)

  @jax.jit
  def batch_fn(encode, decode_logits, key, xb: jax.Array, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean, logvar = encode(xb)
    keys = batching.example_keys(key, indices)
    z = jax.vmap(variational.reparameterize)(keys, mean, logvar)
    return -log_px_given_z(decode_logits(z), xb), variational.kl_standard_normal(mean, logvar)
  return batch_fn


def vae_terms(
    encode: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    decode_logits: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    key: jax.Array,
    *,
    likelihood: str | LogLikelihood = "bernoulli",
    batch_size: int = 512,
) -> dict[str, float]:
  """Means over x of the one-sample ELBO terms (beta = 1), with the likelihoods of `iwae_log_likelihood`.

  "elbo_reconstruction" is E_q[-log p(x|z)] (one sample, lower is better) and "elbo_kl" the analytic
  KL(q(z|x) || N(0, I)), so "negative_elbo" = elbo_reconstruction + elbo_kl (nats per example).
  """
  x = jnp.asarray(x)
  _check_nonempty("x", x)
  args = (batching.as_pytree(encode), batching.as_pytree(decode_logits), key)
  rec, kl = batching.map_batches(_vae_terms_batch(likelihood), (x,), batch_size=batch_size, args=args,
                                 with_indices=True, label="ELBO terms")
  rec, kl = rec.astype(np.float64), kl.astype(np.float64)
  return {
      "negative_elbo": float((rec + kl).mean()),
      "elbo_reconstruction": float(rec.mean()),
      "elbo_kl": float(kl.mean()),
  }


def active_units(means: ArrayLike, *, threshold: float = 0.01) -> int:
  """Number of latent dims u with Var_x(E_q[z_u | x]) > threshold (Burda et al.'s active units).

  `means` is (N, k) posterior means; a dim whose mean ignores x has collapsed to the prior.
  Uses the population variance (ddof=0).
  """
  means = np.asarray(means, dtype=np.float64)
  means = means.reshape(len(means), -1)
  _check_nonempty("means", means)
  if threshold < 0:
    raise ValueError(f"threshold must be non-negative, got {threshold}")
  return int((means.var(axis=0) > threshold).sum())
