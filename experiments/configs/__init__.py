"""Experiment configs: one file per experiment, each with `get_config()`; `get` loads one by name.

    import configs                     # experiments/ is on sys.path (as for train.py and the tests)
    config = configs.get("vae", latent_dim=16)
    config = configs.get("reproduce.iwae2015:vae_cpu")    # a variant, as --config=FILE:VARIANT

Family files import `default` and override what differs; `test` is the CPU-tiny config of the tests.
"""

import importlib

import ml_collections


def get(name: str, **overrides) -> ml_collections.ConfigDict:
  """The config of `configs/<name>.py` (dots or slashes for subfolders, `:variant` for get_config's
  argument), with `overrides` applied."""
  name, _, variant = name.partition(":")
  module = importlib.import_module(f"{__name__}.{name.replace('/', '.').removesuffix('.py')}")
  config = module.get_config(variant) if variant else module.get_config()
  config.update(overrides)
  return config
