"""What experiment entry points share: one-line errors with exit code 2, and the closing report."""

import contextlib
import os
import sys
from typing import Any, NoReturn

from absl import flags

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import errors
from ae_jax import sweep_spec

USAGE_EXIT_CODE = 2


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT_CODE)


@contextlib.contextmanager
def flag_errors():
  """Reports bad flags, config files and --config.* overrides in one line, with exit code 2."""
  try:
    yield
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  except (KeyError, AttributeError) as e:  # An override of a key the config does not have.
    text = str(e.args[0]) if e.args else ""
    while isinstance(e.args[0] if e.args else None, KeyError):  # ml_collections nests them.
      e = e.args[0]
      text = str(e.args[0]) if e.args else ""
    lines = [line.strip().strip("'\"") for line in text.splitlines() if line.strip()]
    fail(f"bad --config: no key {lines[0]!r}. {' '.join(lines[1:])}".rstrip(". ") if lines else "bad --config")
  except (ValueError, TypeError, OSError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # A config file that fails to load reports the cause on its last line.
    fail(f"bad --config: {(lines[-1] if isinstance(e, OSError) else lines[0]) if lines else type(e).__name__}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag in one line and exits 2 (instead of a usage dump)."""
  with flag_errors():
    argv = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      flags.FLAGS.config.to_dict()  # Loads the file and applies overrides now, inside this handler.
    return argv


@contextlib.contextmanager
def clear_errors():
  """Turns the library's errors into one line on stderr: exit code 2 for bad input, 3 for a non-finite loss."""
  try:
    yield
  except (config_lib.ConfigError, data.DataError, sweep_spec.SweepError) as e:
    fail(str(e))
  except errors.TrainingError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(errors.NON_FINITE_EXIT_CODE)


def report(result: dict[str, Any], workdir: str) -> None:
  """Prints the final losses, the test-split evaluation table, and where every output file is."""
  # Imported here: it loads JAX, which the entry points keep off the fast path of a bad flag.
  from ae_jax import report as report_lib  # pylint: disable=g-import-not-at-top

  lines = ["", f"Final metrics (step {result['history'][-1]['step'] if result['history'] else 0}):"]
  for split in ("train", "test"):
    for name, value in sorted(result[split].items()):
      if name.startswith("loss"):
        lines.append(f"  {split:5s} {name:24s} {value:.4f}")
  if result.get("eval"):
    lines += ["", "Evaluation on the test split:", report_lib.format_table(result["eval"]), ""]
  lines.append(f"Outputs in {os.path.abspath(workdir)}:")
  outputs = {"metrics": os.path.join(workdir, "metrics.jsonl"), **dict(sorted(result["paths"].items()))}
  width = max(map(len, outputs))
  lines.extend(f"  {name:{width}s}  {path}" for name, path in outputs.items())
  print("\n".join(lines))


def exit_for_sweep(out: dict[str, Any]) -> None:
  """Exit code 1 if a member's program failed (rerun the command to retry it), else 0."""
  failed = [row["member"] for row in out["rows"] if str(row["status"]).startswith("failed")]
  if failed:
    print(f"error: {len(failed)} member(s) failed ({', '.join(failed[:4])}); see the log above, then run the "
          "same command again to retry them", file=sys.stderr)
    sys.exit(1)
