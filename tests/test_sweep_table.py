"""ae_jax.sweep_table: per-member rows, means over seeds, the best setting, and the written files.

Spreads are population standard deviations (ddof=0), as in the module: seeds 1.0 and 3.0 give 2 ± 1.
"""

import csv
import math

from PIL import Image
import pytest

from ae_jax import sweep_table
from ae_jax.sweep_spec import SweepError

KEYS = ["beta", "seed"]
METRICS = ["test_loss", "log_likelihood"]

ON_TEST = " on the test split (no validation split: set --config.validation_fraction to select on one)"


def _rows() -> list[dict]:
  """beta 1 and 4, seeds 0 and 1; (beta=4, seed=1) diverged with a NaN loss."""
  return [
      {"member": "beta=1,seed=0", "beta": 1.0, "seed": 0, "status": "done", "test_loss": 1.0,
       "log_likelihood": -10.0},
      {"member": "beta=1,seed=1", "beta": 1.0, "seed": 1, "status": "done", "test_loss": 3.0,
       "log_likelihood": -12.0},
      {"member": "beta=4,seed=0", "beta": 4.0, "seed": 0, "status": "done", "test_loss": 5.0,
       "log_likelihood": -9.0},
      {"member": "beta=4,seed=1", "beta": 4.0, "seed": 1, "status": "diverged at step 40",
       "test_loss": math.nan, "log_likelihood": -1.0},
  ]


def test_aggregate_mean_and_population_std():
  groups = sweep_table.aggregate(_rows(), swept_keys=KEYS, metrics=METRICS)
  assert [g["beta"] for g in groups] == [1.0, 4.0]
  first, second = groups
  assert (first["n"], first["runs"]) == (2, 2)
  assert first["test_loss_mean"] == pytest.approx(2.0) and first["test_loss_std"] == pytest.approx(1.0)
  assert first["log_likelihood_mean"] == pytest.approx(-11.0)
  assert first["log_likelihood_std"] == pytest.approx(1.0)
  # The diverged seed counts in neither mean nor n, though it reports a finite log-likelihood.
  assert (second["n"], second["runs"]) == (1, 2)
  assert second["test_loss_mean"] == 5.0 and second["test_loss_std"] == 0.0
  assert second["log_likelihood_mean"] == -9.0 and second["log_likelihood_n"] == 1


def test_aggregate_skips_nan_and_missing_values_of_finished_members():
  rows = [{"seed": 0, "status": "done", "mse": 1.0}, {"seed": 1, "status": "done", "mse": math.nan},
          {"seed": 2, "status": "done"}, {"seed": 3, "status": "pending", "mse": 100.0}]
  (group,) = sweep_table.aggregate(rows, swept_keys=["seed"], metrics=["mse", "psnr"])
  assert (group["n"], group["runs"], group["mse_n"], group["mse_mean"]) == (3, 4, 1, 1.0)
  assert math.isnan(group["psnr_mean"]) and math.isnan(group["psnr_std"])


def test_aggregate_groups_by_every_other_swept_key():
  rows = [{"a": a, "b": b, "seed": s, "status": "done", "m": a * 10 + b[0] + s}
          for a in (1, 2) for b in ((16,), (32,)) for s in (0, 1)]
  groups = sweep_table.aggregate(rows, swept_keys=["a", "b", "seed"], metrics=["m"])
  assert [(g["a"], g["b"], g["m_mean"]) for g in groups] == [
      (1, (16,), 26.5), (1, (32,), 42.5), (2, (16,), 36.5), (2, (32,), 52.5)]


def test_aggregate_without_seeds_is_empty():
  assert sweep_table.aggregate(_rows(), swept_keys=["beta"], metrics=METRICS) == []


@pytest.mark.parametrize("metric, sense", [
    ("test_loss", "min"), ("mse", "min"), ("probe_accuracy", "max"), ("log_likelihood", "max"),
    ("psnr_gain/masking_0.25", "max"), ("active_units", "max"), ("fraction_variance_explained", "max"),
    ("elbo", "max"), ("negative_elbo", "min"), ("elbo_reconstruction", "min"), ("dead_fraction", "min"),
])
def test_direction_inferred(metric, sense):
  assert sweep_table.direction(metric) == (metric, sense)


def test_best_infers_the_direction():
  rows = _rows()
  assert sweep_table.best(rows, "test_loss")["member"] == "beta=1,seed=0"
  # Maximised; the diverged member's higher -1.0 does not count.
  assert sweep_table.best(rows, "log_likelihood")["member"] == "beta=4,seed=0"


def test_best_prefixes_override_the_direction():
  rows = _rows()
  assert sweep_table.best(rows, "max:test_loss")["member"] == "beta=4,seed=0"
  assert sweep_table.best(rows, "min:log_likelihood")["member"] == "beta=1,seed=1"


def test_best_first_on_ties_and_none_without_a_finished_value():
  rows = [{"member": "a", "status": "done", "m": 1.0}, {"member": "b", "status": "done", "m": 1.0}]
  assert sweep_table.best(rows, "m")["member"] == "a"
  assert sweep_table.best(rows, "max:m")["member"] == "a"
  assert sweep_table.best([{"member": "a", "status": "failed: oom", "m": 1.0}], "m") is None


def test_best_unknown_metric_lists_the_metrics():
  with pytest.raises(SweepError, match=r"no member reports metric 'mse'; metrics: test_loss, log_likelihood$"):
    sweep_table.best(_rows(), "mse", swept_keys=KEYS)
  assert issubclass(SweepError, ValueError)


def test_format_text_tables_and_best_line():
  text = sweep_table.format_text(_rows(), swept_keys=KEYS, metrics=METRICS + ["mse"], select="test_loss")
  lines = text.splitlines()
  assert lines[0] == "| member | beta | seed | status | test_loss | log_likelihood |"  # No member measured mse.
  assert "| beta=4,seed=1 | 4 | 1 | diverged at step 40 | — | -1 |" in lines
  assert "mean ± std over seeds" in text
  assert "| beta | n | test_loss | log_likelihood |" in lines
  assert "| 1 | 2/2 | 2 ± 1 | -11 ± 1 |" in lines
  assert "| 4 | 1/2 | 5 ± 0 | -9 ± 0 |" in lines
  assert lines[-1] == f"Best by test_loss{ON_TEST}: beta=1 (mean 2 ± 1 over 2 seeds); its best seed: beta=1,seed=0 (1)"


def test_format_text_without_seeds_has_no_mean_table():
  rows = [{"member": "beta=0.123456", "beta": 0.123456, "status": "done", "mse": 0.0123456}]
  text = sweep_table.format_text(rows, swept_keys=["beta"], metrics=["mse"], select="mse")
  assert "mean ± std" not in text
  assert "| beta=0.123456 | 0.1235 | done | 0.01235 |" in text
  assert text.splitlines()[-1] == f"Best by mse{ON_TEST}: beta=0.123456 (0.01235)"


def test_format_text_best_line_for_a_metric_nobody_reports():
  text = sweep_table.format_text(_rows(), swept_keys=KEYS, metrics=METRICS, select="mse")
  assert text.splitlines()[-1].startswith(f"Best by mse{ON_TEST}: — (no member reports metric 'mse'")


def test_write_produces_the_three_files(tmp_path):
  paths = sweep_table.write(str(tmp_path / "out"), _rows(), swept_keys=KEYS, metrics=METRICS,
                            select="log_likelihood", title="beta sweep")
  assert paths == {"csv": str(tmp_path / "out" / "sweep.csv"), "markdown": str(tmp_path / "out" / "sweep.md"),
                   "png": str(tmp_path / "out" / "sweep.png")}
  with open(paths["csv"], encoding="utf-8", newline="") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == ["member", "beta", "seed", "status", "test_loss", "log_likelihood"]
  assert [float(r["test_loss"]) for r in table[:3]] == [1.0, 3.0, 5.0]
  assert math.isnan(float(table[3]["test_loss"])) and table[3]["status"] == "diverged at step 40"
  assert [(float(r["beta"]), int(r["seed"])) for r in table] == [(1, 0), (1, 1), (4, 0), (4, 1)]
  with open(paths["markdown"], encoding="utf-8") as f:
    md = f.read()
  assert md.startswith("# beta sweep\n")
  assert "| 1 | 2/2 | 2 ± 1 | -11 ± 1 |" in md
  # beta=4 has the best member (-9) but a diverged seed: the setting whose seeds all finished wins.
  assert md.rstrip().endswith(f"Best by log_likelihood{ON_TEST}: beta=1 (mean -11 ± 1 over 2 seeds); its best seed: "
                              "beta=1,seed=0 (-10)")
  with Image.open(paths["png"]) as image:
    assert image.format == "PNG" and image.width > 100


def test_write_csv_keeps_full_precision_and_leaves_missing_blank(tmp_path):
  rows = [{"member": "w", "widths": (32, 16), "status": "done", "mse": 0.123456789},
          {"member": "v", "widths": (16,), "status": "failed: out of memory"}]
  paths = sweep_table.write(str(tmp_path), rows, swept_keys=["widths"], metrics=["mse"])
  with open(paths["csv"], encoding="utf-8", newline="") as f:
    table = list(csv.reader(f))
  assert table == [["member", "widths", "status", "mse"], ["w", "(32,16)", "done", "0.123456789"],
                   ["v", "(16,)", "failed: out of memory", ""]]


@pytest.mark.parametrize("swept_keys, rows", [
    (["seed"], [{"member": f"seed={s}", "seed": s, "status": "done", "mse": 0.1 * s} for s in range(3)]),
    (["activation", "widths", "seed"],
     [{"member": "m", "activation": a, "widths": w, "seed": s, "status": "done", "mse": len(a) + s}
      for a in ("relu", "gelu") for w in ((16,), (32,)) for s in (0, 1)]),
    (["learning_rate"], [{"member": "m", "learning_rate": lr, "status": "done", "mse": lr}
                         for lr in (1e-4, 1e-3, 1e-2)]),
    ([], [{"member": "base", "status": "done", "mse": 1.0}]),
])
def test_write_plots_every_sweep_shape(tmp_path, swept_keys, rows):
  metrics = ["mse", "probe_accuracy", "a", "b", "c", "d", "e"]  # Most missing.
  path = sweep_table.write(str(tmp_path), rows, swept_keys=swept_keys, metrics=metrics)["png"]
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.info["Description"] == "panels: mse"


def _vae_rows() -> list[dict]:
  """A beta sweep over 3 seeds whose quick evaluation skipped the log-likelihood and the probe."""
  rows = []
  for beta in (0.25, 1.0, 4.0):
    for seed in range(3):
      rows.append({"member": f"beta={beta:g},seed={seed}", "beta": beta, "seed": seed, "status": "done",
                   "train_loss": 50 + beta + seed, "test_loss": 51 + beta + seed, "train_loss_tv": 0.1 * beta,
                   "test_loss_tv": 0.2 * beta, "log_likelihood": math.nan, "probe_accuracy": None,
                   "elbo_reconstruction": 40 - beta, "elbo_kl": 5 * beta, "mse": 0.01 * beta + 0.001 * seed,
                   "active_units": 8 - beta, "negative_elbo": 45 + beta})
  return rows


def test_the_picture_has_a_panel_for_every_measured_metric_and_none_for_skipped_ones(tmp_path):
  metrics = ["train_loss", "test_loss", "train_loss_tv", "test_loss_tv", "log_likelihood", "probe_accuracy",
             "elbo_reconstruction", "elbo_kl", "mse", "active_units", "negative_elbo"]
  paths = sweep_table.write(str(tmp_path), _vae_rows(), swept_keys=KEYS, metrics=metrics)
  measured = ["train_loss", "test_loss", "train_loss_tv", "test_loss_tv", "elbo_reconstruction", "elbo_kl", "mse",
              "active_units", "negative_elbo"]  # More than 6: the VAE's MSE and active units among them.
  assert sweep_table.panels(_vae_rows(), metrics) == measured
  with Image.open(paths["png"]) as image:
    assert image.info["Description"] == "panels: " + ", ".join(measured)
    assert image.height > 3 * 300  # Three rows of three panels.
  with open(paths["csv"], encoding="utf-8", newline="") as f:
    assert next(csv.reader(f)) == ["member", "beta", "seed", "status", *measured]
  with open(paths["markdown"], encoding="utf-8") as f:
    md = f.read()
  assert md.splitlines()[0] == "| member | beta | seed | status | " + " | ".join(measured) + " |"
  assert "log_likelihood" not in md and "probe_accuracy" not in md


@pytest.mark.parametrize("values, scale", [
    ((0.001, 0.01, 0.1), "log"), ((1, 10), "log"), ((1, 9.9), "linear"), ((0, 0.01, 0.1), "symlog"),
    ((-1, 1, 100), "linear"), (("relu", "gelu"), "category"), (((16,), (32,)), "category"),
])
def test_x_scale_is_log_when_the_values_span_a_decade(values, scale):
  assert sweep_table.x_scale(values) == scale


def test_mean_and_std_cells_have_three_significant_digits():
  rows = [{"member": f"seed={s}", "seed": s, "status": "done", "m": v}
          for s, v in enumerate((0.0136118, 0.0140682))]
  text = sweep_table.format_text(rows, swept_keys=["seed"], metrics=["m"])
  assert "| 2/2 | 0.0138 ± 0.000228 |" in text
  assert "| seed=0 | 0 | done | 0.01361 |" in text  # Members keep 4 digits.


def _settings() -> list[dict]:
  """lr 0.1 has the best member (1.0) but the worse mean (3.0); lr 0.2's seeds average 2.25."""
  values = {0.1: (1.0, 5.0), 0.2: (2.5, 2.0), 0.3: (0.5, math.nan)}
  return [{"member": f"lr={lr},seed={s}", "lr": lr, "seed": s, "status": "done", "m": v, "acc": -v}
          for lr, vs in values.items() for s, v in enumerate(vs)]


def test_select_ranks_settings_by_their_mean_over_seeds_and_names_the_best_seed():
  rows = _settings()
  ranked = sweep_table.rank(rows, "m", swept_keys=["lr", "seed"])
  # 0.3's second seed has no finite value: it ranks after the settings whose seeds all count.
  assert [(r["values"], r["mean"], r["n"]) for r in ranked] == [({"lr": 0.2}, 2.25, 2), ({"lr": 0.1}, 3.0, 2),
                                                                ({"lr": 0.3}, 0.5, 1)]
  assert ranked[0]["best"]["member"] == "lr=0.2,seed=1"
  assert sweep_table.best(rows, "m", swept_keys=["lr", "seed"])["member"] == "lr=0.2,seed=1"
  assert sweep_table.best(rows, "max:acc", swept_keys=["lr", "seed"])["member"] == "lr=0.2,seed=1"
  assert sweep_table.best(rows, "m")["member"] == "lr=0.3,seed=0"  # Without swept keys: each member alone.
  text = sweep_table.format_text(rows, swept_keys=["lr", "seed"], metrics=["m"], select="m")
  assert text.splitlines()[-1] == (f"Best by m{ON_TEST}: lr=0.2 (mean 2.25 ± 0.25 over 2 seeds); its best seed: "
                                   "lr=0.2,seed=1 (2)")


def test_selection_on_validation_reports_the_settings_test_mean():
  rows = [{**row, "val/m": row["m"], "m": row["m"] + 1} for row in _settings()]
  text = sweep_table.format_text(rows, swept_keys=["lr", "seed"], metrics=["m"], select="m")
  assert text.splitlines()[-1] == ("Best by m on the validation split: lr=0.2 (mean 2.25 ± 0.25 over 2 seeds; test "
                                   "3.25 ± 0.25); its best seed: lr=0.2,seed=1 (2; test 3)")


def test_order_is_shared_by_select_halving_and_pbt():
  scores = {"a": [1.0, math.nan], "b": [5.0, 5.0], "c": [2.0, 3.0], "d": [math.nan]}
  assert sweep_table.order(scores) == ["c", "b", "a", "d"]
  assert sweep_table.order(scores, sense="max") == ["b", "c", "a", "d"]


def test_a_user_terms_test_loss_selects_on_its_validation_loss():
  rows = [{"member": "a", "status": "done", "test_loss_tv": 1.0, "val_loss_tv": 2.0, "val_loss": 1.0}]
  assert sweep_table.selection_key(rows, "test_loss_tv") == ("val_loss_tv", "validation")
  assert sweep_table.selection_key(rows, "test_loss") == ("val_loss", "validation")
