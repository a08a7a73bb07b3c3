"""Flax linen encoders and decoders, and the two model shapes every family uses.

Images go in as (B, H, W, C) (or (B, D) vectors); MLP encoders flatten them. Decoders return *logits*
of the input's shape: squared-error losses read them through a sigmoid, Bernoulli losses use them as is.

- `Autoencoder.encode(x) -> z`, `.decode(z) -> logits`, `__call__(x) -> (z, logits)`.
- `VAE.encode(x) -> (mean, logvar)`, `.decode(z) -> logits`; sampling lives in the loss, not the model,
  so that all randomness flows from explicit keys.

MLP encoders name their layers `hidden_0, hidden_1, ..., code`, so structure-aware code (the fast
contractive penalty) can read their kernels with `mlp_layers`.
"""

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from ae_jax import activations
from ae_jax import convolution

# Kernel initialisers by name: lecun_normal is flax's default; glorot_uniform is the IWAE paper's
# (Glorot & Bengio 2010); he_* (Kaiming) suit ReLU nets.
KERNEL_INITS = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "lecun_uniform": nn.initializers.lecun_uniform(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "he_normal": nn.initializers.he_normal(),
    "he_uniform": nn.initializers.he_uniform(),
}
OUTPUT_BIASES = ("zero", "data_mean")  # config.init_output_bias
OUTPUT_BIAS_CLIP = 1e-3  # data_mean: pixel means are clipped to [1e-3, 1 - 1e-3] before the logit.


class MLPEncoder(nn.Module):
  """x -> code_activation(Dense(... activation(Dense(flatten(x))) ...)), or TopK of it if `topk`."""

  widths: Sequence[int]
  latent_dim: int
  activation: str = "relu"
  code_activation: str = "linear"
  topk: int = 0
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    act = activations.get(self.activation)
    init = kernel_initializer(self.kernel_init)
    for i, width in enumerate(self.widths):
      h = act(nn.Dense(width, kernel_init=init, name=f"hidden_{i}")(h))
    return _code(self, nn.Dense(self.latent_dim, kernel_init=init, name="code")(h))


def _code(module: nn.Module, pre: jax.Array) -> jax.Array:
  """The code from its pre-activation. Under TopK the activated pre-code is sown ("intermediates",
  "pre_code") so the AuxK loss can pick dead units from it."""
  pre = activations.get(module.code_activation)(pre)
  if not module.topk:
    return pre
  module.sow("intermediates", "pre_code", pre)
  return activations.topk(pre, k=module.topk)


class MLPDecoder(nn.Module):
  """z -> logits of `output_shape` (per example)."""

  widths: Sequence[int]
  output_shape: Sequence[int]
  activation: str = "relu"
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = activations.get(self.activation)
    init = kernel_initializer(self.kernel_init)
    h = z
    for i, width in enumerate(self.widths):
      h = act(nn.Dense(width, kernel_init=init, name=f"hidden_{i}")(h))
    out = nn.Dense(math.prod(self.output_shape), kernel_init=init, name="logits")(h)
    return out.reshape(z.shape[0], *self.output_shape)


class ConvEncoder(nn.Module):
  """(B, H, W, C) -> strided 3x3 convs (each halves H and W) -> Dense code.

  The convs are `convolution.Conv`: flax's `nn.Conv` with gradients XLA:CPU runs fast in a scan."""

  features: Sequence[int]
  latent_dim: int
  activation: str = "relu"
  code_activation: str = "linear"
  topk: int = 0
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = activations.get(self.activation)
    init = kernel_initializer(self.kernel_init)
    h = x
    for i, feat in enumerate(self.features):
      h = act(convolution.Conv(feat, (3, 3), strides=(2, 2), kernel_init=init, name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    return _code(self, nn.Dense(self.latent_dim, kernel_init=init, name="code")(h))


class ConvDecoder(nn.Module):
  """z -> Dense to (H/2^n, W/2^n, features[-1]) -> transposed convs that double H and W -> logits."""

  features: Sequence[int]
  output_shape: Sequence[int]
  activation: str = "relu"
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    height, width, channels = self.output_shape
    scale = 2 ** len(self.features)
    act = activations.get(self.activation)
    init = kernel_initializer(self.kernel_init)
    h = act(nn.Dense((height // scale) * (width // scale) * self.features[-1], kernel_init=init,
                     name="project")(z))
    h = h.reshape(z.shape[0], height // scale, width // scale, self.features[-1])
    for i, feat in enumerate(reversed(self.features)):
      h = act(ConvTranspose2x(feat, kernel_init=init, name=f"deconv_{i}")(h))
    return convolution.Conv(channels, (3, 3), kernel_init=init, name="logits")(h)


# _PHASE_TAPS[p]: for output phase p (0: y[2m], 1: y[2m+1]) along one axis, the taps of the 3-tap
# kernel that read x[m-1] and x[m], in that order (None: no tap); see `ConvTranspose2x`.
_PHASE_TAPS = ((0, 2), (None, 1))


class ConvTranspose2x(nn.Module):
  """`nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding="SAME")`, computed without zeros.

  Same params (`kernel` (3, 3, in, features), `bias`), same initial values and the same outputs as
  flax's layer, which computes a convolution of the input dilated with zeros (`lhs_dilation=2`).
  XLA:CPU has no fast kernel for the gradient of that convolution with respect to its kernel: it
  took 380 of the 550 ms of a conv (32, 64) MNIST step at batch 128 (docs/speed.md, "Conv models on CPU"). Along each
  axis, y[2m] = w[0] x[m-1] + w[2] x[m] and y[2m+1] = w[1] x[m]: so each of the four output phases
  (even/odd rows x even/odd columns) is a small ordinary convolution of the undilated input (2x2,
  2x1, 1x2 and 1x1 taps, 9 in all, as many multiply-adds as the useful part of flax's), and the
  phases interleave into the output. Their gradients are ordinary convolutions too (`conv2d`'s, fast
  inside the training scan).
  """

  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    b, h, w, _ = x.shape

    def phase(row: int, col: int) -> jax.Array:
      rows, cols = ([t for t in _PHASE_TAPS[p] if t is not None] for p in (row, col))
      pad = [(len(taps) - 1, 0) for taps in (rows, cols)]  # 2 taps read x[m-1] too: pad 1 before.
      k = kernel[np.array(rows)][:, np.array(cols)]
      return convolution.conv2d(x, k, (1, 1), tuple(pad))

    y = jnp.stack([jnp.stack([phase(r, c) for c in (0, 1)], axis=3) for r in (0, 1)], axis=2)
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias


class GaussianEncoder(nn.Module):
  """A trunk (any encoder producing features) followed by two Dense heads: mean and log-variance."""

  trunk: nn.Module
  latent_dim: int
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = self.trunk(x)
    init = kernel_initializer(self.kernel_init)
    return (nn.Dense(self.latent_dim, kernel_init=init, name="mean")(h),
            nn.Dense(self.latent_dim, kernel_init=init, name="logvar")(h))


class Autoencoder(nn.Module):
  """A deterministic encoder/decoder pair."""

  encoder: nn.Module
  decoder: nn.Module

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    z = self.encoder(x)
    return z, self.decoder(z)

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)


class VAE(nn.Module):
  """A Gaussian encoder q(z|x) and a decoder of likelihood parameters p(x|z)."""

  encoder: GaussianEncoder
  decoder: nn.Module

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean, _ = self.encoder(x)
    return mean, self.decoder(mean)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)


def build(
    *,
    architecture: str,
    input_shape: Sequence[int],
    latent_dim: int,
    widths: Sequence[int],
    activation: str = "relu",
    code_activation: str = "linear",
    variational: bool = False,
    topk: int = 0,
    kernel_init: str = "lecun_normal",
) -> nn.Module:
  """Builds an `Autoencoder` (or a `VAE` if `variational`) for examples of `input_shape`.

  `widths` are the encoder's hidden widths (MLP) or conv features (conv); the decoder mirrors them.
  `topk` > 0 keeps the k largest codes per example (TopK sparsity). Raises ValueError for shapes the
  architecture cannot handle, and for unknown names. `kernel_init` names every layer's kernel
  initialiser (`KERNEL_INITS`); biases start at zero (`init` can set the decoder's output bias).
  """
  activations.get(activation), activations.get(code_activation)  # Fail early on bad names.
  kernel_initializer(kernel_init)
  if latent_dim <= 0:
    raise ValueError(f"latent_dim must be positive, got {latent_dim}")
  if not 0 <= topk <= latent_dim:
    raise ValueError(f"topk must be in [0, latent_dim={latent_dim}], got {topk}")
  if any(w <= 0 for w in widths):
    raise ValueError(f"widths must all be positive, got {list(widths)}")
  input_shape = tuple(input_shape)
  if architecture == "mlp":
    trunk_cls, dec = MLPEncoder, MLPDecoder(tuple(reversed(widths)), input_shape, activation, kernel_init)
  elif architecture == "conv":
    scale = 2 ** len(widths)
    if len(input_shape) != 3 or input_shape[0] % scale or input_shape[1] % scale or not widths:
      raise ValueError(
          f"conv models need (H, W, C) inputs with H and W divisible by 2**len(widths)={scale}; "
          f"got {input_shape} with widths {list(widths)}. Use architecture='mlp' or fewer widths.")
    trunk_cls, dec = ConvEncoder, ConvDecoder(tuple(widths), input_shape, activation, kernel_init)
  else:
    raise ValueError(f"unknown architecture {architecture!r}; choose 'mlp' or 'conv'")
  if variational:
    # The trunk's last layer is a hidden feature layer; the Gaussian heads make the code.
    *hidden, last = widths if architecture == "mlp" else (*widths, widths[-1])
    if architecture == "mlp":
      trunk = MLPEncoder(tuple(hidden), last, activation, code_activation=activation, kernel_init=kernel_init)
    else:
      trunk = ConvEncoder(tuple(widths), last, activation, code_activation=activation, kernel_init=kernel_init)
    return VAE(GaussianEncoder(trunk, latent_dim, kernel_init), dec)
  return Autoencoder(trunk_cls(tuple(widths), latent_dim, activation, code_activation, topk, kernel_init), dec)


def mlp_activations(encoder: MLPEncoder) -> tuple[str, ...]:
  """The activation names, input layer first, of an MLP encoder (`losses.contractive.mlp_frobenius_sq`)."""
  return (encoder.activation,) * len(encoder.widths) + (encoder.code_activation,)


def mlp_layers(encoder_params) -> list[tuple[jax.Array, jax.Array]]:
  """The (kernel, bias) pairs of an `MLPEncoder`'s params, input layer first."""
  names = sorted((k for k in encoder_params if k.startswith("hidden_")), key=lambda k: int(k[7:]))
  return [(encoder_params[k]["kernel"], encoder_params[k]["bias"]) for k in [*names, "code"]]


def init(model: nn.Module, key: jax.Array, input_shape: Sequence[int], *, output_bias: ArrayLike | None = None):
  """Initial params for a batch of one example of `input_shape`.

  `output_bias` (logits of `input_shape`, e.g. `data_mean_logits` of the training images) replaces the
  decoder's zero output bias, so the untrained decoder draws the mean image (as the IWAE code does).
  A conv decoder has one output bias per channel: it takes the mean of `output_bias` over H and W.
  """
  params = model.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]
  if output_bias is None:
    return params
  output_bias = jnp.asarray(output_bias, jnp.float32)
  if output_bias.shape != tuple(input_shape):
    raise ValueError(f"output_bias has shape {output_bias.shape}; it must have the examples' shape "
                     f"{tuple(input_shape)}")
  bias = params["decoder"]["logits"]["bias"]
  new = (output_bias.reshape(bias.shape) if bias.size == output_bias.size
         else output_bias.reshape(-1, bias.shape[-1]).mean(axis=0))
  logits = {**params["decoder"]["logits"], "bias": new.astype(bias.dtype)}
  return {**params, "decoder": {**params["decoder"], "logits": logits}}


def data_mean_logits(images: ArrayLike, *, clip: float = OUTPUT_BIAS_CLIP) -> np.ndarray:
  """logit(clip(mean image, clip, 1 - clip)): the output bias whose sigmoid is the mean training image."""
  mean = np.clip(np.asarray(images, np.float64).mean(axis=0), clip, 1 - clip)
  return np.log(mean / (1 - mean)).astype(np.float32)


def kernel_initializer(name: str) -> nn.initializers.Initializer:
  """The flax initialiser called `name` (one of `KERNEL_INITS`); ValueError naming the choices."""
  if name not in KERNEL_INITS:
    raise ValueError(f"unknown kernel_init {name!r}; choose one of {', '.join(KERNEL_INITS)}")
  return KERNEL_INITS[name]
