"""The experiment configs from Python, without sys.path tricks: `ae_jax.configs.get("vae", beta=4)`.

The config files stay where `--config=experiments/configs/vae.py` finds them; this module's package
path is that folder, so `ae_jax.configs.vae` is experiments/configs/vae.py and the files import their
default as `from ae_jax.configs import default`, both as modules of this package and when an entry
point loads them by path. Works from a source checkout (the README's `pip install -e .`).
"""

import importlib
import importlib.util
import os

import ml_collections

from ae_jax import errors

DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")
__path__ = [DIRECTORY]  # pylint: disable=invalid-name  # Makes this module a package of the config files.


def get(name: str, **overrides) -> ml_collections.ConfigDict:
  """The config of experiments/configs/<name>.py (dots or slashes for subfolders, `:variant` for
  get_config's argument, as --config=FILE:VARIANT), or of a .py file path, with `overrides` applied.

  ConfigError (one line) for a name that is not a config, or an override of a key it does not have.
  """
  name, _, variant = name.partition(":")
  if name.endswith(".py") and os.path.isfile(name):
    spec = importlib.util.spec_from_file_location(os.path.basename(name).removesuffix(".py"), name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  else:
    dotted = name.removesuffix(".py").replace("/", ".").replace(os.sep, ".")
    if not os.path.isfile(os.path.join(DIRECTORY, *dotted.split(".")) + ".py"):
      raise errors.ConfigError(f"no config {name!r}; the configs are {', '.join(names())} (or a path to a .py file)")
    module = importlib.import_module(f"{__name__}.{dotted}")
  config = module.get_config(variant) if variant else module.get_config()
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise errors.ConfigError(f"config {name!r} has no key {unknown[0]!r}; default.py lists every key")
  config.update(overrides)
  return config


def names() -> list[str]:
  """The configs `get` knows, as it spells them: 'vae', 'reproduce.iwae2015', ..."""
  found = []
  for root, _, files in os.walk(DIRECTORY):
    prefix = os.path.relpath(root, DIRECTORY).replace(os.sep, ".")
    found += [("" if prefix == "." else f"{prefix}.") + f[:-3]
              for f in files if f.endswith(".py") and f != "__init__.py"]
  return sorted(found)
