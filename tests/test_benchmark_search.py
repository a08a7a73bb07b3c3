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
