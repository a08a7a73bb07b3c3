"""Known-answer tests for ae_jax.evaluation, ae_jax.likelihood and ae_jax.batching (tiny shapes; CPU)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets

from ae_jax import batching
from ae_jax import evaluation
from ae_jax import evaluators
from ae_jax import families
from ae_jax import likelihood
from ae_jax.losses import reconstruction
from tests.conftest import family_config


def test_reconstruction_errors_hand_numbers():
  x = np.zeros((2, 2, 2, 1), np.float32)
  x_hat = np.zeros_like(x)
  x_hat[0, 0, 0, 0] = 1.0  # Image 0: SSE 1.
  x_hat[1] = 0.5  # Image 1: SSE 4 * 0.25 = 1.
  x_hat[1, 0, 0, 0] = 1.5  # Image 1: SSE 3 * 0.25 + 2.25 = 3.
  out = evaluation.reconstruction_errors(x, x_hat, batch_size=1)
  assert out == pytest.approx({"mse": 4.0 / 8.0, "sse": 2.0})
  assert all(type(v) is float for v in out.values())


def test_reconstruction_errors_rejects_shape_mismatch():
  with pytest.raises(ValueError, match="does not match"):
    evaluation.reconstruction_errors(np.zeros((2, 3)), np.zeros((2, 4)))


def test_psnr_constant_offset_is_20db():
  rng = np.random.default_rng(0)
  clean = rng.uniform(0.2, 0.8, (5, 4, 4, 1)).astype(np.float32)
  assert evaluation.psnr(clean, clean + 0.1, batch_size=2) == pytest.approx(20.0, abs=1e-3)
  assert evaluation.psnr(clean, clean + 0.1, max_value=10.0) == pytest.approx(40.0, abs=1e-3)


def test_psnr_is_finite_for_a_perfect_image():
  clean = np.full((2, 3, 3, 1), 0.5, np.float32)
  other = clean.copy()
  other[1] += 0.1  # Image 0 perfect (floored at 100 dB), image 1 at 20 dB.
  assert evaluation.psnr(clean, other) == pytest.approx(60.0, abs=1e-3)


def test_fraction_variance_explained_known_cases():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(10, 3, 3, 1))
  assert evaluation.fraction_variance_explained(x, x) == pytest.approx(1.0)
  mean_image = np.broadcast_to(x.mean(axis=0), x.shape)
  assert evaluation.fraction_variance_explained(x, mean_image, batch_size=3) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="zero variance"):
    evaluation.fraction_variance_explained(np.ones((3, 2)), np.ones((3, 2)))


def test_pca_baseline_exact_subspace():
  rng = np.random.default_rng(2)
  k, d = 3, 16
  basis = rng.normal(size=(k, d))
  train = (rng.normal(size=(50, k)) @ basis).reshape(50, 4, 4, 1)
  test = (rng.normal(size=(20, k)) @ basis).reshape(20, 4, 4, 1)
  exact = evaluation.pca_baseline(train, test, num_components=k, batch_size=7)
  assert exact["mse"] < 1e-20 and exact["sse"] < 1e-18
  short = evaluation.pca_baseline(train, test, num_components=k - 1)
  assert short["mse"] > 1e-3
  assert short["sse"] == pytest.approx(short["mse"] * d)
  clamped = evaluation.pca_baseline(train[:2], test, num_components=100)  # Clamped to n = 2.
  assert clamped["mse"] > 0


def test_pca_baseline_keeps_the_largest_variance_directions():
  # Train points +-3 e1 and +-1 e2 (mean 0, variances 9 and 1 along two axes of 3): one component keeps e1, so
  # the test point (1, 2, 3) loses 2^2 + 3^2 = 13; two keep e1 and e2 and it loses 9; none, 14.
  train = np.array([[3.0, 0, 0], [-3.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
  test = np.array([[1.0, 2.0, 3.0]])
  for k, sse in ((0, 14.0), (1, 13.0), (2, 9.0)):
    out = evaluation.pca_baseline(train, test, num_components=k)
    assert out == pytest.approx({"mse": sse / 3, "sse": sse}), k


def test_sparsity_stats_hand_codes():
  codes = np.array([
      [0.0, 0.5, 0.0, 0.0],
      [0.2, 0.3, 0.0, 1e-4],  # 1e-4 is below the threshold: unit 3 is dead.
      [0.0, -0.4, 0.0, 0.0],
  ])
  out = evaluation.sparsity_stats(codes, threshold=1e-3)
  assert out["l0"] == pytest.approx(4.0 / 3.0)
  assert out["l0_threshold"] == 1e-3
  assert out["mean_activation"] == pytest.approx((0.5 + 0.2 + 0.3 + 1e-4 - 0.4) / 12)
  assert out["mean_abs_activation"] == pytest.approx((0.5 + 0.2 + 0.3 + 1e-4 + 0.4) / 12)
  assert out["dead_fraction"] == pytest.approx(0.5)  # Units 2 and 3.


def test_sparsity_stats_count_units_above_1e_3_by_default():
  # The default threshold, 1e-3: 9e-4 is off, 1.1e-3 on (a changed default moves l0 and dead_fraction).
  codes = np.array([[9e-4, 1.1e-3, 0.0, 0.5], [-9e-4, 0.0, 0.0, -2e-3]])
  out = evaluation.sparsity_stats(codes)
  assert out["l0_threshold"] == 1e-3 and out["l0"] == 1.5 and out["dead_fraction"] == 0.5


@pytest.mark.parametrize("family,overrides,threshold,l0", [
    ("sparse", {"code_activation": "sigmoid"}, 0.1, 1.0),  # Bounded codes: on above 10% of full scale.
    ("sparse", {"code_activation": "tanh"}, 0.1, 1.0),
    ("sparse", {"sparsity": "l1", "code_activation": "relu"}, 1e-3, 2.5),  # Exactly 0 when off: above 1e-3.
    ("undercomplete", {"code_activation": "linear"}, 1e-3, 2.5),
])
def test_the_sparsity_evaluator_counts_codes_above_the_family_threshold(family, overrides, threshold, l0):
  config = family_config(family)
  config.update(overrides)
  codes = np.array([[0.11, 0.09, 2e-3, 5e-4], [0.2, 0.05, 0.0, 1e-4]])
  ctx = evaluators.Context(config, families.get(family), None, None, {}, {}, codes)
  metrics = evaluators.sparsity_metrics(ctx)
  assert metrics["l0_threshold"] == threshold and metrics["l0"] == l0
  assert evaluators.l0_threshold(config) == threshold


def test_the_sparsity_evaluator_skips_a_variational_code():
  config = family_config("vae")
  ctx = evaluators.Context(config, families.get("vae"), None, None, {}, {}, np.ones((2, 3)))
  assert evaluators.sparsity_metrics(ctx) == {} and evaluators.l0_threshold(config) == 1e-3


def test_linear_probe_separable_and_pixels():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 200)
  features = rng.normal(size=(200, 5))
  features[:, 0] += 6.0 * (2 * labels - 1)
  assert evaluation.linear_probe(features[:150], labels[:150], features[150:], labels[150:]) == 1.0

  digits = datasets.load_digits()
  images, targets = digits.images / 16.0, digits.target
  first = evaluation.linear_probe(images[:600], targets[:600], images[600:900], targets[600:900])
  again = evaluation.linear_probe(images[:600], targets[:600], images[600:900], targets[600:900])
  assert first == again  # Deterministic.
  assert 0.85 < first <= 1.0


def test_jacobian_stats_linear_encoder():
  rng = np.random.default_rng(4)
  d, k = 4, 6  # k >= d, so every direction's gain lies in [sigma_min, sigma_max].
  a = jnp.asarray(rng.normal(size=(d, k)), jnp.float32)
  encode = jax.jit(lambda x: x.reshape(x.shape[0], -1) @ a)
  x = jnp.asarray(rng.uniform(size=(9, 2, 2, 1)), jnp.float32)
  out = evaluation.jacobian_stats(encode, x, jax.random.key(0), batch_size=4)
  assert out["jacobian_frobenius_sq"] == pytest.approx(float(jnp.sum(a**2)), rel=1e-5)
  singular = np.linalg.svd(np.asarray(a), compute_uv=False)
  assert singular.min() * 0.999 <= out["latent_sensitivity"] <= singular.max() * 1.001
  # Batch size does not change the random directions.
  same = evaluation.jacobian_stats(encode, x, jax.random.key(0), batch_size=9)
  assert same["latent_sensitivity"] == pytest.approx(out["latent_sensitivity"], rel=1e-5)


def test_jacobian_stats_uses_both_modes():
  rng = np.random.default_rng(5)
  a = jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)  # k < d: reverse mode.
  x = jnp.asarray(rng.uniform(size=(3, 6)), jnp.float32)
  out = evaluation.jacobian_stats(lambda v: jnp.tanh(v @ a), x, jax.random.key(1))
  expected = np.mean([np.sum(np.asarray(jax.jacfwd(lambda v: jnp.tanh(v @ a))(xi)) ** 2) for xi in x])
  assert out["jacobian_frobenius_sq"] == pytest.approx(expected, rel=1e-5)


def test_active_units_hand_data():
  means = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.05], [0.0, 1.0, -0.05], [0.0, -1.0, 0.0]])
  assert likelihood.active_units(means) == 1  # Variances 0, 1, 0.00125.
  assert likelihood.active_units(means, threshold=1e-3) == 2


def test_active_units_default_threshold_is_a_variance_of_0_01():
  # Population variances 0.009 and 0.011 either side of Burda et al.'s 0.01: one active unit by default.
  signs = np.array([[1.0], [-1.0], [1.0], [-1.0]])
  means = signs * np.sqrt([0.009, 0.011])
  np.testing.assert_allclose(means.var(axis=0), [0.009, 0.011])
  assert likelihood.active_units(means) == 1


def test_jacobian_stats_default_step_is_1e_3_rms_per_pixel():
  # z = sum(x^2) at x = 0: z(delta) - z(0) = ||delta||^2, so the gain is ||delta|| = eps * sqrt(d) = 1e-3 * 2.
  out = evaluation.jacobian_stats(lambda v: jnp.sum(jnp.square(v), axis=1, keepdims=True), np.zeros((3, 4)),
                                  jax.random.key(0))
  assert out["latent_sensitivity"] == pytest.approx(2e-3, rel=1e-4) and out["jacobian_frobenius_sq"] == 0.0


def _clipped_gaussian_mse(sigma: float, half_range: float = 0.5) -> float:
  """E[clip(sigma n, -a, a)^2], n ~ N(0, 1): the MSE of clip(0.5 + sigma n, 0, 1) around 0.5, by hand."""
  c = half_range / sigma
  inside = 2 * 0.5 * (1 + math.erf(c / math.sqrt(2))) - 1  # P(|n| < c)
  pdf = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
  return sigma**2 * (inside - 2 * c * pdf) + half_range**2 * (1 - inside)


def test_denoising_stats_default_corruptions_known_values():
  # Grey images (0.5) and a model that returns grey: the noisy PSNR of each default corruption is known by
  # hand (masking r: MSE 0.25 r; Gaussian sigma: the clipped MSE above), the denoised one is the floor's
  # 10 log10(1 / 1e-10) = 100 dB. 64 images of 32 x 32 pixels: about 0.05 dB of sampling noise.
  x = np.full((64, 32, 32, 1), 0.5, np.float32)
  grey = jax.jit(lambda v: jnp.full_like(v, 0.5))
  out = evaluation.denoising_stats(grey, x, jax.random.key(0))
  expected = {f"gaussian_{s}": -10 * math.log10(_clipped_gaussian_mse(s)) for s in (0.1, 0.3, 0.5)}
  expected |= {f"masking_{r}": -10 * math.log10(0.25 * r) for r in (0.1, 0.25, 0.4)}
  assert {k.split("/")[1] for k in out if k.startswith("psnr_noisy/")} == set(expected)
  for name, db in expected.items():
    assert out[f"psnr_noisy/{name}"] == pytest.approx(db, abs=0.2), name
    assert out[f"psnr_denoised/{name}"] == 100.0 and out[f"psnr_gain/{name}"] == pytest.approx(100.0 - db, abs=0.2)
  assert out["psnr_clean"] == 100.0


def test_denoising_stats_identity_model():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.uniform(size=(5, 3, 3, 1)), jnp.float32)
  identity = jax.jit(lambda v: jnp.clip(v, 0.0, 1.0))
  out = evaluation.denoising_stats(identity, x, jax.random.key(2), batch_size=2)
  assert out["psnr_clean"] == pytest.approx(100.0)
  for name in ("gaussian_0.1", "gaussian_0.3", "gaussian_0.5", "masking_0.1", "masking_0.25", "masking_0.4"):
    # Clipping is all the identity model does, so it gains exactly nothing over the clipped baseline.
    assert out[f"psnr_gain/{name}"] == pytest.approx(0.0, abs=1e-9)
    assert out[f"psnr_noisy/{name}"] < 100.0
  assert out["psnr_noisy/gaussian_0.1"] > out["psnr_noisy/gaussian_0.5"]
  assert out["psnr_noisy/masking_0.1"] > out["psnr_noisy/masking_0.4"]


# --------------------------------------------------------------------------------------------------
# IWAE against the exact marginal likelihood of a linear-Gaussian model:
# p(z) = N(0, I_k), p(x|z) = N(W z + b, s^2 I_d)  =>  log p(x) = log N(x | b, W W^T + s^2 I).
# W has orthogonal columns, so the exact posterior is diagonal and expressible by `encode`.

_D, _K, _SIGMA = 5, 2, 0.5


def _linear_gaussian():
  rng = np.random.default_rng(7)
  q, _ = np.linalg.qr(rng.normal(size=(_D, _K)))
  w = q * np.array([1.5, 0.7])
  b = rng.normal(size=_D) * 0.3
  z = rng.normal(size=(8, _K))
  x = z @ w.T + b + _SIGMA * rng.normal(size=(8, _D))
  cov = w @ w.T + _SIGMA**2 * np.eye(_D)
  centred = x - b
  _, logdet = np.linalg.slogdet(cov)
  mahalanobis = np.einsum("nd,de,ne->n", centred, np.linalg.inv(cov), centred)
  exact = -0.5 * (mahalanobis + logdet + _D * math.log(2 * math.pi))
  post_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / _SIGMA**2)  # (k,)
  post_mean = centred @ w / _SIGMA**2 * post_var  # (n, k)
  return w, b, x.astype(np.float32), exact, post_mean, post_var


def _decode_and_likelihood(w, b):
  w, b = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
  decode = lambda z: z @ w.T + b  # The "logits" are the Gaussian mean here.
  log_px = lambda mean, x: -reconstruction.gaussian(mean, x, log_scale=math.log(_SIGMA))
  return decode, log_px


def _encoder_from_w(w, b, *, mean_shift=0.0, logvar_shift=0.0):
  """An amortised encoder (a linear map of x) giving the exact posterior, optionally perturbed."""
  post_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / _SIGMA**2)
  proj = jnp.asarray(w / _SIGMA**2 * post_var, jnp.float32)  # (d, k)
  b_, logvar = jnp.asarray(b, jnp.float32), jnp.asarray(np.log(post_var) + logvar_shift, jnp.float32)
  shift = jnp.asarray(mean_shift * np.sqrt(post_var), jnp.float32)

  def encode(x):
    mean = (x - b_) @ proj + shift
    return mean, jnp.broadcast_to(logvar, mean.shape)

  return encode


def test_iwae_exact_posterior_has_zero_variance():
  w, b, x, exact, post_mean, post_var = _linear_gaussian()
  decode, log_px = _decode_and_likelihood(w, b)
  encode = _encoder_from_w(w, b)
  mean, logvar = encode(jnp.asarray(x))
  np.testing.assert_allclose(mean, post_mean, atol=1e-5)
  np.testing.assert_allclose(logvar[0], np.log(post_var), atol=1e-6)
  # log w = log p(x) for every z, so any k gives it exactly (k = 5 in a ragged chunk, batches padded).
  est = likelihood.iwae_log_likelihood(
      encode, decode, x, jax.random.key(4), num_samples=5, chunk_size=2, likelihood=log_px, batch_size=3)
  assert est.shape == (8,) and est.dtype == np.float64
  np.testing.assert_allclose(est, exact, atol=2e-4)


def test_iwae_wrong_posterior_converges_in_chunks():
  w, b, x, exact, _, _ = _linear_gaussian()
  decode, log_px = _decode_and_likelihood(w, b)
  # q(z|x): mean off by half a posterior std per dim, twice the posterior variance. Then
  # E[log w] = log p(x) - KL(q || p(z|x)) with KL = k * 0.5 * (2 + 0.25 - 1 - log 2) ~= 0.557.
  encode = _encoder_from_w(w, b, mean_shift=0.5, logvar_shift=math.log(2.0))
  kl_to_posterior = _K * 0.5 * (2.0 + 0.25 - 1.0 - math.log(2.0))
  decoded_rows = []

  def traced_decode(z):
    decoded_rows.append(z.shape[0])  # Runs at trace time: the largest latent batch decoded at once.
    return decode(z)

  def run(x, k, chunk, batch_size=4):
    return likelihood.iwae_log_likelihood(
        encode, traced_decode, x, jax.random.key(5), num_samples=k, chunk_size=chunk, likelihood=log_px,
        batch_size=batch_size)

  copies = 400  # k = 1 on 400 copies of x (distinct samples per copy): a Monte Carlo ELBO.
  one = run(np.tile(x, (copies, 1)), 1, 1, batch_size=8 * copies).reshape(copies, 8).mean(axis=0)
  assert np.mean(exact - one) == pytest.approx(kl_to_posterior, abs=0.1)
  decoded_rows.clear()
  many = run(x, 5000, 100)
  assert decoded_rows and max(decoded_rows) <= 100 * 4  # Chunked: never 5000 latents at once.
  assert np.max(np.abs(many - exact)) < 0.05
  assert np.mean(np.abs(many - exact)) < 0.05 * kl_to_posterior


def test_vae_terms_and_iwae_bernoulli():
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.uniform(size=(6, 2, 2, 1)) > 0.5, jnp.float32)
  proj = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  back = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  encode = lambda v: (v.reshape(v.shape[0], -1) @ proj, jnp.full((v.shape[0], 3), -1.0))
  decode = lambda z: (z @ back).reshape(z.shape[0], 2, 2, 1)
  key = jax.random.key(6)
  terms = likelihood.vae_terms(encode, decode, x, key, batch_size=4)
  # Reference: example i draws its one sample from fold_in(key, i).
  mean, logvar = encode(x)
  eps = jax.jit(jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (3,))))(jnp.arange(6))
  rec = reconstruction.bernoulli(decode(mean + jnp.exp(0.5 * logvar) * eps), x)
  kl = 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=1)
  assert terms["elbo_reconstruction"] == pytest.approx(float(rec.mean()), rel=1e-5)
  assert terms["elbo_kl"] == pytest.approx(float(kl.mean()), rel=1e-5)
  assert terms["negative_elbo"] == pytest.approx(terms["elbo_reconstruction"] + terms["elbo_kl"])
  est = likelihood.iwae_log_likelihood(encode, decode, x, key, num_samples=200, chunk_size=50)
  assert est.shape == (6,) and np.all(np.isfinite(est)) and np.all(est < 0)
  assert -est.mean() < terms["negative_elbo"]  # Much tighter than a one-sample ELBO here.
  gaussian = likelihood.vae_terms(encode, decode, x, key, likelihood="gaussian")
  assert gaussian["elbo_kl"] == pytest.approx(terms["elbo_kl"])
  assert gaussian["elbo_reconstruction"] > 4 * 0.5 * math.log(2 * math.pi)  # Unit variance: >= the constant.
  with pytest.raises(ValueError, match="unknown likelihood"):
    likelihood.vae_terms(encode, decode, x, key, likelihood="poisson")


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_named_likelihoods_are_minus_their_reconstruction_terms(name):
  # The IWAE estimate's fast named likelihoods (broadcast over samples) against the definition, minus the
  # reconstruction term of that kind, passed as a callable: the same draws, so the same estimate.
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.uniform(size=(5, 2, 2, 1)), jnp.float32)
  proj = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  back = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  encode = lambda v: (v.reshape(v.shape[0], -1) @ proj, jnp.full((v.shape[0], 3), -0.5))
  decode = lambda z: (z @ back).reshape(z.shape[0], 2, 2, 1)
  defined = lambda logits, v: -reconstruction.from_logits(logits, v, kind=name)
  run = lambda likelihood_: likelihood.iwae_log_likelihood(encode, decode, x, jax.random.key(2), num_samples=6,
                                                           chunk_size=4, likelihood=likelihood_)
  np.testing.assert_allclose(run(name), run(defined), rtol=1e-5)


def test_a_long_evaluation_logs_its_progress(monkeypatch, caplog):
  monkeypatch.setattr(batching, "PROGRESS_EVERY_S", 0.0)  # Every batch counts as "long".
  caplog.set_level("INFO")
  x = np.zeros((10, 2, 2, 1), np.float32)
  encode = lambda v: (v.reshape(v.shape[0], -1)[:, :3], jnp.zeros((v.shape[0], 3)))
  decode = lambda z: jnp.zeros((z.shape[0], 2, 2, 1))
  likelihood.iwae_log_likelihood(encode, decode, x, jax.random.key(0), num_samples=4, chunk_size=2, batch_size=4)
  assert "IWAE log-likelihood (4 samples): 4/10 examples" in caplog.text
  assert "8/10 examples" in caplog.text and "ETA" in caplog.text


def test_softplus_forward_equals_jax_softplus():
  x = jnp.array([-jnp.inf, -1000.0, -30.0, -2.0, -1e-3, 0.0, 1e-3, 2.0, 30.0, 1000.0, jnp.inf])
  np.testing.assert_allclose(jax.jit(likelihood.softplus_forward)(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-7)
  assert float(likelihood.softplus_forward(jnp.log(3.0))) == pytest.approx(np.log(4.0), rel=1e-6)  # log(1 + 3).
  assert np.isnan(likelihood.softplus_forward(jnp.nan))


def test_map_batches_pads_the_last_batch_and_drops_the_padding():
  x = np.arange(7, dtype=np.float32).reshape(7, 1) * 10
  y = np.arange(7, dtype=np.int32)
  calls = []

  def fn(scale, xb, yb, indices):
    calls.append((xb[:, 0].tolist(), indices.tolist()))
    return {"sum": xb[:, 0] * scale + yb, "index": indices}

  out = batching.map_batches(fn, (x, y), batch_size=3, args=(2.0,), with_indices=True)
  assert calls == [([0, 10, 20], [0, 1, 2]), ([30, 40, 50], [3, 4, 5]), ([60, 60, 60], [6, 6, 6])]  # Edge repeat.
  np.testing.assert_array_equal(out["sum"], np.arange(7) * 21)
  np.testing.assert_array_equal(out["index"], np.arange(7))
  calls.clear()
  single = batching.map_batches(lambda xb: xb * 2, (x,), batch_size=100)  # One batch of all 7, no indices.
  np.testing.assert_array_equal(single, x * 2)
  for arrays, size, match in (((x,), 0, "batch_size"), ((x[:0],), 2, "non-empty"), ((x, y[:5]), 2, "leading")):
    with pytest.raises(ValueError, match=match):
      batching.map_batches(lambda *b: b[0], arrays, batch_size=size)


def test_example_keys_do_not_depend_on_the_batch():
  key = jax.random.key(3)
  draws = lambda indices: jax.vmap(jax.random.uniform)(batching.example_keys(key, jnp.asarray(indices)))
  np.testing.assert_array_equal(draws([4, 5])[1], draws([5])[0])
  assert draws([4])[0] != draws([5])[0]
