"""benchmarks/benchmark_sweep.py: the throughput part runs tiny; the end-to-end part runs the right commands."""

import pytest

from benchmarks import benchmark
from benchmarks import benchmark_sweep
from benchmarks import harness


def test_throughput_reports_single_run_and_both_sweep_programs(monkeypatch):
  measure = benchmark.run_group

  def known_rates(cases, *args):  # The real measurement, then rates the test knows: 100, 300 and 150 examples/s.
    rows = measure(cases, *args)
    assert all(row["examples_per_s"] > 0 for row in rows)
    return [{**row, "examples_per_s": rate} for row, rate in zip(rows, (100.0, 300.0, 150.0))]

  monkeypatch.setattr(benchmark, "run_group", known_rates)
  options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
  single, vmapped, looped = benchmark_sweep.throughput([8], 2, options)
  assert (single["members"], vmapped["members"], looped["members"]) == (1, 2, 2)
  assert (vmapped["vectorize"], looped["vectorize"]) == (True, False)
  assert (vmapped["vs_sequential"], looped["vs_sequential"]) == (3.0, 1.5)  # Over all members, vs the single run.


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


def test_shared_batch_reports_own_and_shared_batches(monkeypatch):
  measure = harness.round_robin

  def known_times(calls, repeats, **kwargs):  # The real rounds, then times the test knows (median per program).
    rounds = measure(calls, repeats, **kwargs)
    assert len(rounds.seconds) == 3 and all(t > 0 for times in rounds.seconds for t in times)
    return harness.Rounds([[0.2, 0.1, 0.3], [0.3, 0.3, 0.3], [0.25, 0.2, 0.4]], rounds.peaks)

  monkeypatch.setattr(harness, "round_robin", known_times)
  options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
  own, shared = benchmark_sweep.shared_batch([8], 2, options)
  assert (own["batches"], shared["batches"]) == ("one per member", "one shared")
  assert own["steps"] == shared["steps"] == 2
  assert own["single_step_s"] == shared["single_step_s"] == pytest.approx(0.1)  # Median 0.2 s over 2 steps.
  assert (own["program_step_s"], shared["program_step_s"]) == pytest.approx((0.15, 0.125))
  # 2 members one after another take 2 x 0.2 s: the programs' 0.3 s and 0.25 s are 1.33x and 1.6x faster.
  assert (own["vs_sequential"], shared["vs_sequential"]) == pytest.approx((4 / 3, 1.6))
