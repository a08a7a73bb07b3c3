"""One-line checks of config values (ConfigError naming the key), shared by `config` and `families`.

Imports nothing from `ae_jax` but `errors`, so a family's validation can use them without a cycle.
"""

from ae_jax import errors


def choice(config, key: str, choices) -> None:
  if config[key] not in choices:
    raise errors.ConfigError(f"--config.{key}={config[key]!r} is not one of: {', '.join(map(str, choices))}")


def positive(config, key: str, kind=int) -> None:
  value = config[key]
  if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
    raise errors.ConfigError(f"--config.{key}={value!r} must be a positive {kind.__name__}")


def non_negative(config, key: str) -> None:
  if config[key] < 0:
    raise errors.ConfigError(f"--config.{key}={config[key]} must be >= 0")
