"""benchmarks/benchmark_setpoint.py in --quick mode: its parts run and report every key; nothing is asserted
about the numbers, which mean nothing at 9 steps on the digits."""

from benchmarks import benchmark_setpoint


def test_quick_geco_reports_the_target_it_derived_and_what_it_achieved():
  (row,) = benchmark_setpoint.run_geco("digits", 9, quick=True)
  assert row["reconstruction_target"] == round(1.05 * row["plain_reconstruction"], 2)
  assert row["geco_reconstruction"] > 0 and row["status"] == "done"
  assert set(row) >= {"relative_error", "within_5pct", "kl_saved_nats", "geco_negative_elbo"}

