"""The loop a JAX user writes in an afternoon, as the benchmark's yardstick for ae_jax's own loop.

Written as Flax's own `examples/vae` writes it: images flattened at input (its
`input_pipeline.prepare_image` does `tf.reshape(x, (-1,))`), `optax.sigmoid_binary_cross_entropy(logits,
x).sum(-1)`, `optax.adam`, one jitted Flax + optax step per batch (`layout="images"` keeps the
batches image-shaped instead, (B, 28, 28, 1), which XLA:CPU runs slower: the benchmark's second column).
In detail: the batch sliced with `lax.dynamic_slice` from a per-epoch
permutation, one PRNG key per step (folded from the step number), noise drawn for the whole batch
at once, parameters and optimizer state donated, no sharding, no metrics but the loss (the Adam step
is `harness.AdamStep`, shared with the other plain loops). Same model
(`families.model_from_config`) and the same loss as the framework's step, written as a user would:
the reconstruction term with optax's losses on the batches as they come (`user_reconstruction`;
ae_jax's own terms on request), and a conv model with flax's own `nn.Conv` and `nn.ConvTranspose` (`flax_model`):
same params and values as ae_jax's, a different computation.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import optax

from ae_jax import activations
from ae_jax import families
from ae_jax import models
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity
from ae_jax.losses import variational
from benchmarks import harness


class FlaxConvEncoder(models.ConvEncoder):
  """`models.ConvEncoder` as a user writes it, with `nn.Conv`: same fields, params and outputs."""

  @nn.compact
  def __call__(self, x):
    act, init = activations.get(self.activation), models.kernel_initializer(self.kernel_init)
    h = x
    for i, feat in enumerate(self.features):
      h = act(nn.Conv(feat, (3, 3), strides=(2, 2), padding="SAME", kernel_init=init, name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    code = nn.Dense(self.latent_dim, kernel_init=init, name="code")(h)
    return models._code(self, code)  # pylint: disable=protected-access


class FlaxConvDecoder(models.ConvDecoder):
  """`models.ConvDecoder` as a user writes it: Dense, then `nn.ConvTranspose` 3x3 stride 2, then an
  `nn.Conv` 3x3 to logits; same fields, params and outputs."""

  @nn.compact
  def __call__(self, z):
    height, width, channels = self.output_shape
    scale = 2 ** len(self.features)
    act, init = activations.get(self.activation), models.kernel_initializer(self.kernel_init)
    h = act(nn.Dense((height // scale) * (width // scale) * self.features[-1], kernel_init=init,
                     name="project")(z))
    h = h.reshape(z.shape[0], height // scale, width // scale, self.features[-1])
    for i, feat in enumerate(reversed(self.features)):
      h = act(nn.ConvTranspose(feat, (3, 3), strides=(2, 2), padding="SAME", kernel_init=init,
                               name=f"deconv_{i}")(h))
    return nn.Conv(channels, (3, 3), padding="SAME", kernel_init=init, name="logits")(h)


def _as(cls, module):
  """`module`'s fields in a `cls` (a subclass of its class)."""
  return cls(**{f.name: getattr(module, f.name) for f in dataclasses.fields(module)
                if f.init and f.name not in ("parent", "name")})


def flax_model(config, input_shape):
  """The config's model with flax's own layers: ae_jax's, except that conv layers are flax's."""
  model = families.model_from_config(config, input_shape)
  if config.architecture != "conv":
    return model  # Dense layers only: ae_jax's MLP is plain flax already.
  encoder = model.encoder
  encoder = (encoder.clone(trunk=_as(FlaxConvEncoder, encoder.trunk)) if isinstance(encoder, models.GaussianEncoder)
             else _as(FlaxConvEncoder, encoder))
  return model.clone(encoder=encoder, decoder=_as(FlaxConvDecoder, model.decoder))


def user_reconstruction(logits: jax.Array, x: jax.Array, *, kind: str) -> jax.Array:
  """The reconstruction term per example as a user writes it: optax's loss on the batch as the data
  comes (flattened (B, 784), or images (B, 28, 28, 1)), summed over the non-batch axes. Same values as
  ae_jax's."""
  axes = tuple(range(1, x.ndim))
  if kind == "bernoulli":
    return optax.sigmoid_binary_cross_entropy(logits, x).sum(axes)
  if kind == "squared_error":
    return optax.squared_error(jax.nn.sigmoid(logits), x).sum(axes)
  return reconstruction.from_logits(logits, x, kind=kind)  # gaussian: no optax loss to reach for.


def make_loss(config, model, *, losses: str = "user"):
  """`loss(params, x, key) -> scalar` for the families the benchmark compares (not contractive).

  `losses`: "user", the reconstruction term written with optax (`user_reconstruction`), or "ae_jax",
  ae_jax's own (`reconstruction.from_logits`), to time the loop alone.
  """
  if losses not in ("user", "ae_jax"):
    raise ValueError(f"losses={losses!r}: 'user' or 'ae_jax'")
  rec = functools.partial(user_reconstruction if losses == "user" else reconstruction.from_logits,
                          kind=config.reconstruction)

  def autoencoder(params, x, x_in, penalty=lambda code: 0.0):
    code, logits = model.apply({"params": params}, x_in)
    return rec(logits, x).mean() + penalty(code)

  def vae(params, x, key):
    apply = functools.partial(model.apply, {"params": params})
    mean, logvar = apply(x, method="encode")
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    return (rec(apply(z, method="decode"), x) + config.beta * variational.kl_standard_normal(mean, logvar)).mean()

  def sparse(params, x, key):
    del key
    penalty = {"kl": lambda code: config.sparsity_weight * sparsity.kl_divergence(code, rho=config.rho).sum(),
               "l1": lambda code: config.sparsity_weight * sparsity.l1(code).mean(),
               "topk": lambda code: 0.0}[config.sparsity]  # TopK: in the model; no AuxK here.
    return autoencoder(params, x, x, penalty)

  # One loss per family, as a user writes the one they train.
  losses_by_family = {
      "undercomplete": lambda params, x, key: autoencoder(params, x, x),
      "denoising": lambda params, x, key: autoencoder(
          params, x, corruption.corrupt(key, x, kind=config.noise, level=config.noise_level)),
      "sparse": sparse,
      "vae": vae,
  }
  if config.family not in losses_by_family:
    raise ValueError(f"the plain loop has no loss for family {config.family!r}")
  return losses_by_family[config.family]


LAYOUTS = ("flat", "images")


class PlainLoop:
  """`run(steps)` trains `steps` steps, one jitted call each, and fetches the last loss."""

  def __init__(self, config, images: jax.Array, *, seed: int = 0, model=None, losses: str = "user",
               layout: str = "images"):
    """`model`: `flax_model(config, ...)` unless given (e.g. ae_jax's own, to time the loop alone);
    `losses`: see `make_loss`; `layout`: "flat" trains on the images flattened once, up front, as Flax's
    example does (MLP models only: `model` is then built for (784,) inputs), "images" as they come."""
    if layout not in LAYOUTS:
      raise ValueError(f"layout={layout!r}: one of {', '.join(LAYOUTS)}")
    if layout == "flat":
      if config.architecture != "mlp" or model is not None:
        raise ValueError("layout='flat' is the user's MLP loop: architecture='mlp' and the default model")
      images = images.reshape(len(images), -1)
    model = flax_model(config, images.shape[1:]) if model is None else model
    self.params = models.init(model, jax.random.key(seed), images.shape[1:])
    self.update = harness.AdamStep(make_loss(config, model, losses=losses), config.learning_rate)
    self.opt_state = self.update.init(self.params)
    self.images, self.key, self.batch_size, self.i = images, jax.random.key(seed + 1), config.batch_size, 0
    self.steps_per_epoch = len(images) // config.batch_size
    self.permutation = jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch),
                                                                         len(images)))
    self.perm = self.permutation(self.key, 0)
    dynamic = config.binarize == "dynamic"

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, images, perm, i, key) -> tuple[Any, Any, jax.Array]:
      with jax.named_scope("batch"):
        idx = lax.dynamic_slice(perm, ((i % self.steps_per_epoch) * self.batch_size,), (self.batch_size,))
        x = images[idx]
      with jax.named_scope("draws"):
        binarize_key, loss_key = jax.random.split(jax.random.fold_in(key, i))
        if dynamic:
          x = jax.random.bernoulli(binarize_key, x).astype(x.dtype)
      params, opt_state, value, _, _ = self.update(params, opt_state, x, loss_key)  # Scoped for profile_step.
      return params, opt_state, value

    self.step = step

  def run(self, steps: int) -> float:
    value = None
    for _ in range(steps):
      if self.i and self.i % self.steps_per_epoch == 0:
        self.perm = self.permutation(self.key, self.i // self.steps_per_epoch)
      self.params, self.opt_state, value = self.step(self.params, self.opt_state, self.images, self.perm,
                                                     self.i, self.key)
      self.i += 1
    return float(value)
