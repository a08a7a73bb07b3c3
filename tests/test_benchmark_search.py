"""benchmarks/benchmark_search.py runs halving and its grid on one budget and reports both choices."""

import pytest

from benchmarks import benchmark_search


def test_quick_halving_against_its_grid():
  row = benchmark_search.run("digits", 9, quick=True)
  assert row["members"] == 3 and row["halving_members_finished"] == 1  # Three settings, eta 3: one goes on.
  assert row["grid_s"] > 0 and row["halving_s"] > 0
  # The survivor trained exactly as the same setting did in the grid.
  assert row["halving_choice_test_negative_elbo"] == pytest.approx(row["grid_test_negative_elbo_of_halving_choice"],
                                                                   rel=1e-5)
  assert row["grid_best_test_negative_elbo"] <= row["grid_choice_test_negative_elbo"]


def test_quick_pbt_against_its_grid():
  row = benchmark_search.run_pbt("digits", 12, quick=True)
  members = {f"learning_rate={lr},beta={b}" for lr in (0.001, 0.003) for b in (1, 2)}
  assert row["members"] == 4 and row["interval"] == 4 and row["search_seeds"] == 1
  assert row["grid_choice"] in members and row["pbt_seed0_choice"] in members
  assert row["pbt_s"] > 0 and abs(row["pbt_gain_nats"]) < 50


def test_quick_pbt_overhead_times_an_exploit_against_an_interval():
  row = benchmark_search.run_overhead("digits", quick=True)
  assert row["members"] == 4 and row["interval"] == 4
  assert row["interval_s"] > 0 and row["exploit_s"] > 0 and row["overhead_fraction"] > 0
