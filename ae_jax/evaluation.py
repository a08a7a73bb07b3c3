"""End-of-training metrics on a held-out split, as plain Python floats (JSON-ready).

Every function takes arrays and, where a model is needed, already-jitted callables such as
`encode(x) -> z` or `reconstruct(x) -> x_hat in [0, 1]`, so this module does not depend on the training
code. The VAE's likelihood metrics are in `ae_jax.likelihood`.

Large arrays are processed `batch_size` examples at a time so memory stays bounded. Host-side sums
run in float64. Model calls go through `batching.map_batches` (fixed batch shape, the last batch
padded), so each jitted callable compiles once per call here. Randomness is drawn per example from
`jax.random.fold_in(key, example_index)`, so results do not depend on `batch_size`.
"""

from collections.abc import Callable
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np
from sklearn import linear_model
from sklearn import preprocessing

from ae_jax import batching
from ae_jax.losses import contractive
from ae_jax.losses import corruption

PSNR_MIN_MSE = 1e-10  # Per-image MSE floor in `psnr`: a perfect image scores 10*log10(max^2/1e-10).
GAUSSIAN_SIGMAS = (0.1, 0.3, 0.5)
MASKING_RATES = (0.1, 0.25, 0.4)


def _check_batch_size(batch_size: int) -> None:
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")


def _check_nonempty(name: str, x: np.ndarray | jax.Array) -> None:
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty batch with a leading example axis, got shape {x.shape}")


def _flat64(x: Any) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------------------------------
# Reconstruction quality.


def _as_array(x: Any) -> Any:
  """Keeps numpy and jax arrays as they are (sliced per batch later); converts lists."""
  return x if hasattr(x, "shape") and hasattr(x, "ndim") else np.asarray(x)


def _check_pair(x: Any, x_hat: Any) -> None:
  if x.shape != x_hat.shape:
    raise ValueError(f"x shape {x.shape} does not match x_hat shape {x_hat.shape}")
  _check_nonempty("x", x)


def _squared_error_per_example(x: Any, x_hat: Any, batch_size: int) -> np.ndarray:
  _check_batch_size(batch_size)
  slices = batching.slices(x.shape[0], batch_size)
  return np.concatenate([np.square(_flat64(x[s]) - _flat64(x_hat[s])).sum(axis=1) for s in slices])


def reconstruction_errors(x: ArrayLike, x_hat: ArrayLike, *, batch_size: int = 512) -> dict[str, float]:
  """{"mse": mean squared error per pixel, "sse": mean over images of the per-image sum of squares}.

  Both are reported because papers quote either; sse = mse * pixels per image.
  """
  x, x_hat = _as_array(x), _as_array(x_hat)
  _check_pair(x, x_hat)
  sse = _squared_error_per_example(x, x_hat, batch_size)
  pixels = math.prod(x.shape[1:])
  return {"mse": float(sse.sum() / (sse.size * pixels)), "sse": float(sse.mean())}


def fraction_variance_explained(x: ArrayLike, x_hat: ArrayLike, *, batch_size: int = 512) -> float:
  """1 - SSE / SST, SST the sum of squares of x around its per-pixel mean (1 perfect, 0 = mean image).

  Scale-free, so it compares models across data sets; negative when worse than the mean image.
  Raises ValueError when x has no variance (all examples identical).
  """
  x, x_hat = _as_array(x), _as_array(x_hat)
  _check_pair(x, x_hat)
  _check_batch_size(batch_size)
  n = x.shape[0]
  mean = sum(_flat64(x[s]).sum(axis=0) for s in batching.slices(n, batch_size)) / n
  sst = sum(float(np.square(_flat64(x[s]) - mean).sum()) for s in batching.slices(n, batch_size))
  if sst <= 0.0:
    raise ValueError("x has zero variance around its mean; fraction of variance explained is undefined")
  sse = float(_squared_error_per_example(x, x_hat, batch_size).sum())
  return 1.0 - sse / sst


def _psnr_per_image(clean: Any, other: Any, max_value: float, batch_size: int) -> np.ndarray:
  mse = _squared_error_per_example(clean, other, batch_size) / math.prod(clean.shape[1:])
  return 10.0 * np.log10(max_value**2 / np.maximum(mse, PSNR_MIN_MSE))


def psnr(clean: ArrayLike, other: ArrayLike, *, max_value: float = 1.0, batch_size: int = 512) -> float:
  """Peak signal-to-noise ratio in dB, 10 log10(max_value^2 / MSE), per image then averaged.

  Per-image averaging (not PSNR of the pooled MSE) is the usual convention in denoising papers.
  Each image's MSE is floored at `PSNR_MIN_MSE` (1e-10) so a perfect image scores a finite
  10*log10(max_value^2 * 1e10) dB (100 dB at max_value=1) and the mean stays finite.
  """
  clean, other = _as_array(clean), _as_array(other)
  _check_pair(clean, other)
  if max_value <= 0:
    raise ValueError(f"max_value must be positive, got {max_value}")
  return float(_psnr_per_image(clean, other, max_value, batch_size).mean())


def pca_baseline(
    train_x: ArrayLike, test_x: ArrayLike, *, num_components: int, batch_size: int = 512
) -> dict[str, float]:
  """Test {"mse", "sse"} of PCA with `num_components` fitted on flattened train_x: the linear AE optimum.

  A (linear) autoencoder with k latent units should beat this with k components. Fitted by an
  eigendecomposition of the float64 covariance, accumulated in batches (memory O(d^2)).
  `num_components` is clamped to min(n_train, d); 0 components reconstructs the train mean.
  """
  train_x, test_x = _as_array(train_x), _as_array(test_x)
  _check_nonempty("train_x", train_x)
  _check_nonempty("test_x", test_x)
  _check_batch_size(batch_size)
  if train_x.shape[1:] != test_x.shape[1:]:
    raise ValueError(f"train_x examples {train_x.shape[1:]} and test_x examples {test_x.shape[1:]} differ")
  if num_components < 0:
    raise ValueError(f"num_components must be non-negative, got {num_components}")
  n = train_x.shape[0]
  d = math.prod(train_x.shape[1:])
  k = min(num_components, n, d)
  mean = sum(_flat64(train_x[s]).sum(axis=0) for s in batching.slices(n, batch_size)) / n
  cov = np.zeros((d, d))
  for s in batching.slices(n, batch_size):
    centred = _flat64(train_x[s]) - mean
    cov += centred.T @ centred
  _, vectors = np.linalg.eigh(cov)  # Ascending eigenvalues.
  basis = vectors[:, d - k:]  # (d, k)
  sse = []
  for s in batching.slices(test_x.shape[0], batch_size):
    centred = _flat64(test_x[s]) - mean
    sse.append(np.square(centred - (centred @ basis) @ basis.T).sum(axis=1))
  sse = np.concatenate(sse)
  return {"mse": float(sse.sum() / (sse.size * d)), "sse": float(sse.mean())}


# --------------------------------------------------------------------------------------------------
# Representation quality.


def linear_probe(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    *,
    max_iter: int = 1000,
) -> float:
  """Test accuracy of a logistic regression on standardised codes: how linearly readable they are.

  StandardScaler is fitted on train only; lbfgs makes the fit deterministic. Features of any shape
  are flattened per example.
  """
  train_x, test_x = _flat64(train_features), _flat64(test_features)
  train_y, test_y = np.asarray(train_labels).reshape(-1), np.asarray(test_labels).reshape(-1)
  if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
    raise ValueError(
        f"features and labels disagree on example counts: train {train_x.shape[0]} vs {train_y.shape[0]}, "
        f"test {test_x.shape[0]} vs {test_y.shape[0]}")
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f"train features have {train_x.shape[1]} dims but test features have {test_x.shape[1]}")
  if np.unique(train_y).size < 2:
    raise ValueError("train_labels must contain at least two classes")
  scaler = preprocessing.StandardScaler().fit(train_x)
  classifier = linear_model.LogisticRegression(max_iter=max_iter)
  classifier.fit(scaler.transform(train_x), train_y)
  return float(classifier.score(scaler.transform(test_x), test_y))


@functools.lru_cache(maxsize=None)
def _jacobian_batch(radius: float):
  @jax.jit
  def batch_fn(encode, key, xb: jax.Array, indices: jax.Array) -> tuple[jax.Array, jax.Array]:
    frobenius_sq = contractive.penalty(encode, xb)  # Exact: jacrev when k < d, else jacfwd.
    directions = jax.vmap(lambda k: jax.random.normal(k, xb.shape[1:], xb.dtype))(batching.example_keys(key, indices))
    norms = jnp.sqrt(jnp.square(directions.reshape(xb.shape[0], -1)).sum(axis=1))
    delta = directions * (radius / norms).reshape(-1, *([1] * (xb.ndim - 1)))
    change = (encode(xb + delta) - encode(xb)).reshape(xb.shape[0], -1)
    return frobenius_sq, jnp.sqrt(jnp.square(change).sum(axis=1)) / radius
  return batch_fn


def jacobian_stats(
    encode: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    key: jax.Array,
    *,
    eps: float = 1e-3,
    batch_size: int = 128,
) -> dict[str, float]:
  """How contractive the encoder is around the data (the quantity a contractive AE penalises).

  - "jacobian_frobenius_sq": mean over x of ||dz/dx||_F^2, exact (`contractive.penalty`'s autodiff paths).
  - "latent_sensitivity": mean over x of ||z(x + delta) - z(x)|| / ||delta||, delta in a uniformly
    random direction (one per example) with ||delta|| = eps * sqrt(d), i.e. a per-pixel RMS change of
    eps. A finite-difference gain, so it also sees the local behaviour of non-smooth (ReLU) encoders;
    for a linear encoder it lies between the smallest and largest singular value of the map
    (and its mean square tends to ||J||_F^2 / d).
  The default batch is smaller than elsewhere because Jacobians take B*k*d floats.
  """
  x = jnp.asarray(x)
  _check_nonempty("x", x)
  if eps <= 0:
    raise ValueError(f"eps must be positive, got {eps}")
  radius = eps * math.sqrt(math.prod(x.shape[1:]))
  frobenius_sq, sensitivity = batching.map_batches(
      _jacobian_batch(radius), (x,), batch_size=batch_size, args=(batching.as_pytree(encode), key),
      with_indices=True, label="encoder Jacobians")
  return {
      "jacobian_frobenius_sq": float(frobenius_sq.mean()),
      "latent_sensitivity": float(sensitivity.mean()),
  }


def sparsity_stats(codes: ArrayLike, *, threshold: float = 1e-3) -> dict[str, float]:
  """How sparse the codes (N, k) are; a unit is "on" for an example when |z| > threshold.

  - "l0": mean number of units on per example; "l0_threshold": the threshold used.
  - "mean_activation": mean of z over units and examples (the rho-hat of a KL sparsity penalty);
    "mean_abs_activation": mean of |z| (the L1 penalty's quantity; differs for signed codes).
  - "dead_fraction": fraction of units never on for any example of `codes`.
  """
  z = _flat64(codes)
  _check_nonempty("codes", z)
  if threshold < 0:
    raise ValueError(f"threshold must be non-negative, got {threshold}")
  on = np.abs(z) > threshold
  return {
      "l0": float(on.sum(axis=1).mean()),
      "l0_threshold": float(threshold),
      "mean_activation": float(z.mean()),
      "mean_abs_activation": float(np.abs(z).mean()),
      "dead_fraction": float((~on.any(axis=0)).mean()),
  }


@functools.lru_cache(maxsize=None)
def _denoising_batch(settings: tuple[tuple[str, float], ...]):
  def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.square(a - b).reshape(a.shape[0], -1).mean(axis=1)

  @jax.jit
  def batch_fn(reconstruct, key, xb: jax.Array, indices: jax.Array) -> dict[str, jax.Array]:
    out = {"clean": mse(reconstruct(xb), xb)}
    for j, (kind, level) in enumerate(settings):
      keys = batching.example_keys(jax.random.fold_in(key, j), indices)
      noisy = jax.vmap(functools.partial(corruption.corrupt, kind=kind, level=level))(keys, xb)
      out[f"noisy/{kind}_{level:g}"] = mse(jnp.clip(noisy, 0.0, 1.0), xb)
      out[f"denoised/{kind}_{level:g}"] = mse(reconstruct(noisy), xb)
    return out
  return batch_fn


def denoising_stats(
    reconstruct: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    key: jax.Array,
    *,
    gaussian_sigmas: tuple[float, ...] = GAUSSIAN_SIGMAS,
    masking_rates: tuple[float, ...] = MASKING_RATES,
    batch_size: int = 512,
) -> dict[str, float]:
  """PSNR (dB, per image then averaged) of corrupted inputs and of their reconstructions vs clean x.

  For each corruption `name` in gaussian_<sigma>, masking_<rate>:
  - "psnr_noisy/<name>": PSNR of clip(x_tilde, 0, 1). Clipping is the free denoiser (clean pixels
    lie in [0, 1]), so the baseline is not inflated by out-of-range Gaussian noise.
  - "psnr_denoised/<name>": PSNR of reconstruct(x_tilde); the model sees the *unclipped* x_tilde,
    as in training (`corruption.gaussian` does not clip).
  - "psnr_gain/<name>": denoised - noisy, what the model adds beyond clipping.
  Plus "psnr_clean": PSNR of reconstruct(x) itself, the ceiling for the denoised values.
  Corruption `j` of example `i` uses fold_in(fold_in(key, j), i).
  """
  x = jnp.asarray(x)
  _check_nonempty("x", x)
  settings = tuple([("gaussian", s) for s in gaussian_sigmas] + [("masking", r) for r in masking_rates])
  names = [f"{kind}_{level:g}" for kind, level in settings]
  per_example = batching.map_batches(
      _denoising_batch(settings), (x,), batch_size=batch_size, args=(batching.as_pytree(reconstruct), key),
      with_indices=True, label="denoising PSNR")
  to_db = lambda m: float(np.mean(10.0 * np.log10(1.0 / np.maximum(m.astype(np.float64), PSNR_MIN_MSE))))
  stats = {"psnr_clean": to_db(per_example["clean"])}
  for name in names:
    noisy, denoised = to_db(per_example[f"noisy/{name}"]), to_db(per_example[f"denoised/{name}"])
    stats[f"psnr_noisy/{name}"] = noisy
    stats[f"psnr_denoised/{name}"] = denoised
    stats[f"psnr_gain/{name}"] = denoised - noisy
  return stats
