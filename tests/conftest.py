"""Test setup: 4 fake CPU devices (so data parallelism is exercised everywhere) and config helpers."""

import os
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)  # Before any JAX computation initialises the backend.

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXPERIMENTS)  # Config files import their default as `configs.default`.


def family_config(family: str):
  """The CPU-tiny test config set to `family` with the family config's own choices."""
  import importlib  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top

  base = importlib.import_module(f"configs.{family}").get_config()
  tiny = test_config.get_config()
  for key in ("widths", "batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every", "num_pictures",
              "iwae_samples"):
    base[key] = tiny[key]
  base.latent_dim = min(base.latent_dim, 16)
  return base


@pytest.fixture
def tiny_config():
  return family_config
