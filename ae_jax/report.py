"""What a researcher sees at the end of a run: test-split metrics, pictures, and a printed table.

`evaluate_model` computes the same metrics for every family (plus the VAE's likelihoods), so runs of
different families can be compared row by row; `save_pictures` writes the PNGs; `format_table`
prints the metrics grouped by what they measure. The metrics come from the evaluators of
`ae_jax.evaluators` (one per group, selected by config.evaluate) and the drawing from `ae_jax.pictures`;
this module only wires a trained model into them.
"""

from collections.abc import Callable, Sequence
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import evaluators
from ae_jax import families
from ae_jax import pictures
from ae_jax import workdir as workdir_lib
from ae_jax.losses import corruption

SPARSITY_METRICS = ("l0", "l0_threshold", "mean_activation", "mean_abs_activation", "dead_fraction")
DISPLAY_MASKING = 0.25  # The corruptions shown in denoising.png.
DISPLAY_SIGMA = 0.3
INTERPOLATION_STEPS = 8  # Decoded points per interpolation row, endpoints included.
MAX_INTERPOLATION_ROWS = 6
# `useless`: most code units never fire; the reconstructions explain less of the test images' variance
# than this (the mean image explains 0); no posterior mean varies with its image (active_units).
MOST_DEAD = 0.5
MEAN_IMAGE_VARIANCE = 0.05

# Groups of `format_table`, in order: (title, predicate on a metric name).
_GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("reconstruction", lambda k: k in ("mse", "sse", "fraction_variance_explained")),
    ("baselines", lambda k: k.startswith("pca_")),
    ("probe", lambda k: k.startswith("probe_")),
    ("jacobian", lambda k: k in ("jacobian_frobenius_sq", "latent_sensitivity")),
    ("sparsity", lambda k: k in SPARSITY_METRICS + ("rho",)),
    ("denoising", lambda k: k.startswith("psnr")),
    ("vae", lambda k: k in ("negative_elbo", "elbo_reconstruction", "elbo_kl", "log_likelihood",
                            "active_units")),
)


def evaluate_model(config, model: nn.Module, params: Any, ds: data.Dataset, key: jax.Array, *,
                   shared: dict[Any, Any] | None = None) -> dict[str, float]:
  """Test-split metrics of a trained model, the same keys for every family where they apply (JSON-ready
  floats).

  `shared` caches what does not depend on the model (the PCA baseline, the pixel probe) across the
  members of a sweep that evaluate on the same `ds`. `config.evaluate` picks the optional groups
  (`config_lib.eval_groups`), each one evaluator of `evaluators.EVALUATORS`; the list below names each
  metric's group.

  - "mse", "sse", "fraction_variance_explained": reconstructions sigmoid(decode(code(x))).
  - pca: "pca_mse", "pca_sse": PCA with config.latent_dim components fitted on train (clamped to the
    pixel count), the linear baseline.
  - probe: "probe_accuracy" (codes) and "probe_accuracy_pixels" (raw pixels): logistic regression fitted on
    train, scored on test; codes are the encoder output (the posterior mean for a VAE). Fitted on the
    whole training split, or on config.probe_examples of it (a fixed random subset), with at most
    config.probe_max_iter lbfgs steps, on training images preprocessed as the test images are
    (`evaluators.probe_train_split`). Omitted when labels are missing (-1).
  - jacobian: "jacobian_frobenius_sq", "latent_sensitivity": how the code reacts to the input.
  - sparsity: "l0", "l0_threshold", "mean_activation", "mean_abs_activation", "dead_fraction": code sparsity
    (a unit is on when |z| > `evaluators.l0_threshold(config)`), then the family's `reported_hparams`
    (the KL-sparse AE's target "rho"). Not for variational families, whose codes (posterior means) are
    never exactly 0: their L0 would read as "every unit on" beside few active units; "active_units" says it.
  - denoising: "psnr_*": `evaluation.denoising_stats` (Gaussian 0.1/0.3/0.5, masking 10/25/40%).
  - VAE only: "negative_elbo", "elbo_reconstruction", "elbo_kl" (beta = 1) and "active_units"; with
    likelihood and config.iwae_samples > 0, "log_likelihood" (the mean IWAE estimate with that many
    samples), under `reconstruction.likelihood(config.reconstruction)`.
  """
  ctx = evaluators.context(config, model, params, ds, key, shared=shared)
  return evaluators.run(ctx, config_lib.eval_groups(config))


@jax.jit
def _display_corruptions(key: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """denoising.png's masked and noisy inputs, drawn by `ae_jax.losses.corruption` as training draws them.

  Jitted once here: XLA:CPU compiles it in about 1 s the first time per process and picture shape
  (about 60 ms from the CLI's persistent compilation cache); run op by op it took about 3 s.
  """
  masking_key, gaussian_key = jax.random.split(key)
  return (corruption.masking(masking_key, x, rate=DISPLAY_MASKING),
          corruption.gaussian(gaussian_key, x, sigma=DISPLAY_SIGMA))


def _display_rng(key: jax.Array) -> np.random.Generator:
  """Host randomness for the prior samples, seeded by the key's bits: one more JAX PRNG program would cost
  about a second of compiling on CPU."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def decoder_features(apply: evaluators.Apply, latent_dim: int) -> np.ndarray:
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
  the model sees the unclipped input; `_display_corruptions`), latent_scatter.png (all test codes by
  label) and curves.png (losses from `history`). VAE: samples.png (prior samples) and interpolations.png (a test image,
  decoded straight-line steps between two posterior means, the other image). Sparse: filters.png
  (`decoder_features`). Only process 0 writes.
  """
  n = min(config.num_pictures, len(ds.test_images))
  if n == 0 or jax.process_index() > 0:
    return {}
  vae = families.get(config.family).variational
  apply = evaluators.Apply(model, params, variational=vae)
  rng = _display_rng(key)
  path = functools.partial(workdir_lib.picture, workdir)
  x = ds.test_images[:n]
  paths = {"reconstructions": pictures.save_rows(path("reconstructions"),
                                                 [x, np.asarray(apply.reconstruct(x))])}

  masked, noisy = map(np.asarray, _display_corruptions(key, x))
  paths["denoising"] = pictures.save_rows(path("denoising"), [
      x, masked, np.asarray(apply.reconstruct(masked)), np.clip(noisy, 0.0, 1.0),
      np.asarray(apply.reconstruct(noisy))])

  codes = evaluators.codes(apply, ds.test_images)
  labels = ds.test_labels if ds.test_labels.min() >= 0 else None
  paths["latent_scatter"] = pictures.save_latent_scatter(
      path("latent_scatter"), codes, labels, title=f"{config.family}: test codes")

  if vae:
    z = rng.standard_normal((n, config.latent_dim)).astype(np.float32)
    samples = np.asarray(jax.nn.sigmoid(apply.decode_logits(z)))
    paths["samples"] = pictures.save_rows(path("samples"), [samples])
    pairs = min(MAX_INTERPOLATION_ROWS, max(1, n // 2), len(ds.test_images) // 2)
    if pairs:
      ends = ds.test_images[:2 * pairs]
      means = np.asarray(apply.code(ends))
      rows = []
      for i in range(pairs):
        z_line = pictures.interpolate(means[2 * i], means[2 * i + 1], INTERPOLATION_STEPS).astype(np.float32)
        decoded = np.asarray(jax.nn.sigmoid(apply.decode_logits(z_line)))
        rows.append(np.concatenate([ends[2 * i:2 * i + 1], decoded, ends[2 * i + 1:2 * i + 2]]))
      paths["interpolations"] = pictures.save_rows(path("interpolations"), rows)

  if families.get(config.family).draws_filters:
    features = decoder_features(apply, config.latent_dim)
    paths["filters"] = pictures.save_filters(
        path("filters"), features.reshape(config.latent_dim, -1), ds.example_shape)

  paths["curves"] = pictures.save_curves(path("curves"), history, curve_keys(history),
                                         title=f"{config.family} on {ds.name}")
  return paths


def useless(metrics: dict[str, float]) -> str | None:
  """One warning line when the evaluation says the model learnt nothing useful, else None: most code
  units dead, the posterior collapsed (no active units), or reconstructions no better than the mean image."""
  problems = []
  dead = metrics.get("dead_fraction", 0.0)
  if dead > MOST_DEAD:
    problems.append(f"{dead:.0%} of the code units never fire on the test split (dead_fraction; lower "
                    "--config.sparsity_weight)")
  if metrics.get("active_units", 1) == 0:
    problems.append("the posterior has collapsed: no active units, every code ignores its image (lower "
                    "--config.beta, or train longer)")
  explained = metrics.get("fraction_variance_explained", math.nan)
  if explained < MEAN_IMAGE_VARIANCE:  # False for NaN (a skipped or undefined metric).
    problems.append(f"the reconstructions explain {explained:.1%} of the test images' variance, no better than "
                    "the mean image (train longer, or lower the penalty weights)")
  return f"this model looks useless: {'; '.join(problems)}" if problems else None


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


def setpoint_lines(config, result: workdir_lib.Result) -> list[str]:
  """One line per target `config` sets: the target, what the test split measured, the verdict and the
  coefficient the controller ended at (README, "Set points")."""
  from ae_jax import setpoint  # pylint: disable=g-import-not-at-top

  lines = []
  for key in setpoint.active(config):
    point = families.get(config.family).setpoints[key]
    value = result.eval.get(point.metric, math.nan)
    coefficient = result.train.get(setpoint.COEFFICIENT, math.nan)
    verdict = setpoint.achieved(point, float(config[key]), value)
    lines.append(f"Set point {key}={config[key]:g}: test {point.metric} {value:.4g}, {verdict}; "
                 f"{point.coefficient} ended at {coefficient:.4g}")
  return lines + ([""] if lines else [])
