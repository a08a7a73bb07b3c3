"""Measurements of ae_jax: run each as `python -m benchmarks.NAME` from the repository root (docs/speed.md).

`harness` holds what they share (the round-robin timer, the matmul peak, device info, JSON lines, the
common flags, the plain loops' Adam step); every script times the run `ae_jax.program.build` assembles.
"""
