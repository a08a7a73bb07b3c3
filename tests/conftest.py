"""Test setup: 4 fake CPU devices (so data parallelism is exercised everywhere) and config helpers."""

import os
import sys
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 4)  # Before any JAX computation initialises the backend.
# Tests build many identical programs from fresh closures (one per run, per family); a persistent
# compilation cache lets every repeat skip XLA compilation, which dominates the suite's time on a
# CPU, and test programs are tiny: compiling them fast matters, running them fast does not. Set as
# environment variables so the CLI subprocesses the tests start get them too.
for _name, _value in (
    ("jax_compilation_cache_dir", os.environ.get("AE_JAX_TEST_COMPILATION_CACHE") or os.path.join(
        tempfile.gettempdir(), f"ae_jax_test_xla_cache_{os.getuid()}")),
    ("jax_persistent_cache_min_compile_time_secs", 0),
    ("jax_persistent_cache_min_entry_size_bytes", 0),
    ("jax_disable_most_optimizations", True),
):
  os.environ[_name.upper()] = str(_value)
  jax.config.update(_name, _value)

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXPERIMENTS)  # Config files import their default as `configs.default`.


def family_config(family: str):
  """The CPU-tiny test config set to `family` with the family config's own choices."""
  import configs  # pylint: disable=g-import-not-at-top

  base, tiny = configs.get(family), configs.get("test")
  for key in ("widths", "batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every", "num_pictures",
              "iwae_samples"):
    base[key] = tiny[key]
  base.latent_dim = min(base.latent_dim, 16)
  return base


@pytest.fixture
def tiny_config():
  return family_config
