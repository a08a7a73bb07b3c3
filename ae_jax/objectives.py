"""The five autoencoder families, each a few lines composing pure terms from `ae_jax.losses`.

An objective is `loss_fn(params, batch, keys) -> (loss, {"loss": ..., "loss_rec": ..., ...})` where
`batch["image"]` is (B, H, W, C) in [0, 1] and `keys` holds one PRNG key per example (shape (B,)).
Per-example keys make every random draw independent of how the batch is split across devices.

User terms: any function `term(forward: Forward) -> (B,)` can be added by import path, e.g.
`config.extra_terms = "my_pkg.terms:orthogonality=0.1"`; it is weighted, averaged, added to the loss
and reported as `loss_<name>`.
"""

from collections.abc import Callable
import dataclasses
import functools
import importlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ae_jax import models
from ae_jax.losses import contractive
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity
from ae_jax.losses import variational

FAMILIES = ("undercomplete", "sparse", "denoising", "contractive", "vae")

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
Term = Callable[["Forward"], jax.Array]


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


def resolve_term(path: str) -> Term:
  """Imports `module.sub:function` and returns the function; ValueError with a fix if it can't."""
  module_name, sep, attr = path.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"extra term {path!r} must look like 'package.module:function'")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"cannot import module {module_name!r} for extra term {path!r}: {e}") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ValueError(f"module {module_name!r} has no function {attr!r} (extra term {path!r})")
  return fn


def parse_extra_terms(spec: str) -> dict[str, tuple[Term, float]]:
  """'mod:fn=0.1,mod2:fn2=1' -> {'fn': (fn, 0.1), 'fn2': (fn2, 1.0)}; the weight defaults to 1."""
  terms = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    path, _, weight = item.partition("=")
    try:
      weight = float(weight) if weight else 1.0
    except ValueError:
      raise ValueError(f"extra term {item!r}: weight {weight!r} is not a number") from None
    fn = resolve_term(path.strip())
    terms[path.strip().rpartition(":")[2]] = (fn, weight)
  return terms


def _per_example(fn, keys: jax.Array, *args):
  """Applies `fn(key, *example_args)` to each example with its own key."""
  return jax.vmap(fn)(keys, *args)


def _auxk_loss(apply, x, code, logits, aux_code) -> jax.Array:
  """AuxK (Gao et al. 2024): dead latents learn to reconstruct the residual the live ones leave.

  The residual e = x - x_hat is a constant; its prediction is what adding `aux_code` changes in the
  decoded image (for a linear decoder, exactly W_dec aux_code as in the paper).
  """
  code = jax.lax.stop_gradient(code)
  residual = x - jax.lax.stop_gradient(jax.nn.sigmoid(logits))
  decode = lambda z: jax.nn.sigmoid(apply(z, method="decode"))
  return reconstruction.squared_error(decode(code + aux_code) - decode(code), residual).mean()


def build(config, model: nn.Module, *, axis_name: str | None = None) -> LossFn:
  """Returns the loss function of `config.family` for `model`.

  `axis_name` names the data-parallel axis for terms that need global batch statistics (KL
  sparsity); leave it None outside `shard_map`.
  """
  family = config.family
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
  rec_term = functools.partial(reconstruction.from_logits, kind=config.reconstruction)
  extra = parse_extra_terms(config.extra_terms)
  mlp_encoder = isinstance(getattr(model, "encoder", None), models.MLPEncoder)

  def loss_fn(params, batch, keys):
    x = batch["image"]
    apply = functools.partial(model.apply, {"params": params})
    terms: dict[str, jax.Array] = {}
    x_in = x
    if family == "denoising":
      noise = functools.partial(corruption.corrupt, kind=config.noise, level=config.noise_level)
      x_in = _per_example(noise, jax.vmap(jax.random.fold_in, (0, None))(keys, 1), x)

    if family == "vae":
      mean, logvar = apply(x_in, method="encode")
      code = _per_example(variational.reparameterize, keys, mean, logvar)
      logits = apply(code, method="decode")
      rec = rec_term(logits, x)
      kl = variational.kl_standard_normal(mean, logvar)
      per_example = variational.negative_elbo(rec, kl, beta=config.beta)
      terms["loss_kl"] = kl.mean()
    else:
      (code, logits), state = apply(x_in, mutable=["intermediates"])
      rec = rec_term(logits, x)
      per_example = rec
    terms["loss_rec"] = rec.mean()
    loss = per_example.mean()

    if family == "sparse":
      if config.sparsity == "l1":
        penalty = sparsity.l1(code).mean()
      elif config.sparsity == "kl":
        penalty = sparsity.kl_divergence(code, rho=config.rho, axis_name=axis_name).sum()
      elif config.sparsity == "topk":  # TopK is in the model; AuxK revives the dead units.
        dead = sparsity.dead_units(code, axis_name=axis_name)
        aux = sparsity.auxk_code(state["intermediates"]["encoder"]["pre_code"][0], dead, k=config.auxk)
        penalty = jnp.where(dead.any(), _auxk_loss(apply, x, code, logits, aux), 0.0)
        terms["dead_fraction"] = dead.mean()
      else:
        raise ValueError(f"unknown sparsity {config.sparsity!r}; choose 'l1', 'kl' or 'topk'")
      name = "auxk" if config.sparsity == "topk" else config.sparsity
      terms[f"loss_{name}"] = penalty
      loss = loss + (config.auxk_weight if config.sparsity == "topk" else config.sparsity_weight) * penalty

    forward = Forward(model, params, x, x_in, code, logits, keys)
    if family == "contractive":
      layers = models.mlp_layers(params["encoder"]) if mlp_encoder else None
      penalty = contractive.penalty(
          forward.encode, x, path=config.contractive_path, layers=layers,
          activations=contractive.mlp_activations(model.encoder) if mlp_encoder else None,
          # Per-example probes (an independent stream of each example's key): device-count invariant.
          key=jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1)
          if config.contractive_path == "stochastic" else None).mean()
      terms["loss_contractive"] = penalty
      loss = loss + config.contractive_weight * penalty

    for name, (fn, weight) in extra.items():
      value = jnp.mean(fn(forward))
      terms[f"loss_{name}"] = value
      loss = loss + weight * value

    terms["loss"] = loss
    return loss, terms

  return loss_fn
