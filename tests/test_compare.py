"""experiments/compare.py: five families in one table."""

import os
import subprocess
import sys

import compare  # experiments/ is on sys.path (tests/conftest.py).
from PIL import Image

from ae_jax import families
from ae_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_writes_one_row_per_family(tmp_path, monkeypatch):
  # Every family's real training and evaluation runs end to end in test_e2e.py; here the trainer is
  # replaced by one that records what compare asked for and answers with canned metrics.
  from ae_jax import train  # pylint: disable=g-import-not-at-top
  calls = {}

  def fake_train_members(members, ds, devices=None):
    del ds, devices
    return [fake_train_and_evaluate(m.config, m.workdir) for m in members]

  def fake_train_and_evaluate(config, workdir):
    calls[config.family] = (config, workdir)
    metrics = {"mse": 0.01, "pca_mse": 0.02, "probe_accuracy": 0.9, "probe_accuracy_pixels": 0.95,
               "psnr_gain/masking_0.25": 2.0, "psnr_gain/gaussian_0.3": 1.0, "jacobian_frobenius_sq": 3.0,
               "l0": 4.0, "l0_threshold": 1e-3, "dead_fraction": 0.0}
    if config.family == "vae":  # As report.evaluate_model: no sparsity rows for the VAE.
      metrics.update(negative_elbo=30.0, log_likelihood=-29.5, active_units=3.0)
      for key in ("l0", "l0_threshold", "dead_fraction"):
        del metrics[key]
    if config.family == "contractive":
      return workdir_lib.Result(status="diverged", diverged_at=3, message="loss became nan at step 3")
    return workdir_lib.Result(eval=metrics, train={"loss": 1.0}, test={"loss": 1.0})

  monkeypatch.setattr(train, "train_members", fake_train_members)
  out = compare.compare(dataset="digits", num_steps=20, workdir=str(tmp_path), overrides={"num_pictures": 0})
  assert sorted(calls) == sorted(families.NAMES)
  for family, (config, workdir) in calls.items():
    assert (config.family, config.dataset, config.num_steps, config.num_pictures) == (family, "digits", 20, 0)
    assert workdir == str(tmp_path / family)
  assert calls["sparse"][0].sparsity == "kl" and calls["contractive"][0].code_activation == "sigmoid"
  with open(tmp_path / "comparison.md", encoding="utf-8") as f:
    md = f.read()
  assert md == out["markdown"]
  rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| family")
          and not line.startswith("| ---")]
  assert [row.split(" | ")[0][2:] for row in rows] == list(families.NAMES)
  assert all(row.count(" | ") == len(compare.COLUMNS) - 1 for row in rows)
  elbo = compare.COLUMNS.index("ELBO / log p(x)")
  cells = {row.split(" | ")[0][2:]: row.split(" | ") for row in rows}
  assert cells["vae"][elbo] == "-30.0 / -29.5" and cells["undercomplete"][elbo] == compare.NA
  assert cells["contractive"][1] == compare.NA and "contractive: training failed" in md
  l0 = compare.COLUMNS.index("L0 / k")
  assert cells["vae"][l0] == cells["vae"][l0 + 1] == compare.NA and cells["undercomplete"][l0].startswith("4.0 / ")
  assert "training steps: undercomplete 20," in md and "raw pixels it scores 0.950" in md
  with Image.open(tmp_path / "comparison.png") as image:
    assert image.format == "PNG"


def test_table_of_canned_results_with_a_failed_family(tmp_path):
  configs = {f: compare.family_config(f, dataset="digits", num_steps=None) for f in families.NAMES}
  metrics = {"mse": 0.01, "pca_mse": 0.02, "probe_accuracy": 0.9, "probe_accuracy_pixels": 0.95,
             "psnr_gain/masking_0.25": 2.0, "psnr_gain/gaussian_0.3": -1.0, "jacobian_frobenius_sq": 12.0,
             "l0": 5.0, "l0_threshold": 1e-3, "dead_fraction": 0.25}
  results = {f: workdir_lib.Result(eval=dict(metrics)) for f in families.NAMES}
  results["vae"].eval.update(negative_elbo=25.04, log_likelihood=-24.52)
  results["contractive"] = None
  rows = compare.table_rows(results, configs)
  assert rows[0][:10] == ["undercomplete", "0.0100", "0.0200 (8)", "0.900", "+2.00", "-1.00", "12",
                          "5.0 / 8 (>0.001)", "0.25", compare.NA]
  assert rows[3][1:10] == [compare.NA] * 9 and rows[4][9] == "-25.0 / -24.5"
  text = compare.caption(results, configs, "digits")
  assert "raw pixels it scores 0.950" in text and "contractive: training failed" in text
  assert "1000 samples" in text and "steps: undercomplete 3000" in text
  md = compare.markdown(rows, text)
  assert md.count("\n| ") == 6 and "KL(rho &#124;&#124; mean activation)" in md
  with Image.open(compare.save_png(str(tmp_path / "t.png"), rows, text)) as image:
    assert image.format == "PNG" and image.size[0] == 2000


def test_compare_bad_flag_is_one_line_and_exit_code_2(tmp_path):
  out = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "compare.py"), "--num_steps=0",
                        f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "num_steps" in errors[0] and "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)
