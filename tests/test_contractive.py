"""Tests for ae_jax.losses.contractive: every path against the jacfwd reference, known values, grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import models
from ae_jax.losses import contractive


def _make(seed, *, input_shape, widths, latent_dim, activation, code_activation="linear", x64=False):
  """A random MLPEncoder, its params, a batch x (B = 3) and an `encode(params, x)` function.

  Numbers come from numpy (shapes from `jax.eval_shape`), so making one compiles nothing.
  """
  enc = models.MLPEncoder(tuple(widths), latent_dim, activation, code_activation)
  shapes = jax.eval_shape(lambda k: models.init(enc, k, input_shape), jax.random.key(0))
  rng = np.random.default_rng(seed)
  dtype = jnp.float64 if x64 else jnp.float32

  def draw(s):  # Non-zero biases, so that s'(a) != s'(x W) and bias gradients are exercised.
    scale = 0.3 if len(s.shape) == 1 else 1.0 / np.sqrt(s.shape[0])
    return jnp.asarray(scale * rng.standard_normal(s.shape), dtype)

  params = jax.tree.map(draw, shapes)
  x = jnp.asarray(rng.standard_normal((3, *input_shape)), dtype)
  encode = lambda p, xb: enc.apply({"params": p}, xb)
  return enc, params, x, encode


def _dense_params(kernels_biases):
  """MLPEncoder-style params from explicit (kernel, bias) pairs, input layer first."""
  *hidden, code = kernels_biases
  params = {f"hidden_{i}": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
            for i, (w, b) in enumerate(hidden)}
  params["code"] = {"kernel": jnp.asarray(code[0]), "bias": jnp.asarray(code[1])}
  return params


def _sigmoid_np(a):
  return 1.0 / (1.0 + np.exp(-a))


def _directional_fd(fn, params, direction, eps):
  plus = jax.tree.map(lambda p, v: p + eps * v, params, direction)
  minus = jax.tree.map(lambda p, v: p - eps * v, params, direction)
  return (fn(plus) - fn(minus)) / (2 * eps)


def _random_direction(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])


def _tree_dot(a, b):
  return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- The reference path against independent computations. -------------------------------------


def test_reference_matches_sigmoid_closed_form():
  _, params, x, encode = _make(0, input_shape=(5,), widths=(), latent_dim=4, activation="relu",
                               code_activation="sigmoid")
  w, b = np.asarray(params["code"]["kernel"]), np.asarray(params["code"]["bias"])
  h = _sigmoid_np(np.asarray(x) @ w + b)
  expected = np.sum((h * (1 - h)) ** 2 * np.sum(w**2, axis=0), axis=1)
  got = jax.jit(lambda p: contractive.frobenius_sq(lambda xb: encode(p, xb), x))(params)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_reference_matches_vmap_jacrev_deep_relu():
  _, params, x, encode = _make(1, input_shape=(2, 3), widths=(7, 5), latent_dim=4,
                               activation="relu")
  single = lambda p, xi: encode(p, xi[None])[0]
  jac = jax.jit(jax.vmap(jax.jacrev(single, argnums=1), (None, 0)))(params, x)  # (B, k, 2, 3)
  expected = jnp.sum(jac.reshape(3, -1) ** 2, axis=1)
  got = jax.jit(lambda p: contractive.frobenius_sq(lambda xb: encode(p, xb), x))(params)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert np.all(np.asarray(got) > 0)


@pytest.mark.parametrize("path", ["jacfwd", "jacrev", "mlp", "auto"])
def test_known_values_by_hand(path):
  # One layer W = [[1, 2], [3, 4]], b = 0: ||W||_F^2 = 1 + 4 + 9 + 16 = 30.
  w = np.array([[1.0, 2.0], [3.0, 4.0]])
  b = np.zeros(2)
  x = jnp.array([[0.0, 0.0], [5.0, -7.0]])
  cases = [
      # Linear code: J = W^T everywhere.
      ([(w, b)], ("linear",), [30.0, 30.0]),
      # Tanh at a = 0: s'(0) = 1, so 30 again at x = 0.
      ([(w, b)], ("tanh",), [30.0, None]),
      # Sigmoid at a = 0: s' = 1/4, so 30 / 16 = 1.875.
      ([(w, b)], ("sigmoid",), [1.875, None]),
      # Two layers, W2 = [[1], [1]]: J = W2^T diag(s') W1^T = s' * [3, 7], ||J||^2 = 58 s'^2.
      ([(w, b), (np.ones((2, 1)), np.zeros(1))], ("linear", "linear"), [58.0, 58.0]),
      ([(w, b), (np.ones((2, 1)), np.zeros(1))], ("sigmoid", "linear"), [58.0 / 16, None]),
      # Sigmoid code at a2 = 0 (x = 0, tanh hidden): c' = 1/4, so 58 / 16 = 3.625.
      ([(w, b), (np.ones((2, 1)), np.zeros(1))], ("tanh", "sigmoid"), [3.625, None]),
      # Three linear layers W1, I, [[1], [1]]: the same 58.
      ([(w, b), (np.eye(2), np.zeros(2)), (np.ones((2, 1)), np.zeros(1))],
       ("linear", "linear", "linear"), [58.0, 58.0]),
  ]
  for layers, names, expected in cases:
    params = _dense_params(layers)
    enc = models.MLPEncoder((2,) * (len(layers) - 1), layers[-1][0].shape[1],
                            names[0], names[-1])
    encode = lambda xb: enc.apply({"params": params}, xb)
    structure = dict(layers=models.mlp_layers(params), activations=names)
    got = contractive.penalty(encode, x, path=path, **(structure if path in ("mlp", "auto") else {}))
    for g, e in zip(np.asarray(got), expected):
      if e is not None:
        np.testing.assert_allclose(g, e, rtol=1e-6, err_msg=f"{names} {path}")


# --- Gradients, and the published mistakes. -------------------------------------------------


@pytest.mark.parametrize("path", ["jacfwd", "mlp"])
def test_penalty_grad_matches_finite_differences(path):
  with jax.enable_x64(True):
    enc, params, x, encode = _make(2, input_shape=(4,), widths=(5,), latent_dim=3,
                                   activation="tanh", code_activation="sigmoid", x64=True)
    names = models.mlp_activations(enc)

    @jax.jit
    def loss(p):
      if path == "mlp":
        return jnp.mean(contractive.mlp_frobenius_sq(models.mlp_layers(p), names, x))
      return jnp.mean(contractive.frobenius_sq(lambda xb: encode(p, xb), x))

    grads = jax.jit(jax.grad(loss))(params)
    for leaf in jax.tree.leaves(grads):
      assert float(jnp.max(jnp.abs(leaf))) > 0
    for seed in range(3):
      v = _random_direction(params, seed)
      np.testing.assert_allclose(_tree_dot(grads, v), _directional_fd(loss, params, v, 1e-6),
                                 rtol=1e-6)


def test_regression_derivative_is_h_times_one_minus_h_at_preactivation():
  # Bugs seen in published code: s' replaced by h itself, or s' evaluated at h (or x) not at a.
  _, params, x, encode = _make(3, input_shape=(6,), widths=(), latent_dim=5, activation="relu",
                               code_activation="sigmoid")
  w, b = np.asarray(params["code"]["kernel"]), np.asarray(params["code"]["bias"])
  a = np.asarray(x) @ w + b
  h = _sigmoid_np(a)
  col = np.sum(w**2, axis=0)
  truth = np.sum((h * (1 - h)) ** 2 * col, axis=1)
  bug_h = np.sum(h**2 * col, axis=1)
  bug_at_h = np.sum((_sigmoid_np(h) * (1 - _sigmoid_np(h))) ** 2 * col, axis=1)
  layers, names = models.mlp_layers(params), ("sigmoid",)
  for got in (jax.jit(lambda p: contractive.frobenius_sq(lambda xb: encode(p, xb), x))(params),
              jax.jit(contractive.mlp_frobenius_sq, static_argnums=1)(layers, names, x)):
    np.testing.assert_allclose(got, truth, rtol=1e-5)
    for bug in (bug_h, bug_at_h):
      assert not np.allclose(got, bug, rtol=1e-2)


def test_regression_penalty_is_not_detached():
  # A penalty built from stop_gradient(J) trains nothing: its gradient w.r.t. W is zero.
  with jax.enable_x64(True):
    _, params, x, encode = _make(4, input_shape=(4,), widths=(), latent_dim=3,
                                 activation="relu", code_activation="sigmoid", x64=True)

    @jax.jit
    def detached(p):
      jac = jax.vmap(jax.jacfwd(lambda xi: encode(p, xi[None])[0]))(x)
      return jnp.mean(jnp.sum(jax.lax.stop_gradient(jac) ** 2, axis=(1, 2)))

    ours = jax.jit(lambda p: jnp.mean(contractive.frobenius_sq(lambda xb: encode(p, xb), x)))
    np.testing.assert_allclose(detached(params), ours(params), rtol=1e-12)  # Same value...
    assert float(jnp.max(jnp.abs(jax.jit(jax.grad(detached))(params)["code"]["kernel"]))) == 0.0
    grads = jax.jit(jax.grad(ours))(params)  # ...but ours has the true gradient.
    assert float(jnp.max(jnp.abs(grads["code"]["kernel"]))) > 1e-3
    v = _random_direction(params, 0)
    np.testing.assert_allclose(_tree_dot(grads, v), _directional_fd(ours, params, v, 1e-6),
                               rtol=1e-6)


def test_regression_small_penalty_is_not_floored():
  # A penalty summed and then floor-divided by the batch size (`//`) rounds small values to 0.
  w = np.full((3, 2), 1e-2)  # ||W||^2 = 6e-4; linear code, so the penalty is 6e-4 per example.
  params = _dense_params([(w, np.zeros(2))])
  x = jnp.ones((4, 3))
  encode = lambda xb: models.MLPEncoder((), 2, "relu", "linear").apply({"params": params}, xb)
  for path in ("jacfwd", "jacrev", "mlp"):
    kwargs = dict(layers=models.mlp_layers(params), activations=("linear",)) if path == "mlp" else {}
    got = contractive.penalty(encode, x, path=path, **kwargs)
    assert float(jnp.mean(got)) > 0
    np.testing.assert_allclose(got, np.full(4, 6e-4), rtol=1e-5)
    assert float(jnp.sum(got) // x.shape[0]) == 0.0  # What the bug would have trained on.


# --- Every path against the jacfwd reference, value and gradient. ----------------------------

_CONFIGS = [
    # (input_shape, widths, latent_dim, activation, code_activation)
    ((5,), (), 4, "relu", "sigmoid"),  # 1 layer sigmoid.
    ((2, 3), (), 7, "relu", "tanh"),  # 1 layer tanh, k > d, image-shaped x.
    ((6,), (5,), 3, "relu", "linear"),  # 2 layers relu, linear code.
    ((4,), (6,), 5, "tanh", "sigmoid"),  # 2 layers, sigmoid code.
    ((5,), (6, 4), 3, "gelu", "linear"),  # 3 layers gelu, k < h1 (jacrev inside).
    ((2, 2), (3, 4), 5, "gelu", "gelu"),  # 3 layers gelu, k > h1 (jacfwd inside).
]


@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_every_path_matches_reference_value_and_grad(config):
  input_shape, widths, latent_dim, act, code_act = config
  with jax.enable_x64(True):
    enc, params, x, encode = _make(5, input_shape=input_shape, widths=widths, latent_dim=latent_dim,
                                   activation=act, code_activation=code_act, x64=True)
    names = models.mlp_activations(enc)

    def per_path(path):
      def loss(p):
        pen = contractive.penalty(lambda xb: encode(p, xb), x, path=path,
                                  layers=models.mlp_layers(p) if path == "mlp" else None,
                                  activations=names if path == "mlp" else None)
        # Weighted, so the gradient is not only that of the batch sum.
        return jnp.sum(pen * jnp.arange(1.0, x.shape[0] + 1)), pen
      return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, ref), ref_grads = per_path("jacfwd")
    assert np.all(np.asarray(ref) > 0)
    for path in ("jacrev", "mlp"):
      (_, val), grads = per_path(path)
      np.testing.assert_allclose(val, ref, rtol=1e-5, err_msg=path)
      for (where, r), g in zip(jax.tree_util.tree_leaves_with_path(ref_grads),
                               jax.tree.leaves(grads)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-12,
                                   err_msg=f"{path} {jax.tree_util.keystr(where)}")


def test_mlp_path_float32_matches_reference():
  enc, params, x, encode = _make(6, input_shape=(8,), widths=(6, 5), latent_dim=3,
                                 activation="sigmoid", code_activation="tanh")
  names = models.mlp_activations(enc)
  ref = jax.jit(lambda p: contractive.frobenius_sq(lambda xb: encode(p, xb), x))(params)
  got = jax.jit(lambda p: contractive.mlp_frobenius_sq(models.mlp_layers(p), names, x))(params)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref, rtol=1e-4)


# --- The stochastic estimator. ------------------------------------------------------------


@pytest.mark.parametrize("input_shape,latent_dim", [((6,), 3), ((3,), 5)])  # vjp, then jvp.
def test_stochastic_mean_within_standard_errors(input_shape, latent_dim):
  _, params, x, encode = _make(7, input_shape=input_shape, widths=(4,), latent_dim=latent_dim,
                               activation="tanh")
  fn = lambda xb: encode(params, xb)
  num = 4000
  est = jax.jit(lambda key: contractive.stochastic_frobenius_sq(fn, x, key, num_projections=num))(
      jax.random.key(0))
  jac = jax.jit(jax.vmap(jax.jacfwd(lambda xi: fn(xi[None])[0])))(x).reshape(3, latent_dim, -1)
  exact = jnp.sum(jac**2, axis=(1, 2))
  jjt = jnp.einsum("bkd,bld->bkl", jac, jac)
  stderr = jnp.sqrt(2 * jnp.sum(jjt**2, axis=(1, 2)) / num)
  assert est.shape == exact.shape == (3,)
  assert np.all(np.abs(np.asarray(est - exact)) < 4 * np.asarray(stderr)), (est, exact, stderr)


def test_stochastic_is_deterministic_given_key_and_differentiable():
  _, params, x, encode = _make(8, input_shape=(5,), widths=(4,), latent_dim=3, activation="tanh")
  loss = jax.jit(lambda p, key: jnp.mean(contractive.stochastic_frobenius_sq(
      lambda xb: encode(p, xb), x, key, num_projections=2)))
  key = jax.random.key(1)
  # k = 3 < d = 5: the probes are v ~ N(0, I_k), (projections, B, k) drawn from `key` alone, and the
  # estimate is the mean over them of ||J^T v||^2, from each example's exact Jacobian (by jacfwd here).
  jac = np.asarray(jax.vmap(jax.jacfwd(lambda xi: encode(params, xi[None])[0]))(x), np.float64)  # (B, k, d)
  probes = np.asarray(jax.random.normal(key, (2, 3, 3)), np.float64)
  by_hand = np.mean(np.sum(np.einsum("pbk,bkd->pbd", probes, jac) ** 2, axis=2), axis=0)
  np.testing.assert_allclose(loss(params, key), by_hand.mean(), rtol=1e-5)
  assert float(loss(params, key)) != float(loss(params, jax.random.key(2)))
  grads = jax.jit(jax.grad(loss))(params, key)
  assert float(jnp.max(jnp.abs(grads["hidden_0"]["kernel"]))) > 0
  # Via the dispatcher, the same key gives the same numbers.
  via_penalty = jax.jit(lambda p, key: jnp.mean(contractive.penalty(
      lambda xb: encode(p, xb), x, path="stochastic", key=key, num_projections=2)))
  np.testing.assert_array_equal(via_penalty(params, key), loss(params, key))


def test_stochastic_with_per_example_keys_does_not_depend_on_the_rest_of_the_batch():
  # What makes the stochastic path give the same numbers on 1 device and on 4.
  for input_shape, latent_dim in (((6,), 3), ((3,), 5)):  # vjp, then jvp.
    _, params, x, encode = _make(10, input_shape=input_shape, widths=(4,), latent_dim=latent_dim,
                                 activation="tanh")
    est = jax.jit(lambda xb, keys: contractive.stochastic_frobenius_sq(
        lambda xi: encode(params, xi), xb, keys, num_projections=2))
    keys = jax.random.split(jax.random.key(3), 3)
    whole = est(x, keys)
    parts = jnp.concatenate([est(x[:1], keys[:1]), est(x[1:], keys[1:])])
    np.testing.assert_allclose(whole, parts, rtol=1e-6)
    assert float(jnp.abs(whole - est(x, keys[::-1])).max()) > 0  # The keys do choose the probes.
  with pytest.raises(ValueError, match="one per example"):
    contractive.stochastic_frobenius_sq(lambda xi: encode(params, xi), x, jax.random.split(jax.random.key(0), 2))


# --- The dispatcher. --------------------------------------------------------------------------


def test_resolve_path_auto_and_explicit():
  enc, params, x, encode = _make(9, input_shape=(6,), widths=(4,), latent_dim=3, activation="relu")
  fn = lambda xb: encode(params, xb)
  layers, names = models.mlp_layers(params), models.mlp_activations(enc)
  assert names == ("relu", "linear")
  assert contractive.resolve_path(fn, x, layers=layers, activations=names) == "mlp"
  assert contractive.resolve_path(None, x, layers=layers, activations=names) == "mlp"
  assert contractive.resolve_path(fn, x) == "jacrev"  # k = 3 < d = 6.
  wide = lambda xb: jnp.concatenate([fn(xb)] * 3, axis=1)  # k = 9 >= d = 6.
  assert contractive.resolve_path(wide, x) == "jacfwd"
  for path in ("jacfwd", "jacrev", "stochastic"):
    assert contractive.resolve_path(fn, x, path=path) == path
  ref = contractive.frobenius_sq(fn, x)
  for kwargs in ({}, dict(layers=layers, activations=names)):
    np.testing.assert_allclose(contractive.penalty(fn, x, **kwargs), ref, rtol=1e-5)
  assert set(contractive.PATHS) == {"auto", "jacfwd", "jacrev", "mlp", "stochastic"}


def test_penalty_raises_on_bad_input():
  enc, params, x, encode = _make(10, input_shape=(6,), widths=(4,), latent_dim=3,
                                 activation="relu")
  fn = lambda xb: encode(params, xb)
  layers, names = models.mlp_layers(params), models.mlp_activations(enc)
  bad = [
      (dict(path="hessian"), "unknown contractive path"),
      (dict(path="mlp"), "needs layers"),
      (dict(layers=layers), "both layers and activations"),
      (dict(activations=names), "both layers and activations"),
      (dict(path="stochastic"), "needs key"),
      (dict(path="stochastic", key=jax.random.key(0), num_projections=0), "num_projections"),
      (dict(layers=layers, activations=("relu",)), "activation names"),
      (dict(layers=layers, activations=("relu", "nope")), "unknown activation"),
      (dict(layers=layers[::-1], activations=names), "layer 0"),
      (dict(layers=[layers[0]], activations=names[:1]), "codes of size"),  # k = 4 vs encode's 3.
      (dict(layers=[], activations=()), "at least one"),
      (dict(layers=[layers[0]], activations="relu"), "sequence of names"),
  ]
  for kwargs, match in bad:
    with pytest.raises(ValueError, match=match):
      contractive.penalty(fn, x, **kwargs)
  with pytest.raises(ValueError, match="at least one feature axis"):
    contractive.penalty(fn, jnp.ones(4))
  with pytest.raises(ValueError, match="needs an encode"):
    contractive.penalty(None, x, path="jacfwd")
  with pytest.raises(ValueError, match=r"\(B, k\)"):
    contractive.penalty(lambda xb: fn(xb)[:1], x)  # Drops examples.
