"""The five autoencoder families: one small named function each over the pure terms in `ae_jax.losses`,
and one registry (`FAMILIES`) that validation, models, evaluation, pictures, compare and benchmark read.

A family's objective is `objective(setup, params, x, keys, hp, state) -> (per-example loss, {named terms},
Forward, new state)`; `build` turns it into the loss the step differentiates,

    loss_fn(params, batch, keys, hp, state) -> (loss, ({"loss": ..., "loss_rec": ..., ...}, new state))

where `batch["image"]` is (B, H, W, C) in [0, 1], `keys` holds one PRNG key per example (so every draw
is independent of how the batch is split over devices) and `hp` is the hyperparameter pytree of
`ae_jax.hparams` (weights, beta, rho, noise level: data, never constants). `state` is the family's
training state besides the parameters (`init_state`: {} for most families; TopK's examples since each
unit last fired), read by the loss and returned updated, never differentiated; the train state carries
it from step to step as `TrainState.model_state`.

User terms: any function `term(forward: Forward) -> (B,)` can be added by import path, e.g.
`config.extra_terms = "my_pkg.terms:orthogonality=0.1"`; it is averaged, weighted by
`hp["weight/orthogonality"]`, added to the loss and reported as `loss_orthogonality`.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ae_jax import checks
from ae_jax import errors
from ae_jax import hparams
from ae_jax import models
from ae_jax import setpoint
from ae_jax import user_terms
from ae_jax.losses import contractive
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity
from ae_jax.losses import variational

State = dict[str, jax.Array]
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array, dict[str, jax.Array], State],
                  tuple[jax.Array, tuple[dict[str, jax.Array], State]]]
Term = user_terms.Term
VAE_OBJECTIVES = ("elbo", "iwae")  # config.vae_objective


@dataclasses.dataclass(frozen=True)
class Forward:
  """What a forward pass produced for one batch; user terms read what they need from it."""

  model: nn.Module
  params: Any
  x: jax.Array  # The clean batch.
  x_in: jax.Array  # What the encoder saw (corrupted for the denoising family).
  code: jax.Array  # The code (a posterior sample for the VAE).
  logits: jax.Array  # Decoder output for `code`.
  keys: jax.Array  # One PRNG key per example, unused by the built-in terms that consumed them.

  def encode(self, x: jax.Array) -> jax.Array:
    """The deterministic code of x (the posterior mean for a VAE), differentiable in params."""
    out = self.model.apply({"params": self.params}, x, method="encode")
    return out[0] if isinstance(out, tuple) else out


@dataclasses.dataclass(frozen=True)
class Setup:
  """What an objective needs besides its arguments: the model and the structure keys it reads."""

  model: nn.Module
  config: Any  # Structure keys only (kinds, paths); numbers come from `hp`.
  axis_name: str | None  # The data-parallel axis, for global batch statistics (KL sparsity, dead units).

  def apply(self, params, *args, **kwargs):
    return self.model.apply({"params": params}, *args, **kwargs)

  def reconstruction(self, logits: jax.Array, x: jax.Array) -> jax.Array:
    return reconstruction.from_logits(logits, x, kind=self.config.reconstruction)

  def autoencode(self, params, x, x_in, keys) -> tuple[Forward, dict[str, Any]]:
    """A deterministic AE's forward pass, with the intermediates it sowed (TopK's pre-codes)."""
    (code, logits), sown = self.apply(params, x_in, mutable=["intermediates"])
    return Forward(self.model, params, x, x_in, code, logits, keys), sown


Objective = Callable[[Setup, Any, jax.Array, jax.Array, dict[str, jax.Array], State],
                     tuple[jax.Array, dict[str, jax.Array], Forward, State]]


def _stream(keys: jax.Array, stream: int) -> jax.Array:
  """An independent key per example for a second use of the same per-example keys."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys, stream)


def init_state(config) -> State:
  """A member's family state at step 0 (`Family.init_state`; {} for most families), with the set-point
  controller's state when the config sets a target."""
  state = get(config.family).init_state(config)
  return {**state, **setpoint.init_state()} if setpoint.active(config) else state


def _no_state(config) -> State:
  del config
  return {}


def _no_checks(config) -> None:
  del config


def undercomplete(setup: Setup, params, x, keys, hp, state):
  """Reconstruction alone: the bottleneck is the constraint."""
  del hp
  forward, _ = setup.autoencode(params, x, x, keys)
  rec = setup.reconstruction(forward.logits, x)
  return rec, {"loss_rec": rec.mean()}, forward, state


def sparse(setup: Setup, params, x, keys, hp, state):
  """Reconstruction plus an L1 or KL penalty on the code, or TopK codes with the AuxK loss.

  TopK's dead units (those AuxK asks to model the residual) are those that have not fired for
  `config.dead_after` training examples, counted in `state["examples_since_fired"]` over the global
  batch (Gao et al. 2024); `batch_dead_fraction` still reports the units silent for this whole batch.
  """
  forward, sown = setup.autoencode(params, x, x, keys)
  rec = setup.reconstruction(forward.logits, x)
  terms = {"loss_rec": rec.mean()}
  kind = setup.config.sparsity
  if kind == "l1":
    penalty, weight = sparsity.l1(forward.code).mean(), hp["sparsity_weight"]
  elif kind == "kl":
    penalty = sparsity.kl_divergence(forward.code, rho=hp["rho"], axis_name=setup.axis_name).sum()
    weight = hp["sparsity_weight"]
  elif kind == "topk":  # TopK is in the model; AuxK revives the dead units.
    since = sparsity.update_since_fired(state["examples_since_fired"], forward.code, axis_name=setup.axis_name)
    state = {**state, "examples_since_fired": since}
    dead = sparsity.windowed_dead_units(since, dead_after=setup.config.dead_after)
    aux = sparsity.auxk_code(sown["intermediates"]["encoder"]["pre_code"][0], dead, k=setup.config.auxk)
    penalty = jnp.where(dead.any(), _auxk_loss(setup, params, forward, aux), 0.0)
    weight = hp["auxk_weight"]
    # Neither is the test split's dead_fraction (units on for no test example).
    terms["batch_dead_fraction"] = sparsity.dead_units(forward.code, axis_name=setup.axis_name).mean()
    terms["dead_fraction_window"] = dead.mean()
  else:
    raise ValueError(f"unknown sparsity {kind!r}; choose 'l1', 'kl' or 'topk'")
  terms["loss_" + ("auxk" if kind == "topk" else kind)] = penalty
  return rec + weight * penalty, terms, forward, state


def _auxk_loss(setup: Setup, params, forward: Forward, aux_code: jax.Array) -> jax.Array:
  """AuxK (Gao et al. 2024): dead latents learn to reconstruct the residual the live ones leave.

  The residual e = x - x_hat is a constant; its prediction is what adding `aux_code` changes in the
  decoded image (for a linear decoder, exactly W_dec aux_code as in the paper).
  """
  code = jax.lax.stop_gradient(forward.code)
  residual = forward.x - jax.lax.stop_gradient(jax.nn.sigmoid(forward.logits))
  decode = lambda z: jax.nn.sigmoid(setup.apply(params, z, method="decode"))
  return reconstruction.squared_error(decode(code + aux_code) - decode(code), residual).mean()


SPARSITY = ("l1", "kl", "topk")  # config.sparsity


def _sparse_state(config) -> State:
  """TopK: `examples_since_fired` (int32, one per code unit, `sparsity.update_since_fired`)."""
  if config.sparsity == "topk":
    return {"examples_since_fired": jnp.zeros((config.latent_dim,), jnp.int32)}
  return {}


def _validate_sparse(config) -> None:
  checks.choice(config, "sparsity", SPARSITY)
  checks.non_negative(config, "sparsity_weight")
  if config.sparsity == "topk":
    if not 0 < config.topk <= config.latent_dim:
      raise errors.ConfigError(f"--config.topk={config.topk} must be in [1, latent_dim={config.latent_dim}]")
    if config.auxk <= 0 or config.auxk_weight < 0:
      raise errors.ConfigError(f"--config.auxk={config.auxk} must be positive and --config.auxk_weight >= 0")
    checks.positive(config, "dead_after")
    if config.code_activation not in ("linear", "relu"):
      raise errors.ConfigError("--config.sparsity=topk applies its own ReLU to the top k codes: set "
                               "--config.code_activation=linear")
  if config.sparsity == "topk" and config.l0_target > 0:
    raise errors.ConfigError(f"--config.l0_target={config.l0_target}: a TopK code has exactly topk units on; set "
                             "--config.topk instead (and --config.l0_target=0)")
  if config.l0_target > config.latent_dim:
    raise errors.ConfigError(f"--config.l0_target={config.l0_target} exceeds the code's {config.latent_dim} units")
  if config.sparsity == "kl":
    if not 0 < config.rho < 1:
      raise errors.ConfigError(f"--config.rho={config.rho} must be in (0, 1)")
    if config.code_activation != "sigmoid":
      raise errors.ConfigError("--config.sparsity=kl compares mean activations with rho, so codes must lie in "
                               "(0, 1): set --config.code_activation=sigmoid")


def denoising(setup: Setup, params, x, keys, hp, state):
  """Reconstruct the clean input from a corrupted one (noise drawn from each example's key)."""
  noise = functools.partial(corruption.corrupt, kind=setup.config.noise, level=hp["noise_level"])
  x_in = jax.vmap(noise)(_stream(keys, 1), x)
  forward, _ = setup.autoencode(params, x, x_in, keys)
  rec = setup.reconstruction(forward.logits, x)
  return rec, {"loss_rec": rec.mean()}, forward, state


def _validate_denoising(config) -> None:
  checks.choice(config, "noise", corruption.KINDS)
  top = float("inf") if config.noise == "gaussian" else 1.0
  if not 0 <= config.noise_level <= top:
    raise errors.ConfigError(f"--config.noise_level={config.noise_level} must be in [0, {top}] for "
                             f"noise={config.noise}")


def contractive_(setup: Setup, params, x, keys, hp, state):
  """Reconstruction plus the encoder Jacobian's squared Frobenius norm, exactly (or estimated)."""
  forward, _ = setup.autoencode(params, x, x, keys)
  rec = setup.reconstruction(forward.logits, x)
  encoder = getattr(setup.model, "encoder", None)
  mlp = isinstance(encoder, models.MLPEncoder)
  path = setup.config.contractive_path
  penalty = contractive.penalty(
      forward.encode, x, path=path, layers=models.mlp_layers(params["encoder"]) if mlp else None,
      activations=models.mlp_activations(encoder) if mlp else None,
      # Per-example probes (an independent stream of each example's key): device-count invariant.
      key=_stream(keys, 1) if path == "stochastic" else None)
  return (rec + hp["contractive_weight"] * penalty,
          {"loss_rec": rec.mean(), "loss_contractive": penalty.mean()}, forward, state)


def _validate_contractive(config) -> None:
  checks.choice(config, "contractive_path", contractive.PATHS)
  if config.contractive_path == "mlp" and config.architecture != "mlp":
    raise errors.ConfigError("--config.contractive_path=mlp needs --config.architecture=mlp; use 'auto'")
  checks.non_negative(config, "contractive_weight")


def vae(setup: Setup, params, x, keys, hp, state):
  """The negative ELBO with a beta on the KL, or the negative importance-weighted bound (IWAE).

  config.vae_samples = k reparameterized samples from q(z|x) per example (one from the example's own
  key when k = 1, else from fold_in(key, i)). "elbo": the mean over samples of -log p(x|z) plus beta
  times the analytic KL. "iwae": -log (1/k) sum_i p(x, z_i) / q(z_i|x) (`variational.iwae_bound`),
  with -reconstruction as log p(x|z) (exact for bernoulli and gaussian); its loss is the bound, not
  loss_rec + loss_kl, which are still reported to compare with ELBO runs.
  """
  k = setup.config.vae_samples
  mean, logvar = setup.apply(params, x, method="encode")
  sample_keys = keys[None] if k == 1 else jax.vmap(lambda i: _stream(keys, i))(jnp.arange(k))  # (k, B)
  code = jax.vmap(lambda ks: jax.vmap(variational.reparameterize)(ks, mean, logvar))(sample_keys)  # (k, B, d)
  logits = setup.apply(params, code.reshape(-1, code.shape[-1]), method="decode")
  x_rep = jnp.broadcast_to(x[None], (k, *x.shape)).reshape(-1, *x.shape[1:])
  rec = setup.reconstruction(logits, x_rep).reshape(k, x.shape[0])
  kl = variational.kl_standard_normal(mean, logvar)
  forward = Forward(setup.model, params, x, x, code[0], logits.reshape(k, *x.shape)[0], keys)
  terms = {"loss_rec": rec.mean(), "loss_kl": kl.mean()}
  if setup.config.vae_objective == "iwae":
    per_example = -variational.iwae_bound(variational.log_importance_weights(-rec, code, mean, logvar))
  elif setup.config.vae_objective == "elbo":
    per_example = variational.negative_elbo(rec.mean(axis=0), kl, beta=hp["beta"])
  else:
    raise ValueError(f"unknown vae_objective {setup.config.vae_objective!r}; choose one of "
                     f"{', '.join(VAE_OBJECTIVES)}")
  return per_example, terms, forward, state


def _validate_vae(config) -> None:
  checks.non_negative(config, "beta")
  checks.choice(config, "vae_objective", VAE_OBJECTIVES)
  checks.positive(config, "vae_samples")
  if config.vae_objective == "iwae" and setpoint.active(config):
    raise errors.ConfigError(f"--config.{setpoint.active(config)[0]} adapts beta, which the IWAE bound does not "
                             "have; use --config.vae_objective=elbo")
  if config.vae_objective == "iwae" and config.beta != 1:
    raise errors.ConfigError(f"--config.beta={config.beta}: the IWAE bound has no KL weight; set --config.beta=1.0 "
                             "or --config.vae_objective=elbo")
  if config.architecture == "mlp" and not tuple(config.widths):
    raise errors.ConfigError("--config.family=vae needs at least one hidden width, e.g. --config.widths='(400,)'")


@dataclasses.dataclass(frozen=True)
class Family:
  """A family's entry: its objective, which hyperparameters it reads, its model, its key metrics."""

  objective: Objective
  # The hyperparameters it reads beyond the optimizer's and the seed (a sweep over another is refused).
  hparams: tuple[str, ...]
  idea: str  # What constrains the code (README's and compare's table).
  use: str  # When to reach for it.
  metrics: tuple[str, ...]  # The evaluation metrics a sweep or comparison table shows first.
  variational: bool = False  # The model: a Gaussian encoder and sampling in the loss.
  draws_filters: bool = False  # pictures: what each code unit draws (filters.png).
  # Numbers of the config that the evaluation reports beside the metrics (the KL-sparse AE's rho target).
  reported_hparams: Callable[[Any], dict[str, float]] = lambda config: {}
  validate: Callable[[Any], None] = _no_checks  # Its own config keys; ConfigError naming the key.
  init_state: Callable[[Any], State] = _no_state  # Its training state besides the parameters.
  topk: Callable[[Any], int] = lambda config: 0  # The model's TopK code (0: none).
  # The targets it can hold (`ae_jax.setpoint`): target key -> which coefficient, how measured.
  setpoints: dict[str, setpoint.SetPoint] = dataclasses.field(default_factory=dict)


def _l0(terms, code, config):
  del terms
  return sparsity.l0(code, threshold=sparsity.l0_threshold(config.code_activation)).mean()


_KL_TARGET = setpoint.SetPoint("kl_target", "beta", lambda terms, code, config: terms["loss_kl"], +1.0, "elbo_kl",
                               "the KL to the prior, nats per example",
                               ("elbo_reconstruction", "negative_elbo", "log_likelihood", "active_units"))
_RECONSTRUCTION_TARGET = setpoint.SetPoint(  # GECO (Rezende & Viola 2018), with beta = 1 / their multiplier.
    "reconstruction_target", "beta", lambda terms, code, config: terms["loss_rec"], -1.0, "elbo_reconstruction",
    "the reconstruction error per example", ("elbo_kl", "negative_elbo", "log_likelihood", "active_units"))
_L0_TARGET = setpoint.SetPoint("l0_target", "sparsity_weight", _l0, +1.0, "l0", "active code units per example",
                               ("fraction_variance_explained", "dead_fraction", "mse", "probe_accuracy"))
_JACOBIAN_TARGET = setpoint.SetPoint(
    "jacobian_target", "contractive_weight", lambda terms, code, config: terms["loss_contractive"], +1.0,
    "jacobian_frobenius_sq", "the encoder Jacobian's squared Frobenius norm", ("mse", "probe_accuracy"))
_COMMON_METRICS = ("mse", "probe_accuracy")
FAMILIES: dict[str, Family] = {
    "undercomplete": Family(
        undercomplete, (), "a bottleneck narrower than the input",
        "non-linear dimensionality reduction; compare with PCA first", _COMMON_METRICS + ("pca_mse",)),
    "sparse": Family(
        sparse, ("sparsity_weight", "rho", "auxk_weight", "l0_target", setpoint.RATE),
        "an L1 penalty on the code, or KL(rho || mean activation) per unit, or TopK",
        "many features of which few fire per input: interpretable parts",
        _COMMON_METRICS + ("l0", "dead_fraction"), draws_filters=True,
        reported_hparams=lambda config: {"rho": float(config.rho)} if config.sparsity == "kl" else {},
        validate=_validate_sparse, init_state=_sparse_state,
        topk=lambda config: config.topk if config.sparsity == "topk" else 0, setpoints={"l0_target": _L0_TARGET}),
    "denoising": Family(
        denoising, ("noise_level",),
        "the encoder sees a corrupted input (Gaussian, masking, salt-and-pepper); the loss compares with "
        "the clean one", "features robust to noise, or an actual denoiser",
        _COMMON_METRICS + ("psnr_gain/masking_0.25", "psnr_gain/gaussian_0.3"), validate=_validate_denoising),
    "contractive": Family(
        contractive_, ("contractive_weight", "jacobian_target", setpoint.RATE),
        "the squared Frobenius norm of the encoder Jacobian, computed exactly",
        "codes insensitive to small input changes (a locally flat manifold)",
        _COMMON_METRICS + ("jacobian_frobenius_sq", "psnr_gain/gaussian_0.3"), validate=_validate_contractive,
        setpoints={"jacobian_target": _JACOBIAN_TARGET}),
    "vae": Family(
        vae, ("beta", "kl_target", "reconstruction_target", setpoint.RATE),
        "a Gaussian posterior, the reparameterization trick, and the negative ELBO (with a beta "
        "on the KL)", "generating new samples, or a smooth, structured latent space",
        ("negative_elbo", "elbo_reconstruction", "elbo_kl", "log_likelihood", "active_units", "mse"),
        variational=True, validate=_validate_vae,
        setpoints={"kl_target": _KL_TARGET, "reconstruction_target": _RECONSTRUCTION_TARGET}),
}
NAMES = tuple(FAMILIES)


def register(name: str, family: Family) -> None:
  """Adds a family (or replaces one) by name: validation, models, sweeps, evaluation and the CLI read it
  from here. A new family is its objective and this one call (README, "Adding a family"; docs/families.md)."""
  FAMILIES[name] = family
  global NAMES
  NAMES = tuple(FAMILIES)


def unread_hparams(config, keys) -> list[str]:
  """Those of `keys` that are some family's hyperparameters but not read by `config.family`."""
  own = set(get(config.family).hparams)
  every = {k for family in FAMILIES.values() for k in family.hparams}
  return [k for k in keys if k in every and k not in own]


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f"unknown family {name!r}; choose one of {', '.join(NAMES)}")
  return FAMILIES[name]


def model_from_config(config, input_shape: Sequence[int]) -> nn.Module:
  """`models.build` with the model keys of an experiment config; ValueError for impossible shapes."""
  family = get(config.family)
  return models.build(
      architecture=config.architecture, input_shape=input_shape, latent_dim=config.latent_dim,
      widths=tuple(config.widths), activation=config.activation, code_activation=config.code_activation,
      variational=family.variational, topk=family.topk(config), kernel_init=config.kernel_init)


def build(config, model: nn.Module, *, axis_name: str | None = None) -> LossFn:
  """Returns `loss_fn(params, batch, keys, hp, state) -> (loss, (terms, new state))` of `config.family`
  for `model`; `state` starts as `init_state(config)`.

  Reads only structure keys of `config`; every number comes from `hp`. `axis_name` names the
  data-parallel axis for terms (and state updates) that need global batch statistics; leave it None
  outside `shard_map`.
  """
  family = get(config.family)
  objective = family.objective
  setup = Setup(model, config, axis_name)
  extra = user_terms.extra_terms(config.extra_terms)
  points = [family.setpoints[k] for k in setpoint.active(config)]

  def loss_fn(params, batch, keys, hp, state):
    plain_hp = hp
    for point in points:  # The coefficient the loss uses is the controller's; the target stays in `hp`.
      hp = setpoint.controlled_hp(point, hp, state)
    per_example, terms, forward, state = objective(setup, params, batch["image"], keys, hp, state)
    for point in points:
      state, logged = setpoint.update(point, plain_hp, state, point.measure(terms, forward.code, config),
                                      axis_name=axis_name)
      terms.update(logged)
    loss = per_example.mean()
    for name, fn in extra.items():
      value = user_terms.check_term(name, fn(forward), per_example.shape)
      terms[f"loss_{name}"] = value
      loss = loss + hp[hparams.EXTRA_PREFIX + name] * value
    terms["loss"] = loss
    return loss, (terms, state)

  return loss_fn
