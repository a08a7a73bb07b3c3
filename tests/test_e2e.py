"""End to end: every family trains on the embedded digits and on tfds mock data; the CLI's errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ae_jax import families
from ae_jax import train
from tests.conftest import family_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_trained(result, workdir, family):
  losses = [row["loss"] for row in result.history]
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0], losses
  assert np.isfinite(result.test["loss"])
  all_rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  rows = [r for r in all_rows if "loss" in r]
  assert [r["step"] for r in rows] == [10, 20, 30, 40]
  assert {"loss", "loss_rec", "test_loss", "test_loss_rec", "grad_norm"} <= set(rows[-1])
  assert os.path.exists(result.paths["reconstructions"])
  _assert_evaluated(result, workdir, all_rows[-1], family)


def _assert_evaluated(result, workdir, eval_row, family):
  """The end-of-run evaluation: finite, in metrics.jsonl (as eval/*) and eval.json, IWAE >= ELBO."""
  metrics = result.eval
  expected = {"mse", "sse", "pca_mse", "pca_sse", "jacobian_frobenius_sq", "latent_sensitivity",
              "fraction_variance_explained", "psnr_gain/masking_0.25", "psnr_gain/gaussian_0.3"}
  if family == "vae":
    expected |= {"negative_elbo", "elbo_reconstruction", "elbo_kl", "log_likelihood", "active_units"}
    assert "l0" not in metrics and "dead_fraction" not in metrics  # Sparsity rows do not apply to the VAE.
    # IWAE (20 samples) tightens the one-sample ELBO; 1 nat covers the Monte Carlo noise of both.
    assert metrics["log_likelihood"] >= -metrics["negative_elbo"] - 1.0, metrics
  else:
    expected |= {"l0", "l0_threshold", "mean_activation", "dead_fraction"}
  assert expected <= set(metrics), expected - set(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert eval_row["step"] == 40 and eval_row["eval/mse"] == pytest.approx(metrics["mse"])
  with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
    assert json.load(f)["mse"] == pytest.approx(metrics["mse"])


@pytest.mark.parametrize("family", families.NAMES)
def test_family_trains_on_digits(family, tmp_path):
  result = train.train_and_evaluate(family_config(family), str(tmp_path))
  _assert_trained(result, str(tmp_path), family)
  # Ten digits: chance is 0.1, what a probe of codes misaligned with their labels scores; these codes give
  # 0.56 (the VAE) to 0.8 after 40 steps, the pixels 0.97.
  assert result.eval["probe_accuracy"] > 0.4 and result.eval["probe_accuracy_pixels"] > 0.9
  expected = {"reconstructions", "denoising", "latent_scatter", "curves", "eval"}
  expected |= {"vae": {"samples", "interpolations"}, "sparse": {"filters"}}.get(family, set())
  assert set(result.paths) == expected and all(os.path.exists(p) for p in result.paths.values())


@pytest.mark.parametrize("family", families.NAMES)
def test_family_trains_on_tfds_mock_data(family, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = family_config(family)
  config.dataset = "mnist"
  with tfds.testing.mock_data(num_examples=64):
    result = train.train_and_evaluate(config, str(tmp_path))
  _assert_trained(result, str(tmp_path), family)


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_cli_trains_on_an_npz_and_reports_outputs(tmp_path):
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
           y_train=rng.integers(0, 10, 64), x_test=rng.integers(0, 256, (16, 8, 8), dtype=np.uint8),
           y_test=rng.integers(0, 10, 16))
  out = _cli("--config=experiments/configs/test.py", "--config.family=sparse", "--config.sparsity=l1",
             f"--config.dataset=npz:{tmp_path}/d.npz", "--config.data_placement=stream",
             f"--workdir={tmp_path}/run")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "metrics.jsonl" in out.stdout and "reconstructions.png" in out.stdout
  assert os.path.exists(tmp_path / "run" / "hparams.json")


@pytest.mark.parametrize("args,match", [
    (["--config.family=gan"], "--config.family='gan' is not one of"),
    (["--config.batch_size=-4"], "--config.batch_size=-4 must be a positive int"),
    (["--config.latent_dim=0"], "--config.latent_dim=0 must be a positive int"),
    (["--config.dataset=npz:/no/such/file.npz"], "npz file not found"),
    (["--config=experiments/configs/nope.py"], "config file experiments/configs/nope.py not found"),
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config.learning_rate=fast"], "learning_rate"),
    (["--bogus_flag"], "bogus_flag"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(args, match, tmp_path):
  out = _cli("--config=experiments/configs/test.py", *args, f"--workdir={tmp_path}")
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and match in errors[0], out.stderr[-2000:]
  assert "Traceback" not in out.stderr
