"""End-of-run report: metrics that agree with `evaluation` computed by hand, pictures, and the table.

Models are untrained (evaluation is what is under test), and each is evaluated once per module,
because compiling the evaluation programs is most of the cost on a CPU.
"""

import dataclasses
import os

import jax
import numpy as np
from PIL import Image
import pytest
import threadpoolctl

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import evaluation
from ae_jax import evaluators
from ae_jax import families
from ae_jax import likelihood
from ae_jax import models
from ae_jax import report
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from ae_jax.losses import variational
from tests.conftest import family_config


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def _setup(family, shape, **overrides):
  config = family_config(family)
  config.update(overrides)
  model = families.model_from_config(config, shape)
  return config, model, jax.device_get(models.init(model, jax.random.key(0), shape))


@pytest.fixture(scope="module")
def sparse(digits):
  config, model, params = _setup("sparse", digits.example_shape)
  return config, model, params, report.evaluate_model(config, model, params, digits, jax.random.key(1))


@pytest.fixture(scope="module")
def vae(digits):
  # A posterior of variance e^-30 makes the sampled ELBO terms deterministic, so they have exact answers.
  config, model, params = _setup("vae", digits.example_shape, reconstruction="squared_error")
  params["encoder"]["logvar"] = {"kernel": np.zeros_like(params["encoder"]["logvar"]["kernel"]),
                                 "bias": np.full_like(params["encoder"]["logvar"]["bias"], -30.0)}
  return config, model, params, report.evaluate_model(config, model, params, digits, jax.random.key(1))


COMMON_KEYS = {"mse", "sse", "fraction_variance_explained", "pca_mse", "pca_sse", "probe_accuracy",
               "probe_accuracy_pixels", "jacobian_frobenius_sq", "latent_sensitivity", "l0", "l0_threshold",
               "mean_activation", "mean_abs_activation", "dead_fraction", "psnr_clean"}
DENOISING_KEYS = {f"psnr_{kind}/{name}" for kind in ("noisy", "denoised", "gain")
                  for name in ("gaussian_0.1", "gaussian_0.3", "gaussian_0.5", "masking_0.1", "masking_0.25",
                               "masking_0.4")}
VAE_KEYS = {"negative_elbo", "elbo_reconstruction", "elbo_kl", "log_likelihood", "active_units"}
HEAD_ORDER = ["mse", "sse", "fraction_variance_explained", "pca_mse", "pca_sse", "probe_accuracy",
              "probe_accuracy_pixels", "jacobian_frobenius_sq", "latent_sensitivity"]
DENOISING_ORDER = ["psnr_clean"] + [f"psnr_{kind}/{name}" for name in ("gaussian_0.1", "gaussian_0.3", "gaussian_0.5",
                                                                      "masking_0.1", "masking_0.25", "masking_0.4")
                                    for kind in ("noisy", "denoised", "gain")]


def test_metric_keys_are_shared_by_families_and_finite(sparse, vae):
  assert set(sparse[3]) == COMMON_KEYS | DENOISING_KEYS | {"rho"}
  # A VAE's codes are unbounded posterior means: no L0 rows beside its active units.
  assert set(vae[3]) == (COMMON_KEYS - set(report.SPARSITY_METRICS)) | DENOISING_KEYS | VAE_KEYS
  for metrics in (sparse[3], vae[3]):
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values()), metrics


@pytest.mark.parametrize("evaluate, family, expected", [
    ("quick", "sparse", {"mse", "sse", "fraction_variance_explained", "l0", "l0_threshold", "mean_activation",
                         "mean_abs_activation", "dead_fraction", "rho"}),
    ("quick", "vae", {"mse", "sse", "fraction_variance_explained"} | (VAE_KEYS - {"log_likelihood"})),
    ("pca,likelihood", "vae", {"mse", "sse", "fraction_variance_explained", "pca_mse", "pca_sse"} | VAE_KEYS),
])
def test_evaluate_picks_the_metric_groups_and_keeps_their_values(evaluate, family, expected, sparse, vae, digits):
  config, model, params, full = {"sparse": sparse, "vae": vae}[family]
  config = config.copy_and_resolve_references()
  config.evaluate = evaluate
  metrics = report.evaluate_model(config, model, params, digits, jax.random.key(1))
  assert set(metrics) == expected
  assert list(metrics) == [k for k in full if k in expected]  # The full evaluation's order.
  assert metrics == pytest.approx({k: full[k] for k in expected}, rel=1e-6)  # Same keys draw the same noise.


def test_metrics_come_in_the_registry_order(sparse, vae):
  # eval.json and the printed table keep this order: the registry's, then each evaluator's own.
  assert list(sparse[3]) == HEAD_ORDER + list(report.SPARSITY_METRICS) + ["rho"] + DENOISING_ORDER
  assert list(vae[3]) == HEAD_ORDER + DENOISING_ORDER + ["negative_elbo", "elbo_reconstruction", "elbo_kl",
                                                         "log_likelihood", "active_units"]


def test_the_registry_runs_the_always_on_evaluators_and_the_selected_groups():
  assert set(evaluators.EVALUATORS) - set(evaluators.ALWAYS) == set(config_lib.EVAL_GROUPS)
  config = family_config("sparse")
  for evaluate, expected in (("quick", ["reconstruction", "sparsity", "elbo", "active_units"]),
                             ("denoising,pca", ["reconstruction", "pca", "denoising", "elbo", "active_units"]),
                             ("full", list(evaluators.EVALUATORS))):
    config.evaluate = evaluate
    assert evaluators.selected(config_lib.eval_groups(config)) == expected


def test_reported_hparams_come_from_the_family_entry(monkeypatch, digits):
  config, model, params = _setup("undercomplete", digits.example_shape, evaluate="quick")
  plain = report.evaluate_model(config, model, params, digits, jax.random.key(1))
  assert "rho" not in plain
  entry = dataclasses.replace(families.get("undercomplete"),
                              reported_hparams=lambda c: {"rho": 0.25, "width": float(c.latent_dim)})
  monkeypatch.setitem(families.FAMILIES, "undercomplete", entry)
  metrics = report.evaluate_model(config, model, params, digits, jax.random.key(1))
  assert list(metrics) == list(plain) + ["rho", "width"]  # Beside the sparsity metrics, which they read.
  assert metrics["rho"] == 0.25 and metrics["width"] == config.latent_dim
  config.evaluate = "pca"
  assert "rho" not in report.evaluate_model(config, model, params, digits, jax.random.key(1))


def test_iwae_samples_0_skips_only_the_likelihood(vae, digits):
  config, model, params, full = vae
  config = config.copy_and_resolve_references()
  config.iwae_samples = 0
  config_lib.validate(config)
  metrics = report.evaluate_model(config, model, params, digits, jax.random.key(1))
  assert set(metrics) == set(full) - {"log_likelihood"}


@pytest.mark.parametrize("value", ["fast", "", "probe,typo"])
def test_an_unknown_evaluate_value_is_one_config_error(value):
  config = family_config("vae")
  config.evaluate = value
  with pytest.raises(config_lib.ConfigError, match="--config.evaluate=.*full or quick"):
    config_lib.validate(config)


def test_the_defaults_that_decide_what_is_measured():
  # Each changes the numbers every run reports, so eval.json of runs before and after would not compare.
  from configs import default  # pylint: disable=g-import-not-at-top

  c = default.get_config()
  assert (c.evaluate, c.iwae_samples, c.probe_examples, c.probe_max_iter) == ("full", 1000, 0, 1000)
  assert (c.reconstruction, c.dead_after, c.binarize) == ("bernoulli", 10_000, "none")
  assert config_lib.EVAL_PRESETS == {"full": config_lib.EVAL_GROUPS, "quick": ("sparsity",)}
  assert set(config_lib.EVAL_GROUPS) == {"pca", "probe", "jacobian", "sparsity", "denoising", "likelihood"}
  # The probe's fixed training subset (PROBE_SUBSET_SEED), and which draws each evaluator's key makes.
  np.testing.assert_array_equal(evaluators.probe_subset(20, 5), [5, 6, 9, 10, 13])
  assert evaluators.KEY_NAMES == ("jacobian", "denoising", "elbo", "likelihood")


def test_metrics_match_evaluation_on_the_same_data(sparse, digits):
  config, model, params, metrics = sparse
  pca = evaluation.pca_baseline(digits.train_images, digits.test_images, num_components=config.latent_dim)
  assert (metrics["pca_mse"], metrics["pca_sse"]) == pytest.approx((pca["mse"], pca["sse"]))
  with threadpoolctl.threadpool_limits(limits=1):  # As in `evaluators.probe`; threads only slow this down.
    pixels = evaluation.linear_probe(digits.train_images, digits.train_labels, digits.test_images,
                                     digits.test_labels, max_iter=config.probe_max_iter)
  assert metrics["probe_accuracy_pixels"] == pytest.approx(pixels, abs=1 / 360)  # At most one image.
  encode = lambda x: model.apply({"params": params}, x, method="encode")
  codes_train, codes_test = encode(digits.train_images), encode(digits.test_images)
  with threadpoolctl.threadpool_limits(limits=1):
    probe = evaluation.linear_probe(codes_train, digits.train_labels, codes_test, digits.test_labels,
                                    max_iter=config.probe_max_iter)
  assert metrics["probe_accuracy"] == pytest.approx(probe, abs=1 / 360)
  recon = jax.nn.sigmoid(model.apply({"params": params}, codes_test, method="decode"))
  errors = evaluation.reconstruction_errors(digits.test_images, recon)
  assert (metrics["mse"], metrics["sse"]) == pytest.approx((errors["mse"], errors["sse"]), rel=1e-5)
  on = np.abs(np.asarray(codes_test)) > 0.1  # Sigmoid codes: on above 10% of full scale.
  assert metrics["l0_threshold"] == 0.1 and metrics["l0"] == pytest.approx(on.sum(axis=1).mean())
  assert metrics["rho"] == config.rho


def test_vae_terms_use_the_gaussian_likelihood_for_squared_error(vae, digits):
  config, model, params, metrics = vae
  assert reconstruction.likelihood(config.reconstruction) == "gaussian"
  mean, logvar = model.apply({"params": params}, digits.test_images, method="encode")
  logits = model.apply({"params": params}, mean, method="decode")
  nll = reconstruction.gaussian(jax.nn.sigmoid(logits), digits.test_images)
  assert metrics["elbo_reconstruction"] == pytest.approx(float(nll.mean()), rel=1e-4)
  kl = variational.kl_standard_normal(mean, logvar)
  assert metrics["elbo_kl"] == pytest.approx(float(kl.mean()), rel=1e-4)
  assert metrics["negative_elbo"] == pytest.approx(metrics["elbo_reconstruction"] + metrics["elbo_kl"])
  # Every importance weight is the ELBO's integrand here, so IWAE can only be above the ELBO.
  assert metrics["log_likelihood"] >= -metrics["negative_elbo"]
  assert metrics["active_units"] == likelihood.active_units(mean)


def test_likelihood_follows_the_reconstruction_kind():
  for kind, expected in (("bernoulli", "bernoulli"), ("gaussian", "gaussian"), ("squared_error", "gaussian")):
    assert reconstruction.likelihood(kind) == expected
  with pytest.raises(ValueError, match="unknown reconstruction 'poisson'"):
    reconstruction.likelihood("poisson")


def test_probe_is_skipped_without_labels_and_subsampled_on_large_sets():
  rng = np.random.default_rng(0)
  ds = data.Dataset(rng.random((64, 4, 4, 1), np.float32), np.full(64, -1, np.int32),
                    rng.random((8, 4, 4, 1), np.float32), np.full(8, -1, np.int32), "unlabeled")
  config, model, params = _setup("undercomplete", ds.example_shape, widths=(), latent_dim=3, num_pictures=4)
  metrics = report.evaluate_model(config, model, params, ds, jax.random.key(1))
  assert not any(k.startswith("probe") for k in metrics) and "mse" in metrics
  np.testing.assert_array_equal(evaluators.probe_subset(60_000), np.arange(60_000))  # 0: the whole split.
  subset = evaluators.probe_subset(60_000, 10_000)
  assert len(subset) == 10_000 == len(np.unique(subset))
  np.testing.assert_array_equal(subset, evaluators.probe_subset(60_000, 10_000))  # Fixed, not redrawn per run.
  np.testing.assert_array_equal(evaluators.probe_subset(100, 500), np.arange(100))


def test_vae_table_has_no_sparsity_rows(vae):
  metrics = vae[3]
  assert not set(report.SPARSITY_METRICS) & set(metrics)
  assert "sparsity:" not in report.format_table(metrics) and "active_units" in report.format_table(metrics)


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_probe_fits_on_training_images_preprocessed_as_the_test_images(binarize):
  ds = data.load("digits", binarize=binarize)
  config, model, params = _setup("undercomplete", ds.example_shape, binarize=binarize, probe_examples=600,
                                 probe_max_iter=50, widths=(), num_pictures=0)
  train_x, train_y = evaluators.probe_train_split(config, ds)
  subset = evaluators.probe_subset(len(ds.train_images), 600)
  assert len(train_x) == 600 and np.array_equal(train_y, ds.train_labels[subset])
  if binarize == "dynamic":  # The test split was binarized once by data.load: so are these.
    assert set(np.unique(ds.test_images)) == set(np.unique(train_x)) == {0.0, 1.0}
    assert abs(train_x.mean() - ds.train_images[subset].mean()) < 0.01  # One draw of the grey images.
    np.testing.assert_array_equal(train_x, evaluators.probe_train_split(config, ds)[0])  # The same draw each time.
  else:
    np.testing.assert_array_equal(train_x, ds.train_images[subset])
  metrics = report.evaluate_model(config, model, params, ds, jax.random.key(1))
  with threadpoolctl.threadpool_limits(limits=1):
    pixels = evaluation.linear_probe(train_x, train_y, ds.test_images, ds.test_labels, max_iter=50)
  assert metrics["probe_accuracy_pixels"] == pixels


def _assert_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] > 0


def test_pictures_per_family(sparse, vae, digits, tmp_path):
  history = [{"step": s, "loss": 1.0 / s, "loss_rec": 1.0 / s, "test_loss": 2.0 / s} for s in (10, 20)]
  for family, (config, model, params, _) in (("sparse", sparse), ("vae", vae)):
    config = config.copy_and_resolve_references()
    config.num_pictures = 5
    workdir = str(tmp_path / family)
    paths = report.save_pictures(config, model, params, digits, workdir, jax.random.key(2), history)
    extra = {"sparse": {"filters"}, "vae": {"samples", "interpolations"}}[family]
    assert set(paths) == {"reconstructions", "denoising", "latent_scatter", "curves"} | extra
    for name, path in paths.items():
      assert path == str(tmp_path / family / f"{name}.png")
      _assert_png(path)
  with Image.open(tmp_path / "vae" / "denoising.png") as image:  # 5 rows of 5 tiles of 32 px + 1 px pads.
    assert image.size == (1 + 5 * 33, 1 + 5 * 33)
  config = sparse[0].copy_and_resolve_references()
  config.num_pictures = 0
  workdir = str(tmp_path / "none")
  assert not report.save_pictures(config, sparse[1], sparse[2], digits, workdir, jax.random.key(2), history)
  assert not os.path.exists(tmp_path / "none")


def test_denoising_picture_draws_the_corruptions_of_losses():
  x = np.full((40, 8, 8, 1), 0.5, np.float32)
  masked, noisy = map(np.asarray, report._display_corruptions(jax.random.key(3), x))
  masking_key, gaussian_key = jax.random.split(jax.random.key(3))
  np.testing.assert_array_equal(masked, corruption.masking(masking_key, x, rate=report.DISPLAY_MASKING))
  np.testing.assert_allclose(noisy, corruption.gaussian(gaussian_key, x, sigma=report.DISPLAY_SIGMA), atol=1e-6)
  assert set(np.unique(masked)) == {0.0, 0.5}
  assert (masked == 0).mean() == pytest.approx(0.25, abs=0.03)  # 2,560 pixels: 3.5 standard deviations.
  assert (noisy - x).std() == pytest.approx(0.3, rel=0.05) and abs((noisy - x).mean()) < 0.02
  other = np.asarray(report._display_corruptions(jax.random.key(4), x)[0])
  assert not np.array_equal(other, masked)


def test_decoder_features_of_a_linear_decoder():
  _, model, params = _setup("sparse", (2, 2, 1), widths=(), latent_dim=3)
  kernel, bias = params["decoder"]["logits"]["kernel"], params["decoder"]["logits"]["bias"]
  expected = jax.nn.sigmoid(kernel + bias) - jax.nn.sigmoid(bias)  # Row i: unit i fully on.
  features = report.decoder_features(evaluators.Apply(model, params, variational=False), 3)
  np.testing.assert_allclose(features.reshape(3, -1), expected, rtol=1e-5, atol=1e-7)


def test_curve_keys_pair_train_and_test_terms():
  history = [{"step": 1, "loss": 1.0, "loss_kl": 0.5, "grad_norm": 3.0},
             {"step": 2, "loss": 1.0, "loss_kl": 0.5, "test_loss": 1.0, "test_loss_kl": 0.4}]
  assert report.curve_keys(history) == ["loss", "test_loss", "loss_kl", "test_loss_kl"]
  assert report.curve_keys([]) == []


def test_format_table_lists_every_metric_in_groups(sparse, vae):
  metrics = {**vae[3], "l0": sparse[3]["l0"], "custom": 1.5}  # Every group, the sparse one's L0 included.
  table = report.format_table(metrics)
  for name in metrics:
    assert name in table
  titles = [line[:-1] for line in table.splitlines() if not line.startswith(" ")]
  expected = ["reconstruction", "baselines", "probe", "jacobian", "sparsity", "denoising", "vae", "other"]
  assert titles == expected
  rows = [line for line in table.splitlines() if line.startswith(" ")]
  assert len({len(line) for line in rows}) == 1  # Aligned columns.
  assert "rho" in report.format_table(sparse[3]).split("denoising:")[0]
  assert report.format_table({"mse": float("nan")}).split()[-1] == "nan"
