"""The end-of-run evaluation as a list of evaluators, one per metric group, that the config selects.

Each evaluator is `fn(ctx) -> {metric: float}` over one `Context` (the config, the model's jitted
callables, the dataset, keys, the cache shared by a sweep's members, the test codes), so adding a group
is adding one function and one registry entry. An evaluator returns {} where its metrics do not apply
(the probe without labels, the ELBO terms for a deterministic AE). `EVALUATORS` holds them in the order
their metrics are reported; those in `ALWAYS` run for every config, the others when
`config_lib.eval_groups(config)` names them (as big_vision's `config.evals`). What differs between
families comes from their registry entry (`families.get`), never from a test on a family's name.
"""

from collections.abc import Callable, Mapping
import dataclasses
import functools
import math
from typing import Any
import warnings

import flax.linen as nn
import jax
import numpy as np
from sklearn import exceptions as sklearn_exceptions
import threadpoolctl

from ae_jax import batching
from ae_jax import data
from ae_jax import evaluation
from ae_jax import families
from ae_jax import likelihood
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity

PROBE_SUBSET_SEED = 0  # config.probe_examples > 0: the fixed random subset of the training split.
PROBE_BINARIZE_SEED = 1  # binarize=dynamic: the one Bernoulli draw of the probe's training images.
BATCH_SIZE = 512  # Examples per model call for codes, reconstructions, denoising and ELBO terms.
MAX_BATCH_FLOATS = 2**23  # Jacobians and IWAE samples per call are capped at ~32 MB of float32.
IWAE_CHUNK = 100  # IWAE samples drawn per scan step.
L0_THRESHOLD, L0_THRESHOLD_BOUNDED = sparsity.L0_THRESHOLD, sparsity.L0_THRESHOLD_BOUNDED
# The evaluation's key is split once into these, in this order (a new name appended moves every number).
KEY_NAMES = ("jacobian", "denoising", "elbo", "likelihood")


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


class Apply:
  """The model's encode and decode as the callables `evaluation` and `likelihood` expect.

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


@dataclasses.dataclass(frozen=True)
class Context:
  """What the evaluators read; built once per evaluated model by `context`."""

  config: Any
  family: families.Family  # The config's registry entry: `.variational`, `.reported_hparams`.
  apply: Apply
  ds: data.Dataset
  keys: Mapping[str, jax.Array]  # KEY_NAMES -> one key each.
  shared: dict[Any, Any]  # Model-independent results (PCA, the pixel probe), kept across a sweep's members.
  test_codes: np.ndarray  # The codes of ds.test_images (posterior means for a VAE), computed once.


def codes(apply: Apply, x: np.ndarray) -> np.ndarray:
  """The deterministic codes of x, BATCH_SIZE examples per call."""
  return batching.map_batches(apply.code, (x,), batch_size=BATCH_SIZE, label="codes")


def context(config, model: nn.Module, params: Any, ds: data.Dataset, key: jax.Array, *,
            shared: dict[Any, Any] | None = None) -> Context:
  """The evaluators' context for a trained model; `shared` (kept, not copied) caches across calls."""
  family = families.get(config.family)
  apply = Apply(model, params, variational=family.variational)
  keys = dict(zip(KEY_NAMES, jax.random.split(key, len(KEY_NAMES))))
  return Context(config, family, apply, ds, keys, {} if shared is None else shared, codes(apply, ds.test_images))


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


def l0_threshold(config) -> float:
  """When a code unit counts as on: a sigmoid unit of a KL-sparse AE idles near rho, above 1e-3."""
  return sparsity.l0_threshold(config.code_activation, variational=families.get(config.family).variational)


# --------------------------------------------------------------------------------------------------
# The evaluators, in the order their metrics are reported.


def reconstruction_metrics(ctx: Context) -> dict[str, float]:
  """mse, sse and fraction_variance_explained of sigmoid(decode(code(x))) on the test split."""
  test_x = ctx.ds.test_images
  recon = batching.map_batches(ctx.apply.reconstruct, (test_x,), batch_size=BATCH_SIZE, label="reconstructions")
  metrics = evaluation.reconstruction_errors(test_x, recon)
  try:
    metrics["fraction_variance_explained"] = evaluation.fraction_variance_explained(test_x, recon)
  except ValueError:  # A test split of identical images has no variance to explain.
    metrics["fraction_variance_explained"] = float("nan")
  return metrics


def pca_metrics(ctx: Context) -> dict[str, float]:
  """The linear baseline with config.latent_dim components, fitted once per latent_dim in `shared`."""
  cache_key = ("pca", ctx.config.latent_dim)
  if cache_key not in ctx.shared:
    ctx.shared[cache_key] = evaluation.pca_baseline(ctx.ds.train_images, ctx.ds.test_images,
                                                    num_components=ctx.config.latent_dim)
  pca = ctx.shared[cache_key]
  return {"pca_mse": pca["mse"], "pca_sse": pca["sse"]}


def probe_metrics(ctx: Context) -> dict[str, float]:
  """Linear-probe accuracy of the codes and (shared) of the raw pixels; {} without labels."""
  if not _has_labels(ctx.ds):
    return {}
  config, ds = ctx.config, ctx.ds
  probe_x, probe_y = probe_train_split(config, ds)
  fit = functools.partial(probe, max_iter=config.probe_max_iter)
  metrics = {"probe_accuracy": fit(codes(ctx.apply, probe_x), probe_y, ctx.test_codes, ds.test_labels)}
  pixels_key = ("probe_pixels", config.probe_examples, config.probe_max_iter, config.binarize)
  if pixels_key not in ctx.shared:
    ctx.shared[pixels_key] = fit(probe_x, probe_y, ds.test_images, ds.test_labels)
  metrics["probe_accuracy_pixels"] = ctx.shared[pixels_key]
  return metrics


def jacobian_metrics(ctx: Context) -> dict[str, float]:
  """`evaluation.jacobian_stats` of the code, in batches whose Jacobians stay under MAX_BATCH_FLOATS."""
  test_x = ctx.ds.test_images
  k, d = ctx.test_codes.reshape(len(ctx.test_codes), -1).shape[1], math.prod(test_x.shape[1:])
  batch = max(1, min(BATCH_SIZE, MAX_BATCH_FLOATS // (k * d)))  # Its Jacobians hold batch * k * d floats.
  return evaluation.jacobian_stats(ctx.apply.code, test_x, ctx.keys["jacobian"], batch_size=batch)


def sparsity_metrics(ctx: Context) -> dict[str, float]:
  """Code sparsity, then the family's reported hyperparameters (the KL-sparse AE's target rho).

  Not for variational families: their codes (posterior means) are never exactly 0, so L0 would count
  every unit; `active_units` says it there.
  """
  metrics = {} if ctx.family.variational else evaluation.sparsity_stats(
      ctx.test_codes, threshold=l0_threshold(ctx.config))
  return {**metrics, **ctx.family.reported_hparams(ctx.config)}


def denoising_metrics(ctx: Context) -> dict[str, float]:
  """`evaluation.denoising_stats`: PSNR of corrupted test images and of their reconstructions."""
  return evaluation.denoising_stats(ctx.apply.reconstruct, ctx.ds.test_images, ctx.keys["denoising"],
                                    batch_size=BATCH_SIZE)


def elbo_metrics(ctx: Context) -> dict[str, float]:
  """A variational family's one-sample ELBO terms under `reconstruction.likelihood`; {} otherwise."""
  if not ctx.family.variational:
    return {}
  return likelihood.vae_terms(ctx.apply.posterior, ctx.apply.decode_logits, ctx.ds.test_images, ctx.keys["elbo"],
                              likelihood=reconstruction.likelihood(ctx.config.reconstruction), batch_size=BATCH_SIZE)


def likelihood_metrics(ctx: Context) -> dict[str, float]:
  """A variational family's mean IWAE estimate of log p(x) with config.iwae_samples (0: skipped)."""
  samples = ctx.config.iwae_samples
  if not ctx.family.variational or samples <= 0:
    return {}
  test_x = ctx.ds.test_images
  chunk = min(IWAE_CHUNK, samples)
  batch = max(1, min(BATCH_SIZE, MAX_BATCH_FLOATS // (chunk * math.prod(test_x.shape[1:]))))  # chunk * batch codes.
  log_px = likelihood.iwae_log_likelihood(
      ctx.apply.posterior, ctx.apply.decode_logits, test_x, ctx.keys["likelihood"], num_samples=samples,
      chunk_size=chunk, likelihood=reconstruction.likelihood(ctx.config.reconstruction), batch_size=batch)
  return {"log_likelihood": float(log_px.mean())}


def active_units_metrics(ctx: Context) -> dict[str, float]:
  """A variational family's active units (posterior means that vary with x); {} otherwise."""
  return {"active_units": float(likelihood.active_units(ctx.test_codes))} if ctx.family.variational else {}


Evaluator = Callable[[Context], dict[str, float]]
EVALUATORS: dict[str, Evaluator] = {  # Name -> evaluator, in report order.
    "reconstruction": reconstruction_metrics,
    "pca": pca_metrics,
    "probe": probe_metrics,
    "jacobian": jacobian_metrics,
    "sparsity": sparsity_metrics,
    "denoising": denoising_metrics,
    "elbo": elbo_metrics,
    "likelihood": likelihood_metrics,
    "active_units": active_units_metrics,
}
ALWAYS = ("reconstruction", "elbo", "active_units")  # The rest are `config_lib.EVAL_GROUPS`.


def selected(groups: frozenset[str] | set[str]) -> list[str]:
  """The evaluators that run for `groups` (`config_lib.eval_groups`), in report order."""
  return [name for name in EVALUATORS if name in ALWAYS or name in groups]


def run(ctx: Context, groups: frozenset[str] | set[str]) -> dict[str, float]:
  """The merged metrics of the evaluators `selected(groups)` picks."""
  metrics = {}
  for name in selected(groups):
    metrics.update(EVALUATORS[name](ctx))
  return metrics
