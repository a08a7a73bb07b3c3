"""A sweep end to end: a user term's weight swept as a number, its losses in every output; the resume log."""

import csv
import json
import logging
import math

from PIL import Image
import pytest

from ae_jax import sweep
from ae_jax import sweep_spec
from tests.conftest import family_config

TERM = "tests.test_families:code_energy"


def test_a_sweep_over_a_user_terms_weight_reports_its_losses_everywhere(tmp_path):
  config = family_config("undercomplete")
  config.update({"extra_terms": f"{TERM}=0.25", "num_steps": 10, "log_every": 5, "eval_every": 5,
                 "checkpoint_every": 10, "num_pictures": 0, "evaluate": "quick", "validation_fraction": 0.2})
  members = sweep_spec.parse_inline("weight/code_energy=0.001,0.1", seeds=2, config=config)
  out = sweep.run(config, members, str(tmp_path), select="test_loss_code_energy")
  assert out["names"] == ["weight.code_energy=0.001,seed=0", "weight.code_energy=0.001,seed=1",
                          "weight.code_energy=0.1,seed=0", "weight.code_energy=0.1,seed=1"]
  with open(tmp_path / out["names"][2] / "run_config.json", encoding="utf-8") as f:
    assert json.load(f)["extra_terms"] == f"{TERM}=0.1"  # The member trained with its own weight.
  terms = ["train_loss_code_energy", "val_loss_code_energy", "test_loss_code_energy"]
  for row, result in zip(out["rows"], out["results"]):
    assert row["status"] == "done" and row["weight/code_energy"] in (0.001, 0.1)
    assert row["train_loss_code_energy"] == result.train["loss_code_energy"]
    assert row["test_loss_code_energy"] == result.test["loss_code_energy"]
    assert row["val_loss_code_energy"] == result.validation["loss_code_energy"]
    assert all(math.isfinite(row[t]) and row[t] > 0 for t in terms)
  with open(out["paths"]["csv"], encoding="utf-8", newline="") as f:
    header, *rows = list(csv.reader(f))
  assert header[:4] == ["member", "weight/code_energy", "seed", "status"]
  assert set(terms) <= set(header) and len(rows) == 4
  with Image.open(out["paths"]["png"]) as image:
    panels = image.info["Description"].removeprefix("panels: ").split(", ")
  assert panels == ["train_loss", "val_loss", "test_loss", *terms, "mse"]
  # The quick evaluation skips the probe and PCA: no panel, no column.
  assert not {"probe_accuracy", "pca_mse"} & set(header)
  best = out["text"].splitlines()[-1]
  assert best.startswith("Best by test_loss_code_energy on the validation split: weight/code_energy=")
  assert "over 2 seeds" in best and "its best seed: weight.code_energy=" in best
  assert out["best"]["member"] in best


def test_pbt_explores_a_swept_weight_like_any_hyperparameter():
  from ae_jax import pbt  # pylint: disable=g-import-not-at-top

  swept = [{"weight/code_energy": 0.1, "beta": 1.0, "seed": 0}]
  assert pbt.explored_keys(swept, None) == ["beta", "weight/code_energy"]
  assert pbt.explored_keys([{"seed": 0}], ["weight/code_energy"]) == ["weight/code_energy"]
  with pytest.raises(sweep_spec.SweepError, match="--explore=widths"):
    pbt.explored_keys([{"seed": 0}], ["widths"])


def test_titles_name_an_npz_by_its_file_not_its_machine_path():
  assert sweep._dataset_title("npz:/home/someone/data/mnist.npz") == "npz:mnist.npz"  # pylint: disable=protected-access
  assert sweep._dataset_title("digits") == "digits"  # pylint: disable=protected-access


def test_an_interrupted_sweep_says_it_resumes(tmp_path, caplog):
  config = family_config("undercomplete")
  config.update({"num_steps": 4, "log_every": 2, "eval_every": 4, "checkpoint_every": 2, "num_pictures": 0,
                 "evaluate": "quick"})
  first = sweep.run(config, [{"seed": 0}, {"seed": 1}], str(tmp_path))
  (tmp_path / first["names"][1] / "status.json").unlink()  # Killed before it finished: its checkpoint stays.
  with caplog.at_level(logging.INFO):
    out = sweep.run(config, [{"seed": 0}, {"seed": 1}, {"seed": 2}], str(tmp_path))
  assert [row["status"] for row in out["rows"]] == ["done"] * 3
  assert "1 finished, 1 to resume from their checkpoints, 1 to train from the start" in caplog.text


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
