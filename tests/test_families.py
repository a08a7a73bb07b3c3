"""The family objectives compose the terms as documented, and user terms plug in by import path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import data
from ae_jax import families
from ae_jax import hparams
from ae_jax import models
from ae_jax import program as program_lib
from ae_jax import user_terms
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import variational
from tests.conftest import family_config


def code_energy(forward: families.Forward) -> jax.Array:
  """A user penalty that lives only in this test file: ||z||^2 per example."""
  return jnp.sum(jnp.square(forward.code), axis=1)


def build(config, model):
  """The family's loss with the config's own hyperparameters and its step-0 state, as
  (params, batch, keys) -> (loss, terms)."""
  loss_fn, hp, state = families.build(config, model), hparams.from_config(config), families.init_state(config)

  def loss(params, batch, keys):
    value, (terms, _) = loss_fn(params, batch, keys, hp, state)
    return value, terms

  return loss


def _setup(family, **overrides):
  config = family_config(family)
  config.update(overrides)
  model = models.build(architecture=config.architecture, input_shape=(8, 8, 1), latent_dim=config.latent_dim,
                       widths=tuple(config.widths), activation=config.activation,
                       code_activation=config.code_activation, variational=family == "vae")
  params = models.init(model, jax.random.key(0), (8, 8, 1))
  batch = {"image": jax.random.uniform(jax.random.key(1), (6, 8, 8, 1)), "label": jnp.zeros(6, jnp.int32)}
  keys = jax.random.split(jax.random.key(2), 6)
  return config, model, params, batch, keys


# The loss from the named terms and the config's weights: what each family adds to its reconstruction.
_WEIGHTED_TERMS = {"undercomplete": {}, "denoising": {}, "sparse": {"loss_kl": "sparsity_weight"},
                   "contractive": {"loss_contractive": "contractive_weight"}, "vae": {"loss_kl": "beta"}}


def bernoulli_nll(logits, x) -> np.ndarray:
  """-log Bernoulli(x | sigmoid(logits)) per example, in float64 by hand: sum softplus(l) - x l."""
  logits = np.asarray(logits, np.float64).reshape(len(logits), -1)
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  return (np.logaddexp(0.0, logits) - x * logits).sum(axis=1)


def _with_output_bias(params, value, kernel_scale=1.0):
  """`params` with the decoder's output bias set to `value` (logits away from 0), its kernel scaled."""
  logits = {"kernel": kernel_scale * params["decoder"]["logits"]["kernel"],
            "bias": jnp.full_like(params["decoder"]["logits"]["bias"], value)}
  return {**params, "decoder": {**params["decoder"], "logits": logits}}


@pytest.mark.parametrize("family", families.NAMES)
def test_every_family_returns_scalar_and_named_terms(family):
  config, model, params, batch, keys = _setup(family)
  loss, terms = jax.jit(build(config, model))(params, batch, keys)
  assert loss.shape == () and np.isfinite(loss)
  weighted = _WEIGHTED_TERMS[family]
  assert set(terms) == {"loss", "loss_rec", *weighted}
  expected = terms["loss_rec"] + sum(config[weight] * terms[name] for name, weight in weighted.items())
  np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
  grads = jax.grad(lambda p: build(config, model)(p, batch, keys)[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_undercomplete_is_the_mean_reconstruction():
  config, model, params, batch, keys = _setup("undercomplete")
  loss, _ = build(config, model)(params, batch, keys)
  _, logits = model.apply({"params": params}, batch["image"])
  np.testing.assert_allclose(loss, bernoulli_nll(logits, batch["image"]).mean(), rtol=1e-5)


def test_sparse_kl_penalises_the_mean_code_against_rho_in_that_order():
  # KL(rho || rho_hat_j) summed over units, rho_hat_j unit j's mean sigmoid code over the batch (by hand).
  config, model, params, batch, keys = _setup("sparse", sparsity_weight=0.5, rho=0.2)
  loss, terms = build(config, model)(params, batch, keys)
  code, logits = (np.asarray(a, np.float64) for a in model.apply({"params": params}, batch["image"]))
  rho, rho_hat = 0.2, code.mean(axis=0)
  kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
  swapped = np.sum(rho_hat * np.log(rho_hat / rho) + (1 - rho_hat) * np.log((1 - rho_hat) / (1 - rho)))
  assert abs(kl - swapped) > 0.05 * kl  # The two directions are told apart here.
  np.testing.assert_allclose(terms["loss_kl"], kl, rtol=1e-5)
  rec = bernoulli_nll(logits, batch["image"]).mean()
  np.testing.assert_allclose(terms["loss_rec"], rec, rtol=1e-5)
  np.testing.assert_allclose(loss, rec + 0.5 * kl, rtol=1e-5)


def test_sparse_l1_penalises_the_code():
  # The batch mean of sum_j |z_j|: the code, not the output or the input.
  config, model, params, batch, keys = _setup("sparse", sparsity="l1", sparsity_weight=0.5,
                                              code_activation="linear")
  loss, terms = build(config, model)(params, batch, keys)
  code, logits = (np.asarray(a, np.float64) for a in model.apply({"params": params}, batch["image"]))
  l1 = np.abs(code).sum(axis=1).mean()
  np.testing.assert_allclose(terms["loss_l1"], l1, rtol=1e-5)
  np.testing.assert_allclose(loss, bernoulli_nll(logits, batch["image"]).mean() + 0.5 * l1, rtol=1e-5)


def test_denoising_with_no_noise_is_the_undercomplete_loss():
  config, model, params, batch, keys = _setup("denoising", noise="masking", noise_level=0.0)
  clean, _ = build(config, model)(params, batch, keys)
  config_u = family_config("undercomplete")
  config_u.update({"widths": config.widths, "latent_dim": config.latent_dim})
  np.testing.assert_allclose(clean, build(config_u, model)(params, batch, keys)[0], rtol=1e-6)


@pytest.mark.parametrize("noise,level", [("masking", 0.5), ("gaussian", 0.5), ("salt_and_pepper", 0.3)])
def test_denoising_reconstructs_the_clean_input_from_the_corrupted_one(noise, level):
  # At initialisation the output logits are near 0, where the Bernoulli loss is log 2 whatever the target: an
  # output bias of 3 makes the clean and the corrupted target differ, a larger kernel the clean and corrupted input.
  config, model, params, batch, keys = _setup("denoising", noise=noise, noise_level=level)
  params = _with_output_bias(params, 3.0, kernel_scale=4.0)
  loss, terms = build(config, model)(params, batch, keys)
  x = np.asarray(batch["image"])
  # Each example's noise comes from the second stream of its own key (fold_in(key, 1)).
  noise_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
  x_in = np.asarray(jax.vmap(lambda k, xi: corruption.corrupt(k, xi, kind=noise, level=level))(noise_keys, x))
  assert np.abs(x_in - x).mean() > 0.05  # The encoder saw a corrupted batch...
  logits = lambda images: np.asarray(model.apply({"params": params}, images)[1])
  expected = bernoulli_nll(logits(x_in), x).mean()  # ...and the loss compares its reconstruction with x.
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_rec"], expected, rtol=1e-5)
  for wrong in (bernoulli_nll(logits(x_in), x_in).mean(),  # Compared with the corrupted input.
                bernoulli_nll(logits(x), x).mean()):  # The clean input encoded: no corruption at all.
    assert abs(wrong - expected) > 1e-3 * expected, (wrong, expected)  # 100x the tolerance.
  # The same keys draw the same noise; others draw other noise.
  assert build(config, model)(params, batch, keys)[0] == loss
  assert build(config, model)(params, batch, keys[::-1])[0] != loss


def test_vae_loss_is_rec_plus_beta_kl():
  config, model, params, batch, keys = _setup("vae", beta=3.0)
  loss, terms = build(config, model)(params, batch, keys)
  np.testing.assert_allclose(loss, terms["loss_rec"] + 3.0 * terms["loss_kl"], rtol=1e-6)
  mean, logvar = model.apply({"params": params}, batch["image"], method="encode")
  np.testing.assert_allclose(terms["loss_kl"], variational.kl_standard_normal(mean, logvar).mean(), rtol=1e-6)


@pytest.mark.parametrize("path", ["auto", "jacfwd", "jacrev"])
@pytest.mark.parametrize("code_activation", ["linear", "sigmoid"])
def test_contractive_penalty_is_the_encoder_jacobians_squared_frobenius_norm(code_activation, path):
  # One layer z = s(x W + b): J = diag(s'(a)) W^T, so ||J||_F^2 = sum_j s'(a_j)^2 sum_i W_ij^2 (by hand),
  # sum(W^2) for a linear code, whatever x.
  config, model, params, batch, keys = _setup("contractive", widths=(), code_activation=code_activation,
                                              contractive_weight=2.0, contractive_path=path)
  loss, terms = build(config, model)(params, batch, keys)
  w = np.asarray(params["encoder"]["code"]["kernel"], np.float64)
  b = np.asarray(params["encoder"]["code"]["bias"], np.float64)
  x = np.asarray(batch["image"], np.float64).reshape(6, -1)
  if code_activation == "linear":
    penalty = np.full(6, np.square(w).sum())
  else:
    s = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    penalty = (np.square(s * (1 - s)) * np.square(w).sum(axis=0)).sum(axis=1)
  np.testing.assert_allclose(terms["loss_contractive"], penalty.mean(), rtol=1e-5)
  rec = bernoulli_nll(model.apply({"params": params}, batch["image"])[1], x).mean()
  np.testing.assert_allclose(loss, rec + 2.0 * penalty.mean(), rtol=1e-5)


def test_undercomplete_linear_autoencoder_spans_the_pca_subspace():
  # Data near a 3-dim subspace of 16 pixels, in sigmoid's near-linear range around 0.5: a linear AE with 3
  # codes trained on the squared error learns PCA's subspace (Baldi & Hornik 1989). The decoder's columns
  # span it; the encoder's components off the subspace meet only the noise, so they are left free.
  rng = np.random.default_rng(0)
  n, d, k = 256, 16, 3
  basis = np.linalg.qr(rng.normal(size=(d, k)))[0].T
  x = 0.5 + 0.04 * (rng.normal(size=(n, k)) * [3.0, 2.0, 1.5]) @ basis + 0.002 * rng.normal(size=(n, d))
  images, labels = x.reshape(n, 4, 4, 1).astype(np.float32), np.zeros(n, np.int32)
  config = family_config("undercomplete")
  config.update(widths=(), latent_dim=k, code_activation="linear", reconstruction="squared_error", batch_size=64,
                learning_rate=1e-2, num_steps=1000)
  program = program_lib.build(config, data.Dataset(images, labels, images, labels, "subspace"),
                              [hparams.from_config(config)], devices=jax.devices()[:1])
  state, _ = program.feed.run(program.init_state(), program.hp, 0, 1000)
  program.feed.close()
  params = jax.tree.map(lambda a: np.asarray(a)[0], state.params)
  centred = x - x.mean(axis=0)
  pca = np.linalg.svd(centred, full_matrices=False)[2][:k].T  # (d, k): the top principal directions.
  decoder = np.asarray(params["decoder"]["logits"]["kernel"], np.float64).T  # (d, k)
  off = np.linalg.norm(decoder - pca @ (pca.T @ decoder)) / np.linalg.norm(decoder)
  assert off < 0.05, off  # A random 3-dim subspace leaves about sqrt(13 / 16) = 0.9 off.
  recon = jax.nn.sigmoid(program.model.apply({"params": params}, images)[1])
  sse = np.square(np.asarray(recon, np.float64).reshape(n, -1) - x).sum(axis=1).mean()
  pca_sse = np.square(centred - centred @ pca @ pca.T).sum(axis=1).mean()
  assert sse < 2 * pca_sse, (sse, pca_sse)  # Near the linear optimum (PCA's), which is 0.04^2 * 10 below the mean.


def _vae_known_posterior(objective="elbo", samples=1, *, beta=1.0, q_mean=0.0, q_logvar=0.0):
  """A VAE whose decoder ignores z (a zero output kernel, output logits b), so p(z | x) = p(z) and
  log p(x) = log Bernoulli(x | sigmoid(b)) in closed form; its encoder gives q(z | x) = N(q_mean,
  exp(q_logvar)) for every x (zero head kernels). Returns the family's loss, the batch and log p(x)."""
  config, model, params, batch, keys = _setup("vae", vae_objective=objective, vae_samples=samples, beta=beta)
  params = jax.tree.map(np.array, params)
  b = np.random.default_rng(0).normal(0.0, 2.0, params["decoder"]["logits"]["bias"].shape).astype(np.float32)
  params["decoder"]["logits"] = {"kernel": np.zeros_like(params["decoder"]["logits"]["kernel"]), "bias": b}
  for head, value in (("mean", q_mean), ("logvar", q_logvar)):
    bias = np.broadcast_to(np.asarray(value, np.float32), params["encoder"][head]["bias"].shape)
    params["encoder"][head] = {"kernel": np.zeros_like(params["encoder"][head]["kernel"]), "bias": bias.copy()}
  log_px = -bernoulli_nll(np.broadcast_to(b, (6, b.size)), batch["image"])
  loss_fn = jax.jit(build(config, model))
  return lambda k: loss_fn(params, batch, k), keys, log_px


@pytest.mark.parametrize("objective,samples", [("elbo", 1), ("elbo", 3), ("iwae", 1), ("iwae", 5)])
def test_vae_bounds_are_log_px_when_q_is_the_posterior(objective, samples):
  # q = p(z | x) = N(0, I): every importance weight is p(x), so the ELBO and the IWAE bound (of any k: its
  # mean of k equal weights) are log p(x) exactly, and the KL is 0.
  loss_fn, keys, log_px = _vae_known_posterior(objective, samples)
  loss, terms = loss_fn(keys)
  np.testing.assert_allclose(loss, -log_px.mean(), rtol=1e-5)
  np.testing.assert_allclose(terms["loss_rec"], -log_px.mean(), rtol=1e-5)
  assert abs(float(terms["loss_kl"])) < 1e-6


_Q_MEAN = np.array([0.3, -0.3, 0.2, 0.0, -0.1, 0.25, 0.0, 0.1])
_Q_LOGVAR = np.array([0.3, -0.3, 0.0, 0.2, -0.2, 0.1, 0.0, -0.1])
_KL = 0.5 * np.sum(_Q_MEAN**2 + np.exp(_Q_LOGVAR) - 1.0 - _Q_LOGVAR)  # KL(q || p(z | x)), by hand.


def test_vae_negative_elbo_is_minus_log_px_plus_beta_kl_exactly():
  # p(x | z) does not depend on z, so -ELBO = -log p(x) + beta KL(q || N(0, I)) with no sampling noise.
  loss_fn, keys, log_px = _vae_known_posterior("elbo", 2, beta=3.0, q_mean=_Q_MEAN, q_logvar=_Q_LOGVAR)
  loss, terms = loss_fn(keys)
  np.testing.assert_allclose(terms["loss_kl"], _KL, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_rec"], -log_px.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, -log_px.mean() + 3.0 * _KL, rtol=1e-5)


def test_iwae_goes_from_the_elbo_at_one_sample_to_log_px_with_many():
  # For a q off the posterior: IWAE(k = 1) is the ELBO in expectation, -log p(x) + KL; IWAE(k = 200) is
  # within a few thousandths of a nat of -log p(x) (the gap is about Var(w) / (2 k)).
  many = jax.random.split(jax.random.key(5), 200)
  means = {}
  for k in (1, 200):
    loss_fn, _, log_px = _vae_known_posterior("iwae", k, q_mean=_Q_MEAN, q_logvar=_Q_LOGVAR)
    losses = np.asarray(jax.vmap(lambda key: loss_fn(jax.random.split(key, 6))[0])(many), np.float64)
    means[k] = (losses.mean() + log_px.mean(), losses.std() / np.sqrt(len(many)))  # Minus -log p(x).
  (one, se_one), (lots, se_lots) = means[1], means[200]
  assert abs(one - _KL) < 4 * se_one + 1e-3, (one, se_one, _KL)
  assert 0 <= lots + 4 * se_lots and lots < 0.02 * _KL + 4 * se_lots, (lots, se_lots, _KL)


def test_user_term_by_import_path():
  config, model, params, batch, keys = _setup("undercomplete", extra_terms="tests.test_families:code_energy=0.25")
  loss, terms = build(config, model)(params, batch, keys)
  code, _ = model.apply({"params": params}, batch["image"])
  np.testing.assert_allclose(terms["loss_code_energy"], jnp.mean(jnp.sum(code**2, 1)), rtol=1e-6)
  np.testing.assert_allclose(loss, terms["loss_rec"] + 0.25 * terms["loss_code_energy"], rtol=1e-6)


@pytest.mark.parametrize("spec,match", [
    ("no_colon", "package.module:function"),
    ("no_such_module_xyz:f", "cannot import"),
    ("tests.test_families:missing", "has no function"),
    ("tests.test_families:code_energy=heavy", "not a number"),
])
def test_bad_user_terms(spec, match):
  with pytest.raises(ValueError, match=match):
    user_terms.extra_terms(spec)


def test_unknown_family():
  config, model, *_ = _setup("undercomplete")
  config.family = "adversarial"
  with pytest.raises(ValueError, match="unknown family"):
    build(config, model)


def _topk_setup(**overrides):
  """TopK with dead_after=1 (<= the batch of 6): dead = fired for no example of the batch."""
  config = family_config("sparse")
  config.update({"sparsity": "topk", "code_activation": "linear", "latent_dim": 12, "topk": 3, "auxk": 4,
                 "dead_after": 1, **overrides})
  model = families.model_from_config(config, (8, 8, 1))
  params = models.init(model, jax.random.key(0), (8, 8, 1))
  batch = {"image": jax.random.uniform(jax.random.key(1), (6, 8, 8, 1)), "label": jnp.zeros(6, jnp.int32)}
  return config, model, params, batch, jax.random.split(jax.random.key(2), 6)


def test_topk_code_has_k_active_units_and_auxk_revives_dead_ones():
  config, model, params, batch, keys = _topk_setup()
  code, sown = model.apply({"params": params}, batch["image"], method="encode", mutable=["intermediates"])
  # The code is relu of each example's 3 largest pre-codes (by hand), 0 elsewhere.
  pre = np.asarray(sown["intermediates"]["encoder"]["pre_code"][0])
  top3 = np.argsort(-pre, axis=1)[:, :3]
  expected = np.zeros_like(pre)
  np.put_along_axis(expected, top3, np.maximum(np.take_along_axis(pre, top3, axis=1), 0.0), axis=1)
  np.testing.assert_array_equal(code, expected)
  assert np.sum(expected > 0) > 2 * 6  # Most of the top 3 are positive here: k is told apart from k - 1.
  loss, terms = build(config, model)(params, batch, keys)
  assert terms["batch_dead_fraction"] > 0 and terms["loss_auxk"] > 0
  np.testing.assert_allclose(loss, terms["loss_rec"] + config.auxk_weight * terms["loss_auxk"], rtol=1e-6)
  # The AuxK gradient reaches the dead units' encoder weights, which the main loss never touches.
  dead = np.asarray(np.sum(np.asarray(code) > 0, axis=0) == 0)
  grad_aux = jax.grad(lambda p: build(config, model)(p, batch, keys)[1]["loss_auxk"])(params)
  assert np.abs(np.asarray(grad_aux["encoder"]["code"]["kernel"])[:, dead]).sum() > 0


def test_auxk_loss_is_the_dead_units_model_of_the_residual_by_hand():
  # AuxK (Gao et al. 2024): relu of the auxk = 4 largest pre-codes among the dead units (silent for the whole
  # batch here) is added to the code; what that changes in the decoded image is compared with the residual.
  # TopK 2 of 16 units for 6 examples leaves at least 4 dead; a code bias of 1 makes their pre-codes positive.
  config, model, params, batch, keys = _topk_setup(latent_dim=16, topk=2)
  params["encoder"]["code"]["bias"] = jnp.ones(16)
  _, terms = build(config, model)(params, batch, keys)
  x = np.asarray(batch["image"], np.float64).reshape(6, -1)
  code, sown = model.apply({"params": params}, batch["image"], method="encode", mutable=["intermediates"])
  code, pre = np.asarray(code), np.asarray(sown["intermediates"]["encoder"]["pre_code"][0])
  dead = ~(code > 0).any(axis=0)
  decode = lambda z: 1 / (1 + np.exp(-np.asarray(model.apply({"params": params}, jnp.asarray(z, jnp.float32),
                                                                     method="decode"), np.float64).reshape(6, -1)))

  def auxk(k):
    masked = np.where(dead, pre, -np.inf)
    kth = np.sort(masked, axis=1)[:, -k:-k + 1]
    aux = np.where(dead & (masked >= kth), np.maximum(pre, 0.0), 0.0)
    return np.square(decode(code + aux) - decode(code) - (x - decode(code))).sum(axis=1).mean()

  np.testing.assert_allclose(terms["loss_auxk"], auxk(4), rtol=1e-4)
  assert abs(auxk(4) - auxk(2)) > 1e-3 * auxk(4)  # auxk is told apart from topk (2) here.


def test_auxk_is_exactly_zero_without_dead_units():
  config, model, params, batch, keys = _topk_setup(latent_dim=3, topk=3)  # Every unit can fire...
  params = jax.tree.map(lambda p: p, params)
  params["encoder"]["code"]["bias"] = jnp.full(3, 100.0)  # ...and does, for every example.
  _, terms = build(config, model)(params, batch, keys)
  assert terms["batch_dead_fraction"] == 0 and terms["loss_auxk"] == 0


def test_topk_dead_units_are_those_silent_for_dead_after_examples():
  # dead_after=20 examples, batches of 6: a unit silent in this batch is dead once its count reaches 20.
  config, model, params, batch, keys = _topk_setup(dead_after=20)
  loss_fn, hp = families.build(config, model), hparams.from_config(config)
  code = np.asarray(model.apply({"params": params}, batch["image"], method="encode"))
  silent = ~(code > 0).any(axis=0)
  assert 2 <= silent.sum() < 12  # This init leaves some units silent for the whole batch.
  since = np.where(silent, 14, 0).astype(np.int32)  # Silent so far for 14 examples: 20 with this batch.
  since[np.flatnonzero(silent)[0]] = 13  # ...but this one only 19: not yet dead.
  loss, (terms, state) = loss_fn(params, batch, keys, hp, {"examples_since_fired": jnp.asarray(since)})
  np.testing.assert_array_equal(state["examples_since_fired"], np.where(silent, since + 6, 0))
  assert terms["batch_dead_fraction"] == pytest.approx(silent.mean())
  assert terms["dead_fraction_window"] == pytest.approx((silent.sum() - 1) / 12) and terms["loss_auxk"] > 0
  np.testing.assert_allclose(loss, terms["loss_rec"] + config.auxk_weight * terms["loss_auxk"], rtol=1e-6)
  # At step 0 (all counts 0) nothing is dead yet: AuxK waits for dead_after examples.
  _, (terms, _) = loss_fn(params, batch, keys, hp, families.init_state(config))
  assert terms["dead_fraction_window"] == 0 and terms["loss_auxk"] == 0 and terms["batch_dead_fraction"] > 0


def test_hyperparameters_are_data_one_compile_serves_every_value():
  config, model, params, batch, keys = _setup("vae")
  loss_fn = jax.jit(families.build(config, model))
  hp = hparams.from_config(config)
  losses = [loss_fn(params, batch, keys, {**hp, "beta": jnp.float32(beta)}, {}) for beta in (0.0, 1.0, 4.0)]
  assert loss_fn._cache_size() == 1  # pylint: disable=protected-access
  for (loss, (terms, _)), beta in zip(losses, (0.0, 1.0, 4.0)):
    np.testing.assert_allclose(loss, terms["loss_rec"] + beta * terms["loss_kl"], rtol=1e-6)


def wrong_shape(forward: families.Forward) -> jax.Array:
  """A user term that returns one value per code unit instead of one per example."""
  return jnp.sum(forward.code, axis=0)


def test_user_term_of_the_wrong_shape_is_named_while_tracing():
  config, model, params, batch, keys = _setup("undercomplete", extra_terms="tests.test_families:wrong_shape")
  with pytest.raises(ValueError, match=r"term .wrong_shape. must return one float per example, shape \(B,\) = \(6,\)"):
    jax.eval_shape(build(config, model), params, batch, keys)


def _vae_loss(objective, samples, **overrides):
  config, model, params, batch, keys = _setup("vae", vae_objective=objective, vae_samples=samples, **overrides)
  return config, model, params, batch, keys, jax.jit(build(config, model))


def test_iwae_with_one_sample_is_the_elbo_of_that_sample():
  *_, elbo_fn = _vae_loss("elbo", 1)
  config, model, params, batch, keys, iwae_fn = _vae_loss("iwae", 1)
  x = batch["image"]
  mean, logvar = model.apply({"params": params}, x, method="encode")
  z = jax.vmap(variational.reparameterize)(keys, mean, logvar)  # The sample the objectives draw.
  rec = reconstruction.bernoulli(model.apply({"params": params}, z, method="decode"), x)
  sampled_kl = variational.gaussian_log_prob(z, mean, logvar) - variational.gaussian_log_prob(z)
  iwae, terms = iwae_fn(params, batch, keys)
  np.testing.assert_allclose(iwae, (rec + sampled_kl).mean(), rtol=1e-6)  # Exactly, for the same sample.
  elbo, elbo_terms = elbo_fn(params, batch, keys)
  np.testing.assert_allclose(elbo, (rec + variational.kl_standard_normal(mean, logvar)).mean(), rtol=1e-6)
  assert terms["loss_rec"] == elbo_terms["loss_rec"]  # The same sample's reconstruction...
  # ...and the sampled KL is the analytic one in expectation: over many keys, IWAE(k=1) -> ELBO.
  many = jax.random.split(jax.random.key(3), 400)
  diffs = jax.vmap(lambda k: iwae_fn(params, batch, jax.random.split(k, 6))[0]
                   - elbo_fn(params, batch, jax.random.split(k, 6))[0])(many)
  assert abs(float(diffs.mean())) < 4 * float(diffs.std()) / np.sqrt(len(many)) + 1e-3


def test_iwae_bound_does_not_decrease_with_k():
  bounds = []
  for k in (1, 5, 25):
    _, _, params, batch, _, loss_fn = _vae_loss("iwae", k)
    many = jax.random.split(jax.random.key(4), 200)
    losses = jax.vmap(lambda key: loss_fn(params, batch, jax.random.split(key, 6))[0])(many)
    bounds.append((float(-losses.mean()), float(losses.std()) / np.sqrt(len(many))))
  (b1, _), (b5, se5), (b25, se25) = bounds
  assert b1 < b5 < b25, bounds  # A fixed model: more samples, a tighter bound (in expectation).
  assert b5 - b1 > 2 * se5 and b25 - b5 > 2 * se25, bounds


def test_iwae_gradients_are_finite_and_differ_from_the_elbo():
  _, _, params, batch, keys, iwae_fn = _vae_loss("iwae", 5)
  *_, elbo_fn = _vae_loss("elbo", 5)
  g_iwae = jax.grad(lambda p: iwae_fn(p, batch, keys)[0])(params)
  g_elbo = jax.grad(lambda p: elbo_fn(p, batch, keys)[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(g_iwae))
  assert not np.allclose(g_iwae["decoder"]["logits"]["kernel"], g_elbo["decoder"]["logits"]["kernel"])


def test_k_sample_elbo_averages_the_samples():
  config, model, params, batch, keys, loss_fn = _vae_loss("elbo", 3)
  _, terms = loss_fn(params, batch, keys)
  loss, _ = loss_fn(params, batch, keys)
  mean, logvar = model.apply({"params": params}, batch["image"], method="encode")
  np.testing.assert_allclose(loss, terms["loss_rec"] + variational.kl_standard_normal(mean, logvar).mean(),
                             rtol=1e-6)
  one = _vae_loss("elbo", 1)[-1](params, batch, keys)[1]["loss_rec"]
  assert terms["loss_rec"] != one  # Three samples per example, not the one of k = 1.


def test_iwae_bound_known_values():
  # Equal weights: the bound is their common value; one dominant weight: log(w_max / k).
  np.testing.assert_allclose(variational.iwae_bound(jnp.full((4, 2), -3.0)), [-3.0, -3.0], rtol=1e-6)
  np.testing.assert_allclose(variational.iwae_bound(jnp.asarray([[0.0], [-1e4]])), [np.log(0.5)], rtol=1e-6)


@pytest.mark.parametrize("overrides,fragment", [
    ({"vae_objective": "vlb"}, "--config.vae_objective='vlb' is not one of: elbo, iwae"),
    ({"vae_samples": 0}, "--config.vae_samples=0 must be a positive int"),
    ({"vae_objective": "iwae", "beta": 2.0}, "--config.beta=2.0: the IWAE bound has no KL weight"),
])
def test_bad_vae_options_fail_in_one_line(overrides, fragment):
  from ae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = family_config("vae")
  config.update(overrides)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  assert fragment in str(e.value) and "\n" not in str(e.value)
