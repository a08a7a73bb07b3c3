"""ae_jax: autoencoders in JAX/Flax with pure-function losses and a data-parallel jitted step.

`ae_jax.load(workdir)` gives a trained run back as a model (`ae_jax.trained`); `ae_jax.configs.get(name)`
an experiment config. Both are imported on first use: `import ae_jax` alone loads no JAX.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
  if name == "load":
    return importlib.import_module("ae_jax.trained").load
  if name in ("configs", "trained"):
    return importlib.import_module(f"ae_jax.{name}")
  raise AttributeError(f"module 'ae_jax' has no attribute {name!r}")
