"""The family objectives compose the terms as documented, and user terms plug in by import path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import families
from ae_jax import hparams
from ae_jax import models
from ae_jax import user_terms
from ae_jax.losses import reconstruction
from ae_jax.losses import sparsity
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


@pytest.mark.parametrize("family", families.NAMES)
def test_every_family_returns_scalar_and_named_terms(family):
  config, model, params, batch, keys = _setup(family)
  loss, terms = jax.jit(build(config, model))(params, batch, keys)
  assert loss.shape == () and np.isfinite(loss)
  assert terms["loss"] == loss and "loss_rec" in terms
  grads = jax.grad(lambda p: build(config, model)(p, batch, keys)[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_undercomplete_is_the_mean_reconstruction():
  config, model, params, batch, keys = _setup("undercomplete")
  loss, _ = build(config, model)(params, batch, keys)
  _, logits = model.apply({"params": params}, batch["image"])
  np.testing.assert_allclose(loss, reconstruction.bernoulli(logits, batch["image"]).mean(), rtol=1e-6)


def test_sparse_kl_adds_weighted_penalty():
  config, model, params, batch, keys = _setup("sparse", sparsity_weight=0.5)
  loss, terms = build(config, model)(params, batch, keys)
  code, _ = model.apply({"params": params}, batch["image"])
  np.testing.assert_allclose(terms["loss_kl"], sparsity.kl_divergence(code, rho=config.rho).sum(), rtol=1e-5)
  np.testing.assert_allclose(loss, terms["loss_rec"] + 0.5 * terms["loss_kl"], rtol=1e-6)


def test_denoising_compares_reconstruction_of_noisy_input_with_clean_input():
  config, model, params, batch, keys = _setup("denoising", noise="masking", noise_level=0.0)
  clean, _ = build(config, model)(params, batch, keys)
  config_u = family_config("undercomplete")
  config_u.update({"widths": config.widths, "latent_dim": config.latent_dim})
  np.testing.assert_allclose(clean, build(config_u, model)(params, batch, keys)[0], rtol=1e-6)
  config.noise_level = 0.5
  noisy, _ = build(config, model)(params, batch, keys)
  assert noisy != clean  # The encoder saw a different input; the target stayed clean.
  # Different per-example keys give different noise; the same keys give the same loss.
  assert noisy == build(config, model)(params, batch, keys)[0]


def test_vae_loss_is_rec_plus_beta_kl():
  config, model, params, batch, keys = _setup("vae", beta=3.0)
  loss, terms = build(config, model)(params, batch, keys)
  np.testing.assert_allclose(loss, terms["loss_rec"] + 3.0 * terms["loss_kl"], rtol=1e-6)
  mean, logvar = model.apply({"params": params}, batch["image"], method="encode")
  np.testing.assert_allclose(terms["loss_kl"], variational.kl_standard_normal(mean, logvar).mean(), rtol=1e-6)


def test_contractive_adds_weighted_jacobian_penalty():
  config, model, params, batch, keys = _setup("contractive", contractive_weight=2.0)
  loss, terms = build(config, model)(params, batch, keys)
  assert terms["loss_contractive"] > 0
  np.testing.assert_allclose(loss, terms["loss_rec"] + 2.0 * terms["loss_contractive"], rtol=1e-6)


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
  code = model.apply({"params": params}, batch["image"], method="encode")
  assert np.all(np.sum(np.asarray(code) > 0, axis=1) <= 3)
  loss, terms = build(config, model)(params, batch, keys)
  assert terms["batch_dead_fraction"] > 0 and terms["loss_auxk"] > 0
  np.testing.assert_allclose(loss, terms["loss_rec"] + config.auxk_weight * terms["loss_auxk"], rtol=1e-6)
  # The AuxK gradient reaches the dead units' encoder weights, which the main loss never touches.
  dead = np.asarray(np.sum(np.asarray(code) > 0, axis=0) == 0)
  grad_aux = jax.grad(lambda p: build(config, model)(p, batch, keys)[1]["loss_auxk"])(params)
  assert np.abs(np.asarray(grad_aux["encoder"]["code"]["kernel"])[:, dead]).sum() > 0


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
  with pytest.raises(ValueError, match=r"extra term 'wrong_shape' must return one float per example, shape \(6,\)"):
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
