"""A useless model is said at the end of a run; the sparse config's L1 line trains a working model."""

import math

import jax
import pytest

from ae_jax import cli
from ae_jax import configs
from ae_jax import data
from ae_jax import report
from ae_jax import train
from tests.conftest import family_config

HEALTHY = {"mse": 0.01, "fraction_variance_explained": 0.8, "dead_fraction": 0.1}


@pytest.mark.parametrize("metrics, words", [
    ({**HEALTHY, "dead_fraction": 0.88}, "88% of the code units never fire"),
    ({**HEALTHY, "active_units": 0.0}, "the posterior has collapsed"),
    ({**HEALTHY, "fraction_variance_explained": 0.01}, "no better than the mean image"),
    ({**HEALTHY, "fraction_variance_explained": -0.2}, "explain -20.0%"),
])
def test_each_sign_of_a_useless_model_gives_one_line(metrics, words):
  warning = report.useless(metrics)
  assert words in warning and "\n" not in warning


@pytest.mark.parametrize("metrics", [HEALTHY, {**HEALTHY, "active_units": 3.0},
                                     {**HEALTHY, "fraction_variance_explained": math.nan}, {"mse": 0.01}])
def test_a_working_model_or_a_skipped_metric_gives_none(metrics):
  assert report.useless(metrics) is None


def test_a_run_whose_units_all_die_ends_with_the_warning(tmp_path, capsys):
  config = family_config("sparse")
  config.update({"sparsity": "l1", "code_activation": "relu", "sparsity_weight": 100.0, "num_steps": 40,
                 "learning_rate": 1e-2, "num_pictures": 0, "evaluate": "quick"})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result.eval["dead_fraction"] > 0.5
  cli.report(result, str(tmp_path))
  assert "warning: this model looks useless: " in capsys.readouterr().out


def test_the_sparse_l1_line_trains_a_model_with_few_dead_units(tmp_path):
  # README's --config=experiments/configs/sparse.py --config.sparsity=l1 --config.code_activation=relu,
  # as it trains (3000 steps on the digits); the KL's weight (5) left 88% of the units dead.
  config = configs.get("sparse", sparsity="l1", code_activation="relu", num_pictures=0, evaluate="sparsity")
  assert config.sparsity_weight == 0.01 and configs.get("sparse").sparsity_weight == 5.0
  # One device: the same numbers as four (tested elsewhere), in two thirds of the time.
  (result,) = train.train_members([train.Member(config, str(tmp_path))], data.load("digits"), devices=jax.devices()[:1])
  assert result.eval["dead_fraction"] < 0.2  # README: 16.4%.
  assert report.useless(result.eval) is None
