"""What a researcher sees at the end of a run: test-split metrics, pictures, and a printed table.

`evaluate_model` computes the same metrics for every family (plus the VAE's likelihoods), so runs of
different families can be compared row by row; `save_pictures` writes the PNGs; `format_table`
prints the metrics grouped by what they measure. The metric definitions live in `ae_jax.evaluation`
and the drawing in `ae_jax.pictures`; this module only wires a trained model into them.
"""

from collections.abc import Callable, Sequence
import functools
import math
import os
from typing import Any
import warnings

import flax.linen as nn
import jax
import numpy as np
from sklearn import exceptions as sklearn_exceptions
import threadpoolctl

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import evaluation
from ae_jax import families
from ae_jax import pictures

PROBE_SUBSET_SEED = 0  # config.probe_examples > 0: the fixed random subset of the training split.
PROBE_BINARIZE_SEED = 1  # binarize=dynamic: the one Bernoulli draw of the probe's training images.
SPARSITY_METRICS = ("l0", "l0_threshold", "mean_activation", "mean_abs_activation", "dead_fraction")
BATCH_SIZE = 512  # Examples per model call for codes, reconstructions, denoising and ELBO terms.
MAX_BATCH_FLOATS = 2**23  # Jacobians and IWAE samples per call are capped at ~32 MB of float32.
IWAE_CHUNK = 100  # IWAE samples drawn per scan step.
L0_THRESHOLD = 1e-3  # A code unit is "on" above this (ReLU and TopK codes are exactly 0 when off)...
L0_THRESHOLD_BOUNDED = 0.1  # ...or above 10% of full scale for sigmoid and tanh codes, never exactly 0.
DISPLAY_MASKING = 0.25  # The corruptions shown in denoising.png.
DISPLAY_SIGMA = 0.3
INTERPOLATION_STEPS = 8  # Decoded points per interpolation row, endpoints included.
MAX_INTERPOLATION_ROWS = 6

# Groups of `format_table`, in order: (title, predicate on a metric name).
_GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("reconstruction", lambda k: k in ("mse", "sse", "fraction_variance_explained")),
    ("baselines", lambda k: k.startswith("pca_")),
    ("probe", lambda k: k.startswith("probe_")),
    ("jacobian", lambda k: k in ("jacobian_frobenius_sq", "latent_sensitivity")),
    ("sparsity", lambda k: k in ("l0", "l0_threshold", "mean_activation", "mean_abs_activation",
                                 "dead_fraction", "rho")),
    ("denoising", lambda k: k.startswith("psnr")),
    ("vae", lambda k: k in ("negative_elbo", "elbo_reconstruction", "elbo_kl", "log_likelihood",
                            "active_units")),
)


@functools.lru_cache(maxsize=32)
def _methods(model: nn.Module, variational: bool) -> dict[str, Callable[..., Any]]:
  """`fn(params, x)` for each of the model's uses, jitted once per model (not per trained params)."""

  def posterior(params, x):
    return model.apply({"params": params}, x, method="encode")

  def code(params, x):  # The deterministic code: the encoder output, the posterior mean for a VAE.
    out = posterior(params, x)
    return out[0] if variational else out

  def decode_logits(params, z):
    return model.apply({"params": params}, z, method="decode")

  def reconstruct(params, x):  # sigmoid(decode(code(x))) in [0, 1]: the decoder's mean for every kind.
    return jax.nn.sigmoid(decode_logits(params, code(params, x)))

  return {fn.__name__: jax.jit(fn) for fn in (posterior, code, decode_logits, reconstruct)}


class _Apply:
  """The model's encode and decode as the callables `evaluation` expects.

  Each is a `jax.tree_util.Partial` of a function jitted once per model, with the params as its
  pytree leaves: passed into evaluation's jitted functions they are arguments, not constants, so the
  members of a sweep (same model, other params) share every compiled evaluation program.
  """

  def __init__(self, model: nn.Module, params: Any, *, variational: bool):
    # On the host, so calls run on one device: params replicated over a mesh would repeat the work.
    params = jax.device_get(params)
    methods = _methods(model, variational)
    self.posterior = jax.tree_util.Partial(methods["posterior"], params)
    self.code = jax.tree_util.Partial(methods["code"], params)
    self.decode_logits = jax.tree_util.Partial(methods["decode_logits"], params)
    self.reconstruct = jax.tree_util.Partial(methods["reconstruct"], params)


def _in_batches(fn: Callable[[jax.Array], jax.Array], x: np.ndarray, *, batch_size: int = BATCH_SIZE
                ) -> np.ndarray:
  """fn over fixed-size batches (the last one padded) so it compiles once; results on the host."""
  size = min(batch_size, len(x))
  out = []
  for start in range(0, len(x), size):
    batch = x[start:start + size]
    real = len(batch)
    if real < size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], size - real, axis=0)])
    out.append(np.asarray(fn(batch))[:real])
  return np.concatenate(out)


def _has_labels(ds: data.Dataset) -> bool:
  """Probe only with real labels: none missing (-1) and at least two classes to tell apart."""
  return bool(ds.train_labels.min() >= 0 and ds.test_labels.min() >= 0
              and np.unique(ds.train_labels).size >= 2)


def probe_subset(num_train: int, num_examples: int = 0) -> np.ndarray:
  """Indices of the train examples the probe fits on: all (num_examples 0 or >= num_train), else
  `num_examples` of them drawn with a fixed seed (the same subset in every run)."""
  if not num_examples or num_train <= num_examples:
    return np.arange(num_train)
  return np.sort(np.random.default_rng(PROBE_SUBSET_SEED).choice(num_train, num_examples, replace=False))


def probe_train_split(config, ds: data.Dataset) -> tuple[np.ndarray, np.ndarray]:
  """The training images and labels the probe fits on, preprocessed as the test split is.

  Under binarize=dynamic the training images stay grey (the step resamples them) while the test
  images were binarized once by `data.load`; the probe's training images are binarized once here
  too (a fixed seed), so the probe is fitted and scored on inputs of the same kind.
  """
  subset = probe_subset(len(ds.train_images), config.probe_examples)
  images = ds.train_images[subset]
  if config.binarize == "dynamic":
    images = data.bernoulli_sample(images, seed=PROBE_BINARIZE_SEED)
  return images, ds.train_labels[subset]


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
          max_iter: int) -> float:
  """`evaluation.linear_probe` with `max_iter` lbfgs iterations; a cap reached is deliberate (the
  config asked for it), so its warning is muted.

  BLAS and OpenMP run single-threaded here: on small problems their threads cost 100x the work on a
  busy machine (digits pixels: 4 s instead of 0.03 s).
  """
  with warnings.catch_warnings(), threadpoolctl.threadpool_limits(limits=1):
    warnings.simplefilter("ignore", sklearn_exceptions.ConvergenceWarning)
    return evaluation.linear_probe(train_x, train_y, test_x, test_y, max_iter=max_iter)


def likelihood(config) -> str:
  """The p(x|z) of config.reconstruction for IWAE and ELBO terms: 'squared_error' maps to 'gaussian'.

  Squared error is the unit-variance Gaussian NLL up to a factor 1/2 and a constant, so the VAE's
  reported ELBO and log-likelihood are those of that Gaussian (nats, constants included).
  """
  return "bernoulli" if config.reconstruction == "bernoulli" else "gaussian"


def l0_threshold(config) -> float:
  """When a code unit counts as on: a sigmoid unit of a KL-sparse AE idles near rho, above 1e-3."""
  bounded = not families.get(config.family).variational and config.code_activation in ("sigmoid", "tanh")
  return L0_THRESHOLD_BOUNDED if bounded else L0_THRESHOLD


def evaluate_model(config, model: nn.Module, params: Any, ds: data.Dataset, key: jax.Array, *,
                   shared: dict[Any, Any] | None = None) -> dict[str, float]:
  """Test-split metrics of a trained model, the same keys for every family where they apply (JSON-ready
  floats).

  `shared` caches what does not depend on the model (the PCA baseline, the pixel probe) across the
  members of a sweep that evaluate on the same `ds`. `config.evaluate` picks the optional groups
  (`config_lib.eval_groups`); the list below names each metric's group.

  - "mse", "sse", "fraction_variance_explained": reconstructions sigmoid(decode(code(x))).
  - pca: "pca_mse", "pca_sse": PCA with config.latent_dim components fitted on train (clamped to the
    pixel count), the linear baseline.
  - probe: "probe_accuracy" (codes) and "probe_accuracy_pixels" (raw pixels): logistic regression fitted on
    train, scored on test; codes are the encoder output (the posterior mean for a VAE). Fitted on the
    whole training split, or on config.probe_examples of it (a fixed random subset), with at most
    config.probe_max_iter lbfgs steps, on training images preprocessed as the test images are
    (`probe_train_split`). Omitted when labels are missing (-1).
  - jacobian: "jacobian_frobenius_sq", "latent_sensitivity": how the code reacts to the input.
  - sparsity: "l0", "l0_threshold", "mean_activation", "mean_abs_activation", "dead_fraction": code sparsity
    (a unit is on when |z| > `l0_threshold(config)`); the sparse family with KL sparsity adds its
    target "rho". Not for variational families, whose codes (posterior means) are never exactly 0:
    their L0 would read as "every unit on" beside few active units; "active_units" says it there.
  - denoising: "psnr_*": `evaluation.denoising_stats` (Gaussian 0.1/0.3/0.5, masking 10/25/40%).
  - VAE only: "negative_elbo", "elbo_reconstruction", "elbo_kl" (beta = 1) and "active_units"; with
    likelihood and config.iwae_samples > 0, "log_likelihood" (the mean IWAE estimate with that many
    samples), under `likelihood(config)`.
  """
  vae = families.get(config.family).variational
  groups = config_lib.eval_groups(config)
  apply = _Apply(model, params, variational=vae)
  jacobian_key, denoising_key, elbo_key, iwae_key = jax.random.split(key, 4)
  train_x, test_x = ds.train_images, ds.test_images
  d = math.prod(test_x.shape[1:])

  test_codes = _in_batches(apply.code, test_x)
  recon = _in_batches(apply.reconstruct, test_x)
  metrics = evaluation.reconstruction_errors(test_x, recon)
  try:
    metrics["fraction_variance_explained"] = evaluation.fraction_variance_explained(test_x, recon)
  except ValueError:  # A test split of identical images has no variance to explain.
    metrics["fraction_variance_explained"] = float("nan")
  shared = {} if shared is None else shared
  if "pca" in groups:
    if ("pca", config.latent_dim) not in shared:
      shared["pca", config.latent_dim] = evaluation.pca_baseline(train_x, test_x, num_components=config.latent_dim)
    pca = shared["pca", config.latent_dim]
    metrics.update(pca_mse=pca["mse"], pca_sse=pca["sse"])

  if "probe" in groups and _has_labels(ds):
    probe_x, probe_y = probe_train_split(config, ds)
    fit = functools.partial(probe, max_iter=config.probe_max_iter)
    metrics["probe_accuracy"] = fit(_in_batches(apply.code, probe_x), probe_y, test_codes, ds.test_labels)
    pixels_key = ("probe_pixels", config.probe_examples, config.probe_max_iter, config.binarize)
    if pixels_key not in shared:
      shared[pixels_key] = fit(probe_x, probe_y, test_x, ds.test_labels)
    metrics["probe_accuracy_pixels"] = shared[pixels_key]

  if "jacobian" in groups:
    k = test_codes.reshape(len(test_codes), -1).shape[1]
    batch = max(1, min(BATCH_SIZE, MAX_BATCH_FLOATS // (k * d)))  # Its Jacobians hold batch * k * d floats.
    metrics.update(evaluation.jacobian_stats(apply.code, test_x, jacobian_key, batch_size=batch))
  if "sparsity" in groups and not vae:  # A VAE's codes are unbounded posterior means: L0 counts them all; active_units applies.
    metrics.update(evaluation.sparsity_stats(test_codes, threshold=l0_threshold(config)))
  if "sparsity" in groups and config.family == "sparse" and config.sparsity == "kl":
    metrics["rho"] = float(config.rho)
  if "denoising" in groups:
    metrics.update(evaluation.denoising_stats(apply.reconstruct, test_x, denoising_key, batch_size=BATCH_SIZE))

  if vae:
    kind = likelihood(config)
    metrics.update(evaluation.vae_terms(apply.posterior, apply.decode_logits, test_x, elbo_key,
                                        likelihood=kind, batch_size=BATCH_SIZE))
    if "likelihood" in groups and config.iwae_samples > 0:
      chunk = min(IWAE_CHUNK, config.iwae_samples)
      batch = max(1, min(BATCH_SIZE, MAX_BATCH_FLOATS // (chunk * d)))  # The decoder sees chunk * batch codes.
      log_px = evaluation.iwae_log_likelihood(
          apply.posterior, apply.decode_logits, test_x, iwae_key, num_samples=config.iwae_samples,
          chunk_size=chunk, likelihood=kind, batch_size=batch)
      metrics["log_likelihood"] = float(log_px.mean())
    metrics["active_units"] = float(evaluation.active_units(test_codes))
  return metrics


def _display_rng(key: jax.Array) -> np.random.Generator:
  """Host randomness for pictures, seeded by the key's bits: compiling JAX's PRNG costs seconds on CPU."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def decoder_features(apply: _Apply, latent_dim: int) -> np.ndarray:
  """(k, ...) sigmoid(decode(e_i)) - sigmoid(decode(0)): what switching unit i fully on draws.

  Through the sigmoid, i.e. in pixel space: logit differences also show changes in pixels that stay
  saturated (the dark border of digits), which look like noise and dominate each tile's min-max
  scaling; on trained sparse AEs the pixel-space tiles show the strokes more clearly.
  A one-hot code of 1 is the largest activation of a sigmoid code.
  """
  codes = np.concatenate([np.eye(latent_dim, dtype=np.float32), np.zeros((1, latent_dim), np.float32)])
  pixels = np.asarray(jax.nn.sigmoid(apply.decode_logits(codes)), dtype=np.float64)
  return pixels[:-1] - pixels[-1:]


def curve_keys(history: Sequence[dict[str, Any]]) -> list[str]:
  """loss, test_loss, then each named term (loss_rec, loss_kl, ...) with its test_ twin."""
  present = set().union(*(row.keys() for row in history)) if history else set()
  terms = sorted(k for k in present if k.startswith("loss_"))
  keys = ["loss", "test_loss"] + [k for t in terms for k in (t, f"test_{t}")]
  return [k for k in keys if k in present]


def save_pictures(config, model: nn.Module, params: Any, ds: data.Dataset, workdir: str, key: jax.Array,
                  history: Sequence[dict[str, Any]]) -> dict[str, str]:
  """Writes the run's PNGs to `workdir` and returns {name: path}; nothing when num_pictures is 0.

  Every family: reconstructions.png (test originals over reconstructions), denoising.png (rows:
  clean, 25% masked, its reconstruction, Gaussian 0.3 noise clipped for display, its reconstruction;
  the model sees the unclipped input), latent_scatter.png (all test codes by label) and curves.png
  (losses from `history`). VAE: samples.png (prior samples) and interpolations.png (a test image,
  decoded straight-line steps between two posterior means, the other image). Sparse: filters.png
  (`decoder_features`). Only process 0 writes.
  """
  n = min(config.num_pictures, len(ds.test_images))
  if n == 0 or jax.process_index() > 0:
    return {}
  vae = families.get(config.family).variational
  apply = _Apply(model, params, variational=vae)
  rng = _display_rng(key)
  path = functools.partial(os.path.join, workdir)
  x = ds.test_images[:n]
  paths = {"reconstructions": pictures.save_rows(path("reconstructions.png"),
                                                 [x, np.asarray(apply.reconstruct(x))])}

  # The corruptions of `ae_jax.losses.corruption`, drawn on the host.
  masked = np.where(rng.random(x.shape) < DISPLAY_MASKING, 0.0, x).astype(x.dtype)
  noisy = (x + DISPLAY_SIGMA * rng.standard_normal(x.shape)).astype(x.dtype)
  paths["denoising"] = pictures.save_rows(path("denoising.png"), [
      x, masked, np.asarray(apply.reconstruct(masked)), np.clip(noisy, 0.0, 1.0),
      np.asarray(apply.reconstruct(noisy))])

  codes = _in_batches(apply.code, ds.test_images)
  labels = ds.test_labels if ds.test_labels.min() >= 0 else None
  paths["latent_scatter"] = pictures.save_latent_scatter(
      path("latent_scatter.png"), codes, labels, title=f"{config.family}: test codes")

  if vae:
    z = rng.standard_normal((n, config.latent_dim)).astype(np.float32)
    samples = np.asarray(jax.nn.sigmoid(apply.decode_logits(z)))
    paths["samples"] = pictures.save_rows(path("samples.png"), [samples])
    pairs = min(MAX_INTERPOLATION_ROWS, max(1, n // 2), len(ds.test_images) // 2)
    if pairs:
      ends = ds.test_images[:2 * pairs]
      means = np.asarray(apply.code(ends))
      rows = []
      for i in range(pairs):
        z_line = pictures.interpolate(means[2 * i], means[2 * i + 1], INTERPOLATION_STEPS).astype(np.float32)
        decoded = np.asarray(jax.nn.sigmoid(apply.decode_logits(z_line)))
        rows.append(np.concatenate([ends[2 * i:2 * i + 1], decoded, ends[2 * i + 1:2 * i + 2]]))
      paths["interpolations"] = pictures.save_rows(path("interpolations.png"), rows)

  if families.get(config.family).draws_filters:
    features = decoder_features(apply, config.latent_dim)
    paths["filters"] = pictures.save_filters(
        path("filters.png"), features.reshape(config.latent_dim, -1), ds.example_shape)

  paths["curves"] = pictures.save_curves(path("curves.png"), history, curve_keys(history),
                                         title=f"{config.family} on {ds.name}")
  return paths


def format_table(metrics: dict[str, float]) -> str:
  """The metrics as an aligned two-column table, grouped by what they measure (unknown keys last)."""
  groups: dict[str, list[str]] = {title: [] for title, _ in _GROUPS}
  groups["other"] = []
  for name in metrics:
    title = next((t for t, match in _GROUPS if match(name)), "other")
    groups[title].append(name)
  width = max((len(k) for k in metrics), default=0)
  lines = []
  for title, names in groups.items():
    if not names:
      continue
    lines.append(f"{title}:")
    lines.extend(f"  {name:<{width}}  {_format_value(metrics[name])}" for name in names)
  return "\n".join(lines)


def _format_value(value: float) -> str:
  value = float(value)
  if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
    return f"{int(value):>10d}"
  return f"{value:>10.4g}" if math.isfinite(value) else f"{value!s:>10}"
