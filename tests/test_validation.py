"""A validation split carved from the training examples: logged, evaluated, and what selection ranks on."""

import json
import os

import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import sweep
from ae_jax import sweep_table
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config


def _dataset(n=50):
  images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) / n
  return data.Dataset(images, np.arange(n, dtype=np.int32), images[:5], np.zeros(5, np.int32), "ramp")


def test_the_carved_split_is_a_fixed_disjoint_subset_of_the_training_examples():
  ds = _dataset()
  carved = data.carve_validation(ds, 0.2)
  assert (len(carved.train_images), len(carved.validation_images)) == (40, 10)
  held, kept = carved.validation_labels, carved.train_labels  # The labels are the example indices.
  assert sorted(np.concatenate([held, kept]).tolist()) == list(range(50)) and not set(held) & set(kept)
  np.testing.assert_array_equal(carved.validation_images[:, 0, 0, 0], ds.train_images[held, 0, 0, 0])  # With labels.
  np.testing.assert_array_equal(data.carve_validation(ds, 0.2).validation_labels, held)  # Seeded: the same.
  assert not np.array_equal(held, np.arange(10))  # Drawn, not the first examples.
  assert data.carve_validation(ds, 0.0) is ds and not ds.has_validation and carved.has_validation
  np.testing.assert_array_equal(carved.test_images, ds.test_images)  # The test split is untouched.
  np.testing.assert_array_equal(carved.validation_as_test().test_labels, held)


def test_dynamic_binarization_binarizes_the_validation_split_once():
  carved = data.carve_validation(_dataset(), 0.5, binarize="dynamic")
  assert set(np.unique(carved.validation_images)) <= {0.0, 1.0}
  assert len(np.unique(carved.train_images)) > 2  # Training images stay grey: the step resamples them.


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_a_fraction_that_empties_a_split_is_one_line(fraction):
  with pytest.raises(data.DataError, match="validation_fraction"):
    data.carve_validation(_dataset(), fraction)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_bad_fractions_are_config_errors(value):
  config = family_config("undercomplete")
  config.validation_fraction = value
  with pytest.raises(config_lib.ConfigError, match="validation_fraction"):
    config_lib.validate(config)


def test_a_run_logs_and_evaluates_the_validation_split(tmp_path):
  config = family_config("undercomplete")
  config.update({"validation_fraction": 0.5, "num_epochs": 1, "evaluate": "quick", "num_pictures": 0,
                 "log_every": 2, "eval_every": 2, "checkpoint_every": 2})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result.step == (1437 - 718) // 32  # An epoch of what training kept of the digits' 1,437.
  rows = workdir_lib.read_metrics(str(tmp_path))
  logged = [row for row in rows if "val_loss" in row]
  assert logged and all("test_loss" in row for row in logged)
  assert result.validation["loss"] == logged[-1]["val_loss"] != result.test["loss"]
  with open(tmp_path / "eval_validation.json", encoding="utf-8") as f:
    on_validation = json.load(f)
  assert set(on_validation) == {"step", *result.eval} and on_validation["mse"] != result.eval["mse"]
  assert result.eval_validation["mse"] == on_validation["mse"]
  assert any("eval_val/mse" in row for row in rows)
  back = workdir_lib.read_finished(str(tmp_path), config)
  assert back.eval_validation == result.eval_validation and back.validation == pytest.approx(result.validation)
  assert os.path.exists(result.paths["eval_validation"])


def test_selection_ranks_on_validation_and_reports_test():
  rows = [{"member": "a", "status": "done", "mse": 0.1, "val/mse": 0.3, "test_loss": 1.0, "val_loss": 2.0},
          {"member": "b", "status": "done", "mse": 0.2, "val/mse": 0.2, "test_loss": 2.0, "val_loss": 1.0}]
  assert sweep_table.selection_key(rows, "mse") == ("val/mse", "validation")
  assert sweep_table.selection_key(rows, "test_loss") == ("val_loss", "validation")
  assert sweep_table.selection_key(rows, "max:mse") == ("max:val/mse", "validation")
  text = sweep_table.format_text(rows, swept_keys=[], metrics=["mse"], select="mse")
  assert text.splitlines()[-1] == "Best by mse on the validation split: b (0.2; test 0.2)"
  test_only = [{k: v for k, v in row.items() if not k.startswith("val")} for row in rows]
  assert sweep_table.selection_key(test_only, "mse") == ("mse", "test")
  assert "on the test split (no validation split" in sweep_table.format_text(
      test_only, swept_keys=[], metrics=["mse"], select="mse")


def test_a_sweep_selects_on_validation(tmp_path):
  config = family_config("undercomplete")
  config.update({"validation_fraction": 0.2, "num_steps": 10, "log_every": 5, "eval_every": 5,
                 "checkpoint_every": 10, "evaluate": "quick", "num_pictures": 0})
  out = sweep.run(config, [{"learning_rate": 1e-3}, {"learning_rate": 3e-2}], str(tmp_path), select="mse")
  scores = [row["val/mse"] for row in out["rows"]]
  assert out["best"] is out["rows"][int(np.argmin(scores))]
  assert "val_loss" in out["text"] and "val/mse" in out["text"] and "on the validation split" in out["text"]
