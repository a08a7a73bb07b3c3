"""Checks a run's config up front, so a bad value fails in one line before any work starts.

The keys every run reads are checked here; a family's own keys by its registry entry
(`families.Family.validate`).
"""

from ae_jax import activations
from ae_jax import checks
from ae_jax import data
from ae_jax import errors
from ae_jax import families
from ae_jax import feeds
from ae_jax import hparams
from ae_jax import models
from ae_jax import setpoint
from ae_jax import step
from ae_jax import user_terms
from ae_jax.losses import reconstruction

ARCHITECTURES = ("mlp", "conv")


ConfigError = errors.ConfigError


_choice = checks.choice
_positive = checks.positive


def validate(config) -> None:
  """Raises ConfigError naming the first bad key."""
  check_finite(config)
  _choice(config, "family", families.NAMES)
  _choice(config, "architecture", ARCHITECTURES)
  _choice(config, "optimizer", step.OPTIMIZERS)
  _choice(config, "member_vectorize", step.MEMBER_VECTORIZE)
  _choice(config, "reconstruction", reconstruction.KINDS)
  _choice(config, "binarize", data.BINARIZE)
  _choice(config, "data_placement", ("auto", "device", "stream"))
  _choice(config, "loop", feeds.LOOPS)
  _choice(config, "activation", activations.NAMES)
  _choice(config, "code_activation", activations.NAMES)
  _choice(config, "kernel_init", models.KERNEL_INITS)
  _choice(config, "init_output_bias", models.OUTPUT_BIASES)
  for key in ("batch_size", "num_steps", "latent_dim", "log_every", "eval_every", "checkpoint_every",
              "probe_max_iter"):
    _positive(config, key)
  _positive(config, "learning_rate", float)
  eval_groups(config)
  if not 0 <= config.validation_fraction < 1:
    raise ConfigError(f"--config.validation_fraction={config.validation_fraction} must be in [0, 1) "
                      "(0 = no validation split; 0.1 carves 10% of the training examples)")
  for key in ("num_epochs", "probe_examples", "iwae_samples"):
    if config[key] < 0:
      raise ConfigError(f"--config.{key}={config[key]} must be >= 0 (0 = {_ZERO_MEANS[key]})")
  _check_optimizer(config)
  if not isinstance(config.seed, int):
    raise ConfigError(f"--config.seed={config.seed!r} must be an integer")
  widths = config.widths
  if isinstance(widths, int):
    widths = (widths,)
  if not all(isinstance(w, int) and w > 0 for w in widths):
    raise ConfigError(f"--config.widths={config.widths!r} must be a tuple of positive ints, e.g. '(256, 64)'")
  if config.architecture == "conv" and not widths:
    raise ConfigError("--config.architecture=conv needs at least one conv width, e.g. --config.widths='(32, 64)'")
  if config.eval_every % config.log_every:
    raise ConfigError(f"--config.eval_every={config.eval_every} must be a multiple of "
                      f"--config.log_every={config.log_every}")
  if config.checkpoint_every % config.log_every:
    raise ConfigError(f"--config.checkpoint_every={config.checkpoint_every} must be a multiple of "
                      f"--config.log_every={config.log_every}")
  if config.num_pictures < 0:
    raise ConfigError(f"--config.num_pictures={config.num_pictures!r} must be >= 0")
  families.get(config.family).validate(config)
  try:
    setpoint.check(config, families.get(config.family).setpoints, config.family)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  try:
    user_terms.extra_terms(config.extra_terms)
    hparams.parse_extra_terms(config.extra_terms)
  except ValueError as e:
    raise ConfigError(f"--config.extra_terms: {e}") from None


_ZERO_MEANS = {"num_epochs": "train num_steps", "probe_examples": "the whole training split",
               "iwae_samples": "no log-likelihood estimate"}

# The end-of-run evaluation's optional groups (reconstruction errors and a VAE's ELBO terms always run).
EVAL_GROUPS = ("pca", "probe", "jacobian", "sparsity", "denoising", "likelihood")
EVAL_PRESETS = {"full": EVAL_GROUPS,  # Every metric; what the README tables and the papers' numbers use.
                "quick": ("sparsity",)}  # One pass over the test split: seconds, whatever the model.


def eval_groups(config) -> frozenset[str]:
  """The groups `config.evaluate` asks for: a preset name or a comma-separated list of groups."""
  value = str(config.evaluate).strip()
  if value in EVAL_PRESETS:
    return frozenset(EVAL_PRESETS[value])
  groups = [g.strip() for g in value.split(",") if g.strip()]
  unknown = [g for g in groups if g not in EVAL_GROUPS]
  if unknown or not value:
    raise ConfigError(f"--config.evaluate={config.evaluate!r}: use {' or '.join(EVAL_PRESETS)}, or a comma-separated "
                      f"list of {', '.join(EVAL_GROUPS)} (unknown: {', '.join(unknown) or 'empty'})")
  return frozenset(groups)


def _check_optimizer(config) -> None:
  """The optimizer's numbers and the learning-rate schedule's keys."""
  _choice(config, "lr_schedule", step.LR_SCHEDULES)
  for key in ("b1", "b2"):
    if not 0 <= config[key] < 1:
      raise ConfigError(f"--config.{key}={config[key]} must be in [0, 1)")
  _positive(config, "eps", float)
  for key in ("grad_clip", "weight_decay", "warmup_steps", "final_lr_fraction"):
    if config[key] < 0:
      raise ConfigError(f"--config.{key}={config[key]} must be >= 0" + (" (0 = no clipping)" if key == "grad_clip"
                                                                          else ""))
  schedule = config.lr_schedule
  if schedule == "warmup_cosine" and config.final_lr_fraction > 1:
    raise ConfigError(f"--config.final_lr_fraction={config.final_lr_fraction} must be in [0, 1]")
  if schedule == "exponential":
    if config.decay_rate <= 0:
      raise ConfigError(f"--config.decay_rate={config.decay_rate} must be positive (0.1: a tenth per decay_steps)")
    if config.decay_steps <= 0:
      raise ConfigError(f"--config.decay_steps={config.decay_steps} must be positive")
  boundaries, scales = config.boundaries, config.scales
  if not isinstance(boundaries, (tuple, list)) or not all(
      isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in boundaries) or list(boundaries) != sorted(
          set(boundaries)):
    raise ConfigError(f"--config.boundaries={boundaries!r} must be increasing positive step numbers, e.g. "
                      "'(2000, 4000)'")
  if not isinstance(scales, (tuple, list)) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in scales):
    raise ConfigError(f"--config.scales={scales!r} must be non-negative numbers, e.g. '(0.1, 0.1)'")
  if schedule == "piecewise" and (not boundaries or len(scales) != len(boundaries)):
    raise ConfigError(f"--config.lr_schedule=piecewise needs one scale per boundary: got {len(boundaries)} "
                      f"boundaries and {len(scales)} scales, e.g. --config.boundaries='(2000, 4000)' "
                      "--config.scales='(0.1, 0.1)'")


def resolve_steps(config, num_train: int) -> int:
  """The number of steps a run trains: num_steps, or num_epochs * (num_train // batch_size) if num_epochs.

  The one place epochs become steps; it needs the data set's size, so it runs after loading the data.
  """
  if not config.num_epochs:
    return config.num_steps
  return config.num_epochs * steps_per_epoch(config, num_train)


def steps_per_epoch(config, num_train: int) -> int:
  """Full batches per pass over the training split (at least 1; a batch larger than the split fails
  elsewhere with its own message)."""
  return max(1, num_train // config.batch_size)


def resolved(config, num_train: int):
  """A copy of `config` whose num_steps is `resolve_steps(config, num_train)` (num_epochs kept, as asked)."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.num_steps = resolve_steps(config, num_train)
  return out


def check_finite(config) -> None:
  """Raises ConfigError for a NaN or infinite float anywhere in `config` (in tuples and nested dicts
  too), and for a non-number in a key the checks above compare as a number.

  NaN fails every comparison, so `value <= 0` lets it through to a NaN loss; a string or None (which
  a config file can set) would raise TypeError in a comparison, or go unchecked for other families.
  """
  import math  # pylint: disable=g-import-not-at-top
  import numbers  # pylint: disable=g-import-not-at-top

  float_keys = hparams.FLOAT_KEYS + ("validation_fraction",)
  int_keys = ("batch_size", "num_steps", "latent_dim", "log_every", "eval_every", "checkpoint_every",
              "iwae_samples", "num_pictures", "topk", "auxk", "dead_after", "seed", "num_epochs", "vae_samples",
              "probe_examples", "probe_max_iter")

  def is_float(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)

  def walk(prefix: str, mapping) -> None:
    for key, value in mapping.items():
      name = f"{prefix}{key}"
      if hasattr(value, "items"):
        walk(f"{name}.", value)
      elif is_float(value) and not math.isfinite(value):
        raise ConfigError(f"--config.{name}={value} must be a finite number")
      elif isinstance(value, (tuple, list)) and any(is_float(v) and not math.isfinite(v) for v in value):
        raise ConfigError(f"--config.{name}={tuple(value)} must hold only finite numbers")

  walk("", config)
  for key in float_keys:
    if key in config and (isinstance(config[key], bool) or not isinstance(config[key], numbers.Real)):
      raise ConfigError(f"--config.{key}={config[key]!r} must be a number")
  for key in int_keys:
    if key in config and (isinstance(config[key], bool) or not isinstance(config[key], numbers.Integral)):
      raise ConfigError(f"--config.{key}={config[key]!r} must be an integer")
