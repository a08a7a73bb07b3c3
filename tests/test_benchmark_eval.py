"""benchmarks/benchmark_eval.py: the IWAE estimate is timed against the decoder-matmul bound."""

import types

import pytest

from benchmarks import benchmark_eval
from benchmarks import harness


def test_iwae_row_counts_the_decoder_and_compares_with_its_bound(monkeypatch):
  # A clock and a matmul rate the test chooses, so every number of the row is known by hand.
  ticks = iter([0.0, 0.5, 10.0, 13.0])  # The first (compiling) call takes 0.5 s, the timed one 3 s.
  monkeypatch.setattr(benchmark_eval, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
  rates = iter([1e9, 3e9])  # Before and after: the median is 2 GFLOP/s.
  monkeypatch.setattr(harness, "make_matmul", lambda size, mesh: lambda: next(rates))
  row = benchmark_eval.iwae(4, 8, 128)
  macs = 50 * 200 + 200 * 200 + 200 * 784  # The paper's decoder, 50-200-200-784: 206,800 per sample.
  assert row["decoder_macs_per_sample"] == macs
  assert (row["seconds"], row["first_call_s"], row["matmul_gflops"]) == (3.0, 0.5, 2.0)
  assert row["examples_per_s"] == pytest.approx(4 / 3)
  assert row["bound_s"] == pytest.approx(0.0066176)  # 2 FLOPs x 4 images x 8 samples x 206,800 / 2e9.
  assert row["vs_bound"] == pytest.approx(3.0 / 0.0066176)
