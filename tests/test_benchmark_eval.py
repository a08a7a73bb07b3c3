"""benchmarks/benchmark_eval.py: the IWAE estimate is timed against the decoder-matmul bound."""

import pytest

from benchmarks import benchmark_eval


def test_iwae_row_counts_the_decoder_and_compares_with_its_bound():
  row = benchmark_eval.iwae(4, 8, 128)
  assert row["decoder_macs_per_sample"] == 50 * 200 + 200 * 200 + 200 * 784  # The paper's decoder, 50-200-200-784.
  assert row["bound_s"] == pytest.approx(2 * 4 * 8 * row["decoder_macs_per_sample"] / (row["matmul_gflops"] * 1e9))
  assert row["vs_bound"] == row["seconds"] / row["bound_s"] > 0
