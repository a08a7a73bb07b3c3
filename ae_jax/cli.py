"""What experiment entry points share: one-line errors with exit code 2, and the closing report."""

import contextlib
import os
import sys
from typing import Any, NoReturn

from absl import flags

from ae_jax import config as config_lib
from ae_jax import data

USAGE_EXIT_CODE = 2


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT_CODE)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag in one line and exits 2 (instead of a usage dump)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  except (KeyError, AttributeError, ValueError, TypeError, OSError) as e:  # Bad --config.* overrides or files.
    fail(f"bad --config: {str(e).splitlines()[0] if str(e) else type(e).__name__}")


@contextlib.contextmanager
def clear_errors():
  """Turns the library's input errors into one line on stderr and exit code 2."""
  try:
    yield
  except (config_lib.ConfigError, data.DataError) as e:
    fail(str(e))


def report(result: dict[str, Any], workdir: str) -> None:
  """Prints the final metrics and where every output file is."""
  lines = ["", f"Final metrics (step {result['history'][-1]['step'] if result['history'] else 0}):"]
  for split in ("train", "test"):
    for name, value in sorted(result[split].items()):
      if name.startswith("loss"):
        lines.append(f"  {split:5s} {name:24s} {value:.4f}")
  lines.append(f"Outputs in {os.path.abspath(workdir)}:")
  lines.append(f"  metrics      {os.path.join(workdir, 'metrics.jsonl')}")
  for name, path in sorted(result["paths"].items()):
    lines.append(f"  {name:12s} {path}")
  print("\n".join(lines))
