"""benchmarks/benchmark_sweep.py: the throughput part runs tiny; the end-to-end part runs the right commands."""

import math

from benchmarks import benchmark
from benchmarks import benchmark_sweep


def test_throughput_reports_single_run_and_both_sweep_programs():
  options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
  single, vmapped, looped = benchmark_sweep.throughput([8], 2, options)
  assert (single["members"], vmapped["members"], looped["members"]) == (1, 2, 2)
  assert (vmapped["vectorize"], looped["vectorize"]) == (True, False)
  for row in (vmapped, looped):
    assert row["vs_sequential"] == row["examples_per_s"] / single["examples_per_s"] > 0


def test_end_to_end_times_one_sweep_against_the_same_members_one_by_one(monkeypatch):
  calls = []

  def fake_timed(args, env):
    calls.append((args, env["JAX_COMPILATION_CACHE_DIR"]))
    return 10.0 if args[0].endswith("sweep.py") else 5.0

  monkeypatch.setattr(benchmark_sweep, "_timed", fake_timed)
  row = benchmark_sweep.end_to_end(100, (1e-3, 3e-3), 2)
  assert row == {"part": "end_to_end", "members": 4, "num_steps": 100, "sweep_s": 10.0, "sequential_s": 20.0,
                 "speedup": 2.0}
  (sweep_args, sweep_cache), *singles = calls
  assert "--sweep=learning_rate=0.001,0.003" in sweep_args and "--seeds=2" in sweep_args
  assert [a[-3:-1] for a, _ in singles] == [
      ["--config.learning_rate=0.001", "--config.seed=0"], ["--config.learning_rate=0.001", "--config.seed=1"],
      ["--config.learning_rate=0.003", "--config.seed=0"], ["--config.learning_rate=0.003", "--config.seed=1"]]
  assert all(cache != sweep_cache for _, cache in singles)  # Each side starts with its own empty cache.


def test_shared_batch_reports_own_and_shared_batches():
  options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
  own, shared = benchmark_sweep.shared_batch([8], 2, options)
  assert (own["batches"], shared["batches"]) == ("one per member", "one shared")
  for row in (own, shared):
    assert row["vs_sequential"] == 2 * row["single_step_s"] / row["program_step_s"] > 0
    assert math.isfinite(row["vs_sequential"]) and row["steps"] == 2
