"""Errors a run ends with, importable without JAX (the entry points map them to exit codes)."""

NON_FINITE_EXIT_CODE = 3  # Distinct from bad input's 2.


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss); the message says where it stopped and what to change."""


class TermError(RuntimeError):
  """A user's extra term raised; the message names the term, `__cause__` holds the user's exception."""


class ConfigError(ValueError):
  """A config value is invalid; the message names the key and the fix."""


class SweepError(ValueError):
  """A sweep is invalid; the one-line message says what is wrong and how to fix it."""
