"""Known-value tests for reconstruction, sparsity, corruption and variational terms (jitted)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import activations
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity
from ae_jax.losses import variational

# --- reconstruction ---------------------------------------------------------------------------

def test_squared_error_known_values():
  pred = jnp.array([[0.0, 1.0], [0.5, 0.5]])
  target = jnp.array([[1.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(jax.jit(reconstruction.squared_error)(pred, target), [1.0, 0.5])


def test_squared_error_sums_over_image_axes():
  pred = jnp.zeros((2, 3, 3, 1))
  np.testing.assert_allclose(reconstruction.squared_error(pred, jnp.ones_like(pred)), [9.0, 9.0])


def test_bernoulli_known_values():
  # -log sigmoid(0) = log 2 for either target; -[x log p + (1-x) log(1-p)] with p = sigmoid(2).
  logits = jnp.array([[0.0, 2.0]])
  target = jnp.array([[1.0, 0.25]])
  p = 1 / (1 + np.exp(-2.0))
  expected = np.log(2) - (0.25 * np.log(p) + 0.75 * np.log(1 - p))
  np.testing.assert_allclose(jax.jit(reconstruction.bernoulli)(logits, target), [expected], rtol=1e-6)


def test_bernoulli_is_stable_for_extreme_logits():
  out = reconstruction.bernoulli(jnp.array([[1000.0, -1000.0]]), jnp.array([[1.0, 0.0]]))
  np.testing.assert_allclose(out, [0.0], atol=1e-6)


def test_gaussian_known_values():
  # -log N(1 | 0, 1) = 0.5 + 0.5 log(2 pi); with scale e: 0.5/e^2 + 1 + 0.5 log(2 pi).
  out = reconstruction.gaussian(jnp.zeros((1, 1)), jnp.ones((1, 1)))
  np.testing.assert_allclose(out, [0.5 + 0.5 * np.log(2 * np.pi)], rtol=1e-6)
  out = reconstruction.gaussian(jnp.zeros((1, 1)), jnp.ones((1, 1)), log_scale=1.0)
  np.testing.assert_allclose(out, [0.5 / np.e**2 + 1 + 0.5 * np.log(2 * np.pi)], rtol=1e-6)


def test_from_logits_dispatch_and_errors():
  logits, x = jnp.zeros((1, 2)), jnp.ones((1, 2))
  np.testing.assert_allclose(reconstruction.from_logits(logits, x, kind="squared_error"), [0.5])
  np.testing.assert_allclose(reconstruction.from_logits(logits, x, kind="bernoulli"), [2 * np.log(2)], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown reconstruction"):
    reconstruction.from_logits(logits, x, kind="l7")
  with pytest.raises(ValueError, match="does not match"):
    reconstruction.squared_error(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


# --- sparsity ---------------------------------------------------------------------------------

def test_l1_known_values():
  np.testing.assert_allclose(jax.jit(sparsity.l1)(jnp.array([[1.0, -2.0], [0.0, 0.5]])), [3.0, 0.5])


def test_kl_divergence_known_values():
  # Unit 0 mean 0.05 = rho -> 0; unit 1 mean 0.5 -> 0.05 log(0.1) + 0.95 log(1.9).
  code = jnp.array([[0.1, 0.4], [0.0, 0.6]])
  out = jax.jit(lambda c: sparsity.kl_divergence(c, rho=0.05))(code)
  np.testing.assert_allclose(out, [0.0, 0.05 * np.log(0.1) + 0.95 * np.log(1.9)], atol=1e-6)


def test_kl_divergence_dead_unit_is_finite_and_bad_input_raises():
  out = sparsity.kl_divergence(jnp.zeros((4, 3)), rho=0.05)
  assert np.all(np.isfinite(out)) and np.all(out > 0)
  with pytest.raises(ValueError, match="rho"):
    sparsity.kl_divergence(jnp.zeros((4, 3)), rho=1.5)
  with pytest.raises(ValueError, match="batch, units"):
    sparsity.kl_divergence(jnp.zeros((4, 3, 2)))


def test_kl_divergence_uses_the_global_batch_mean_under_shard_map():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  code = jax.random.uniform(jax.random.key(0), (8, 3))
  mesh = step_lib.make_mesh(1, jax.devices()[:4])
  sharded = jax.shard_map(lambda c: sparsity.kl_divergence(c, rho=0.1, axis_name="data"), mesh=mesh,
                          in_specs=P("data"), out_specs=P())
  np.testing.assert_allclose(sharded(code), sparsity.kl_divergence(code, rho=0.1), rtol=1e-5)


# --- corruption -------------------------------------------------------------------------------

def test_gaussian_noise_statistics_and_determinism():
  key, x = jax.random.key(0), jnp.full((200, 50), 0.5)
  out = jax.jit(lambda k, v: corruption.gaussian(k, v, sigma=0.3))(key, x)
  np.testing.assert_allclose(jnp.mean(out - x), 0.0, atol=0.01)
  np.testing.assert_allclose(jnp.std(out - x), 0.3, rtol=0.02)
  np.testing.assert_allclose(out, corruption.gaussian(key, x, sigma=0.3), rtol=1e-6, atol=1e-6)  # jit may fuse to FMA.
  assert not np.array_equal(out, corruption.gaussian(jax.random.key(1), x, sigma=0.3))
  np.testing.assert_array_equal(corruption.gaussian(key, x, sigma=0.0), x)


def test_masking_zeroes_the_requested_fraction_and_keeps_the_rest():
  x = jnp.full((100, 100), 0.7)
  out = corruption.masking(jax.random.key(0), x, rate=0.25)
  zeroed = np.asarray(out == 0)
  np.testing.assert_allclose(zeroed.mean(), 0.25, atol=0.01)
  np.testing.assert_array_equal(np.asarray(out)[~zeroed], np.float32(0.7))
  np.testing.assert_array_equal(corruption.masking(jax.random.key(0), x, rate=0.0), x)
  np.testing.assert_array_equal(corruption.masking(jax.random.key(0), x, rate=1.0), 0 * x)


def test_salt_and_pepper_values():
  x = jnp.full((100, 100), 0.5)
  out = np.asarray(corruption.salt_and_pepper(jax.random.key(0), x, rate=0.2))
  np.testing.assert_allclose((out != 0.5).mean(), 0.2, atol=0.01)
  np.testing.assert_allclose((out == 1.0).mean(), 0.1, atol=0.01)
  assert set(np.unique(out)) == {0.0, 0.5, 1.0}


def test_corruption_errors():
  with pytest.raises(ValueError, match="rate"):
    corruption.masking(jax.random.key(0), jnp.zeros(3), rate=1.5)
  with pytest.raises(ValueError, match="sigma"):
    corruption.gaussian(jax.random.key(0), jnp.zeros(3), sigma=-1.0)
  with pytest.raises(ValueError, match="unknown noise"):
    corruption.corrupt(jax.random.key(0), jnp.zeros(3), kind="blur", level=0.1)


# --- variational ------------------------------------------------------------------------------

def test_reparameterize_moments_and_gradient():
  mean, logvar = jnp.full((20000, 1), 2.0), jnp.full((20000, 1), np.log(0.25))
  z = jax.jit(variational.reparameterize)(jax.random.key(0), mean, logvar)
  np.testing.assert_allclose(z.mean(), 2.0, atol=0.01)
  np.testing.assert_allclose(z.std(), 0.5, rtol=0.02)
  eps = (z - mean) / 0.5
  g_mean, g_logvar = jax.grad(
      lambda m, lv: variational.reparameterize(jax.random.key(0), m, lv).sum(), argnums=(0, 1))(mean, logvar)
  np.testing.assert_allclose(g_mean, 1.0)
  np.testing.assert_allclose(g_logvar, 0.5 * 0.5 * eps, rtol=1e-4, atol=1e-6)  # dz/dlogvar = sigma eps / 2.


def test_kl_standard_normal_known_values():
  # mean 1, var 1 -> 0.5; mean 0, var e -> 0.5 (e - 2); N(0, 1) -> 0.
  mean = jnp.array([[1.0, 0.0, 0.0]])
  logvar = jnp.array([[0.0, 1.0, 0.0]])
  np.testing.assert_allclose(jax.jit(variational.kl_standard_normal)(mean, logvar), [0.5 + 0.5 * (np.e - 2)],
                             rtol=1e-6)


def test_kl_matches_monte_carlo():
  mean, logvar = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.4]])
  z = variational.reparameterize(jax.random.key(1), jnp.repeat(mean, 200000, 0), jnp.repeat(logvar, 200000, 0))
  mc = jnp.mean(variational.gaussian_log_prob(z, mean, logvar) - variational.gaussian_log_prob(z))
  np.testing.assert_allclose(variational.kl_standard_normal(mean, logvar)[0], mc, rtol=0.02)


def test_negative_elbo_and_beta():
  np.testing.assert_allclose(variational.negative_elbo(jnp.array([1.0, 2.0]), jnp.array([0.5, 1.0]), beta=2.0),
                             [2.0, 4.0])
  with pytest.raises(ValueError, match="does not match"):
    variational.negative_elbo(jnp.zeros(2), jnp.zeros(3))


def test_gaussian_log_prob_known_value():
  np.testing.assert_allclose(variational.gaussian_log_prob(jnp.zeros((1, 2))), [-np.log(2 * np.pi)], rtol=1e-6)


# --- TopK and AuxK ----------------------------------------------------------------------------

def test_topk_keeps_the_k_largest_after_relu():
  pre = jnp.array([[3.0, -1.0, 2.0, 0.5], [-2.0, -1.0, -3.0, 4.0]])
  np.testing.assert_allclose(jax.jit(lambda p: activations.topk(p, k=2))(pre), [[3.0, 0, 2.0, 0], [0, 0, 0, 4.0]])
  grad = jax.grad(lambda p: activations.topk(p, k=2).sum())(pre)
  np.testing.assert_allclose(grad, [[1, 0, 1, 0], [0, 0, 0, 1]])  # Only kept, positive units learn.
  with pytest.raises(ValueError, match="k must be"):
    activations.topk(pre, k=5)


def test_examples_since_fired_counts_the_global_batch_and_resets_on_firing():
  code = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])  # Units 0 and 3 fire.
  since = jnp.array([7, 7, sparsity.SINCE_FIRED_CAP - 1, 3], jnp.int32)
  after = sparsity.update_since_fired(since, code)
  np.testing.assert_array_equal(after, [0, 9, sparsity.SINCE_FIRED_CAP, 0])  # +2 examples; capped, no overflow.
  np.testing.assert_array_equal(sparsity.windowed_dead_units(after, dead_after=9), [False, True, True, False])
  np.testing.assert_array_equal(sparsity.windowed_dead_units(after, dead_after=10), [False, False, True, False])
  # Over a data axis: a unit that fires on any device resets everywhere, and the count grows by the
  # global batch (2 devices x 2 examples), so every device holds the same counts.
  shards = jnp.stack([code, jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]])])
  out = jax.vmap(lambda c: sparsity.update_since_fired(since, c, axis_name="data"), axis_name="data")(shards)
  np.testing.assert_array_equal(out, [[0, 0, sparsity.SINCE_FIRED_CAP, 0]] * 2)
  np.testing.assert_array_equal(sparsity.update_since_fired(jnp.zeros(4, jnp.int32), jnp.zeros((5, 4))), [5] * 4)


def test_dead_units_and_auxk_code():
  code = jnp.array([[1.0, 0.0, 0.0, 2.0], [0.5, 0.0, 0.0, 0.0]])
  dead = sparsity.dead_units(code)
  np.testing.assert_array_equal(dead, [False, True, True, False])
  pre = jnp.array([[9.0, 0.3, 0.7, 9.0], [9.0, -1.0, 0.2, 9.0]])
  np.testing.assert_allclose(sparsity.auxk_code(pre, dead, k=1), [[0, 0, 0.7, 0], [0, 0, 0.2, 0]])
  np.testing.assert_allclose(sparsity.auxk_code(pre, dead, k=2), [[0, 0.3, 0.7, 0], [0, 0, 0.2, 0]])
