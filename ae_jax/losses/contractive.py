"""The contractive penalty ||dz/dx||_F^2 per example (Rifai et al., 2011), exact and fast.

All functions return shape (B,): one squared Frobenius norm of the encoder Jacobian per example,
differentiable w.r.t. whatever parameters `encode` (or `layers`) holds, so a training loss can be
`mean(reconstruction + lam * penalty(...))` under `jax.grad`.

- `frobenius_sq` (forward mode) and `frobenius_sq_jacrev` (reverse mode) are the exact reference
  for any encoder: they build each example's (k, d) Jacobian, B of them in all.
- `mlp_frobenius_sq` is exact for `MLPEncoder`-shaped networks and never builds a (B, k, d) tensor.
  With a1 = x W1 + b1 and M = dz/da1 (k x h1), J = M W1^T, so ||J||_F^2 = sum((M G) * M) with
  G = W1^T W1 computed once per batch; one- and two-layer encoders use closed forms for M.
- `stochastic_frobenius_sq` is an unbiased random-projection estimate for encoders too big for either.
- `penalty` picks among them (`resolve_path` says which it will take).

The encoder must treat examples independently (no batch statistics): the per-example Jacobian is
the derivative of one example's code w.r.t. that example alone.
"""

from collections.abc import Callable, Sequence
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ae_jax import activations as activations_lib

Encode = Callable[[jax.Array], jax.Array]
Layers = Sequence[tuple[ArrayLike, ArrayLike]]

PATHS = ("auto", "jacfwd", "jacrev", "mlp", "stochastic")


def _as_batch(x: ArrayLike) -> jax.Array:
  """x as a float array with a batch axis and at least one feature axis (Jacobians need floats)."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"x must be (B, ...) with at least one feature axis, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def _code_size(encode: Encode, x: jax.Array) -> int:
  """k = code size per example, from shapes only (nothing is computed)."""
  out = jax.eval_shape(encode, x)
  if out.ndim < 1 or out.shape[0] != x.shape[0]:
    raise ValueError(f"encode must map (B, ...) to (B, k); got {x.shape} -> {out.shape}")
  return math.prod(out.shape[1:])


def _frobenius_sq(jacobian_fn, encode: Encode, x: ArrayLike) -> jax.Array:
  x = _as_batch(x)
  _code_size(encode, x)  # Shape check before tracing Jacobians.
  single = lambda xi: encode(xi[None])[0]  # One example, batch of 1 in and out.
  jac = jax.vmap(jacobian_fn(single))(x)  # (B, *code_shape, *example_shape)
  return jnp.sum(jnp.square(jac.reshape(x.shape[0], -1)), axis=1)


def frobenius_sq(encode: Encode, x: ArrayLike) -> jax.Array:
  """Exact ||dz/dx||_F^2 per example via forward mode: d JVPs each; the reference for any encoder.

  Args:
    encode: (B, ...) -> (B, k), with its parameters closed over (gradients flow to them).
    x: a (B, ...) batch.

  Returns:
    (B,) squared Frobenius norms. Memory O(B k d); prefer it to `frobenius_sq_jacrev` when d <= k.
  """
  return _frobenius_sq(jax.jacfwd, encode, x)


def frobenius_sq_jacrev(encode: Encode, x: ArrayLike) -> jax.Array:
  """As `frobenius_sq`, via reverse mode (k VJPs per example): cheaper when k < d."""
  return _frobenius_sq(jax.jacrev, encode, x)


def _check_layers(layers: Layers, names: Sequence[str], d: int) -> list[tuple[jax.Array, jax.Array]]:
  if isinstance(names, str):
    raise ValueError(f"activations must be a sequence of names, one per layer, got {names!r}")
  layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layers]
  if not layers:
    raise ValueError("layers must hold at least one (kernel, bias) pair")
  if len(names) != len(layers):
    raise ValueError(f"got {len(layers)} layers but {len(names)} activation names")
  for name in names:
    activations_lib.get(name)  # ValueError for unknown names.
  fan_in = d
  for i, (w, b) in enumerate(layers):
    if w.ndim != 2 or w.shape[0] != fan_in or b.shape != (w.shape[1],):
      raise ValueError(
          f"layer {i}: expected kernel ({fan_in}, out) and bias (out,), got {w.shape} and {b.shape}")
    fan_in = w.shape[1]
  return layers


def mlp_frobenius_sq(layers: Layers, activations: Sequence[str], x: ArrayLike) -> jax.Array:
  """Exact ||dz/dx||_F^2 per example for z = s_n(... s_1(x W1 + b1) ... Wn + bn), without (B, k, d).

  The Jacobian is J = M W1^T with M = dz/da1 (k x h1), so ||J||^2 = sum((M G) * M), G = W1^T W1
  once per batch (O(d h1^2)). Cost per batch, beyond one forward pass:
  - 1 layer: sum_j s'(a_j)^2 sum_i W_ij^2, O(B h + d h).
  - 2 layers, linear code: s'^T [(W2 W2^T) * G] s', O(B h^2 + (d + k) h^2).
  - 2 layers, code activation c: M = diag(c'(a2)) W2^T diag(s'(a1)) in closed form, O(B k h^2).
  - deeper: M by vmap(jacrev) (k < h1) or vmap(jacfwd) of the layers after a1, then O(B k h1^2).

  Args:
    layers: (kernel (in, out), bias (out,)) pairs, input layer first (`models.mlp_layers`).
    activations: one activation name per layer (`models.mlp_activations(encoder)`).
    x: a (B, ...) batch; flattened to (B, d) as `MLPEncoder` does.

  Returns:
    (B,) squared Frobenius norms, differentiable w.r.t. the kernels, biases and x.
  """
  x = _as_batch(x)
  x = x.reshape(x.shape[0], -1)
  names = activations if isinstance(activations, str) else tuple(activations)
  layers = _check_layers(layers, names, x.shape[1])
  w1, b1 = layers[0]
  a1 = x @ w1 + b1
  ds1 = activations_lib.derivative(names[0])(a1)  # s'(a1): derivative at the pre-activation.
  if len(layers) == 1:
    return jnp.sum(jnp.square(ds1) * jnp.sum(jnp.square(w1), axis=0), axis=1)

  g = w1.T @ w1  # (h1, h1)
  if len(layers) == 2:
    w2, b2 = layers[1]
    if names[1] == "linear":
      # sum_{jl} s'_j s'_l G_jl (W2 W2^T)_jl: an h1 x h1 quadratic form per example.
      return jnp.einsum("bj,jl,bl->b", ds1, (w2 @ w2.T) * g, ds1)
    dc = activations_lib.derivative(names[1])(activations_lib.get(names[0])(a1) @ w2 + b2)
    m = dc[:, :, None] * w2.T[None] * ds1[:, None, :]  # (B, k, h1): M_pj = c'_p W2_jp s'_j
    return jnp.sum((m @ g) * m, axis=(1, 2))

  def tail(a: jax.Array) -> jax.Array:  # One example's a1 (h1,) -> z (k,).
    h = activations_lib.get(names[0])(a)
    for (w, b), name in zip(layers[1:], names[1:]):
      h = activations_lib.get(name)(h @ w + b)
    return h

  k, h1 = layers[-1][0].shape[1], w1.shape[1]
  m = jax.vmap(jax.jacrev(tail) if k < h1 else jax.jacfwd(tail))(a1)  # (B, k, h1)
  return jnp.sum((m @ g) * m, axis=(1, 2))


def stochastic_frobenius_sq(
    encode: Encode, x: ArrayLike, key: jax.Array, *, num_projections: int = 1) -> jax.Array:
  """Unbiased estimate of ||dz/dx||_F^2 per example from Gaussian random projections.

  E_v ||J^T v||^2 = tr(J J^T) for v ~ N(0, I_k), and E_u ||J u||^2 = tr(J^T J) for u ~ N(0, I_d).
  Both are quadratic forms of Gaussians in matrices with the same non-zero eigenvalues, so both have
  the same distribution and variance, 2 ||J J^T||_F^2 = 2 ||J^T J||_F^2 per projection, divided by
  `num_projections` for their mean (relative std sqrt(2 / num_projections) at worst, for rank-1 J).
  Since variance cannot choose, cost does: one forward pass plus one VJP per projection (k < d)
  or one JVP per projection (d <= k), batched over examples and projections.

  Args:
    encode: (B, ...) -> (B, k) with parameters closed over; examples must not interact.
    x: a (B, ...) batch.
    key: the only source of randomness, one key for the batch or (B,) keys, one per example; with
      per-example keys an example's estimate does not depend on the rest of the batch, so a batch
      split over devices gives the same numbers as on one.
    num_projections: probes per example, averaged.

  Returns:
    (B,) estimates, differentiable w.r.t. the encoder's parameters.
  """
  if num_projections < 1:
    raise ValueError(f"num_projections must be >= 1, got {num_projections}")
  x = _as_batch(x)
  k, d = _code_size(encode, x), math.prod(x.shape[1:])
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  key_batch = key.shape if typed else key.shape[:-1]  # Raw uint32 keys carry a trailing (2,).
  if key_batch not in ((), (x.shape[0],)):
    raise ValueError(f"key must be one key or {x.shape[0]} (one per example), got key shape {key.shape}")

  def normal(shape, dtype):  # (P, B, *shape[2:]) probes.
    if not key_batch:
      return jax.random.normal(key, shape, dtype)
    per_example = jax.vmap(lambda ki: jax.random.normal(ki, (shape[0], *shape[2:]), dtype))(key)
    return jnp.swapaxes(per_example, 0, 1)

  if k < d:
    z, vjp = jax.vjp(encode, x)
    v = normal((num_projections, *z.shape), z.dtype)
    proj = jax.vmap(lambda vi: vjp(vi)[0])(v)  # (P, B, ...): J^T v per example.
  else:
    u = normal((num_projections, *x.shape), x.dtype)
    proj = jax.vmap(lambda ui: jax.jvp(encode, (x,), (ui,))[1])(u)  # (P, B, k): J u per example.
  sq = jnp.sum(jnp.square(proj.reshape(num_projections, x.shape[0], -1)), axis=2)
  return jnp.mean(sq, axis=0)


def resolve_path(
    encode: Encode | None,
    x: ArrayLike,
    *,
    path: str = "auto",
    layers: Layers | None = None,
    activations: Sequence[str] | None = None,
) -> str:
  """The concrete path `penalty` will take (never "auto"); raises ValueError for bad combinations.

  "auto" takes "mlp" when `layers` and `activations` are given (the fast exact path), else
  "jacrev" when k < d, else "jacfwd". Shapes come from `jax.eval_shape`: nothing is run.
  """
  if path not in PATHS:
    raise ValueError(f"unknown contractive path {path!r}; choose one of {', '.join(PATHS)}")
  if (layers is None) != (activations is None):
    raise ValueError("pass both layers and activations (the MLP structure), or neither")
  x = _as_batch(x)
  if path == "auto" and layers is not None:
    path = "mlp"
  if path == "mlp":
    if layers is None:
      raise ValueError("path='mlp' needs layers=models.mlp_layers(params) and activations=")
    _check_layers(layers, activations, math.prod(x.shape[1:]))
    if encode is not None:
      k, k_mlp = _code_size(encode, x), jnp.shape(layers[-1][0])[-1]
      if k != k_mlp:
        raise ValueError(f"encode gives codes of size {k} but the last layer has {k_mlp} outputs")
    return path
  if encode is None:
    raise ValueError(f"path={path!r} needs an encode function")
  k = _code_size(encode, x)
  if path == "auto":
    path = "jacrev" if k < math.prod(x.shape[1:]) else "jacfwd"
  return path


def penalty(
    encode: Encode | None,
    x: ArrayLike,
    *,
    path: str = "auto",
    layers: Layers | None = None,
    activations: Sequence[str] | None = None,
    key: jax.Array | None = None,
    num_projections: int = 1,
) -> jax.Array:
  """||dz/dx||_F^2 per example, (B,), by `path` (one of `PATHS`; see `resolve_path` for "auto").

  `encode` may be None only for "mlp"; "stochastic" needs `key`.
  """
  path = resolve_path(encode, x, path=path, layers=layers, activations=activations)
  if path == "mlp":
    return mlp_frobenius_sq(layers, activations, x)
  if path == "jacfwd":
    return frobenius_sq(encode, x)
  if path == "jacrev":
    return frobenius_sq_jacrev(encode, x)
  if key is None:
    raise ValueError("path='stochastic' needs key=")
  return stochastic_frobenius_sq(encode, x, key, num_projections=num_projections)
