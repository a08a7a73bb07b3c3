"""What experiment entry points share: flag parsing, one-line errors with exit code 2, quiet logs, the
closing report and the compilation cache. Starting several processes is `ae_jax.launch`'s job.

Nothing here imports JAX: the entry points check the workdir (`check_workdir`) before JAX loads, so a
bad one is refused at once. JAX comes with the config checks (`ae_jax.config` reads the family
registry); TensorFlow, which clu's TensorBoard writer and tfds load, only after the flags are checked.
"""

import contextlib
import errno
import logging as std_logging
import os
import re
import site
import sys
import sysconfig
import traceback
import types
from typing import Any, NoReturn

from absl import flags
from absl import logging as absl_logging

from ae_jax import data
from ae_jax import errors

USAGE_EXIT_CODE = 2
DISK_FULL_EXIT_CODE = 1  # A run that stopped on a full disk: what it saved stays, the same command resumes.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(USAGE_EXIT_CODE)


@contextlib.contextmanager
def flag_errors():
  """Reports bad flags, config files and --config.* overrides in one line, with exit code 2."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    message = _config_file_error(e)
    if message:
      fail(message)
    if isinstance(e, flags.Error):
      fail(str(e).splitlines()[0])
    if isinstance(e, (KeyError, AttributeError)):  # An override of a key the config does not have.
      text = str(e.args[0]) if e.args else ""
      while isinstance(e.args[0] if e.args else None, KeyError):  # ml_collections nests them.
        e = e.args[0]
        text = str(e.args[0]) if e.args else ""
      lines = [line.strip().strip("'\"") for line in text.splitlines() if line.strip()]
      fail(f"bad --config: no key {lines[0]!r}. {' '.join(lines[1:])}".rstrip(". ") if lines else "bad --config")
    if isinstance(e, (ValueError, TypeError, OSError)):
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      # A config file that fails to load reports the cause on its last line.
      fail(f"bad --config: {(lines[-1] if isinstance(e, OSError) else lines[0]) if lines else type(e).__name__}")
    raise


def _chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it was raised from or during, outermost first."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
  return chain


def _is_library(filename: str) -> bool:
  """Whether `filename` is Python's or an installed package's code (not the user's)."""
  if filename.startswith("<"):  # <frozen importlib._bootstrap> and the like.
    return True
  paths = sysconfig.get_paths()
  roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
  roots.update(getattr(site, "getsitepackages", list)())
  return any(os.path.abspath(filename).startswith(os.path.join(root, "")) for root in roots)


def first_line(error: BaseException) -> str:
  """'Type: first line of the message'."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _config_file_error(error: BaseException) -> str | None:
  """One line naming the config file, the line and the cause when `error` comes from loading a
  --config=FILE, else None.

  ml_collections loads the file while flags are parsed, and re-raises, wraps (absl, too) or defers
  what goes wrong, so the original is looked for along the chain: its traceback runs from
  ml_collections' loader into the user's file, whose first frame there is the config file.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top

  loader_dir = os.path.join(os.path.dirname(os.path.abspath(ml_collections.__file__)), "")
  chain = _chain(error)
  for e in chain:
    frames = traceback.extract_tb(e.__traceback__)
    loaded = [i for i, frame in enumerate(frames) if _loaded_by(frame, loader_dir)]
    if not loaded:
      continue
    user = [frame for frame in frames[loaded[0] + 1:] if not _is_library(frame.filename)]
    syntax = isinstance(e, SyntaxError) and e.filename is not None
    if syntax and not user:  # The config file itself does not compile.
      return f"config file {e.filename} line {e.lineno}: {type(e).__name__}: {e.msg}; fix the file"
    if user:
      path = user[0].filename
      line = [frame for frame in user if frame.filename == path][-1].lineno
      where = "importing it" if user[0].name == "<module>" else f"{user[0].name}()"
      inner = (e.filename, e.lineno) if syntax else (user[-1].filename, user[-1].lineno)
      at = "" if inner[0] == path else f" (at {inner[0]} line {inner[1]})"
      cause = f"{type(e).__name__}: {e.msg}" if syntax else first_line(e)
      return f"config file {path} line {line}: {where} raised {cause}{at}"
  for e in chain:
    if (isinstance(e, AttributeError) and getattr(e, "name", None) == "get_config"
        and isinstance(getattr(e, "obj", None), types.ModuleType)):
      return (f"config file {getattr(e.obj, '__file__', None) or e.obj.__name__} has no get_config(); "
              "define get_config() returning an ml_collections.ConfigDict")
    if isinstance(e, OSError) and "Path to config file is an empty string" in str(e):
      return "--config is empty; give a config file, e.g. --config=experiments/configs/default.py"
    if isinstance(e, OSError):
      missing = re.search(r"Failed loading config file[\s\S]*No such file or directory: '(.*)'", str(e))
      if missing:
        return f"config file {missing.group(1)} not found (from {os.getcwd()}); check the path given to --config"
      if e.filename and e.strerror and _loaded_by(e, loader_dir):  # A directory, a file it cannot read.
        return f"config file {e.filename}: {e.strerror}; check the path given to --config"
  return None


def _loaded_by(error_or_frame, loader_dir: str) -> bool:
  """Whether a frame is in `loader_dir`, or an exception's traceback passes through it."""
  if isinstance(error_or_frame, BaseException):
    return any(_loaded_by(frame, loader_dir) for frame in traceback.extract_tb(error_or_frame.__traceback__))
  return os.path.abspath(error_or_frame.filename).startswith(loader_dir)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag in one line and exits 2 (instead of a usage dump)."""
  with flag_errors(), _get_config_returning_none():
    argv = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      flags.FLAGS.config.to_dict()  # Loads the file and applies overrides now, inside this handler.
  if "config" in flags.FLAGS:
    explicit_num_steps(flags.FLAGS.config, _overrides(flags.FLAGS["config"]))
  quiet_library_logs()
  return argv


def _overrides(flag) -> dict[str, Any]:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  return config_flags.get_override_values(flag)


def explicit_num_steps(config, overrides: dict[str, Any]) -> None:
  """--config.num_steps given on the command line wins over a config file's num_epochs (which would
  otherwise decide the length, silently); both given is refused in one line."""
  if "num_steps" not in overrides or not config.num_epochs:
    return
  if "num_epochs" in overrides:
    fail(f"--config.num_steps={config.num_steps} and --config.num_epochs={config.num_epochs} both set the "
         "training length; pass one (num_epochs=0 lets num_steps count)")
  absl_logging.info("--config.num_steps=%d sets the length: the config file's num_epochs=%d is dropped.",
                    config.num_steps, config.num_epochs)
  config.num_epochs = 0


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_CODE = tuple(os.path.join(_ROOT, d) for d in ("ae_jax", "experiments", "benchmarks"))


def _own_or_warning(record) -> bool:
  return record.levelno >= std_logging.WARNING or os.path.abspath(record.pathname).startswith(_OWN_CODE)


def quiet_library_logs(verbose: bool | None = None) -> None:
  """Keeps the libraries' INFO lines (orbax's dictionaries at every save, clu's hyperparameter dump) out
  of the default log, so progress lines stand out: ae_jax's own INFO, everyone's warnings and errors.
  `--verbosity=1` shows everything."""
  handler = absl_logging.get_absl_handler()  # Every Python logger's records end there (jax's, orbax's, ours).
  if flags.FLAGS.verbosity >= 1 if verbose is None else verbose:
    handler.removeFilter(_own_or_warning)
    return
  if _own_or_warning not in handler.filters:
    handler.addFilter(_own_or_warning)
  # TensorFlow (loaded later, for TensorBoard files and tfds only) prints C++ INFO lines at import.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # Its oneDNN notice ignores the level; TF computes nothing.
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # Several processes: gRPC's connection notices.


@contextlib.contextmanager
def _get_config_returning_none():
  """ml_collections only logs a warning when a config file's get_config() returns None, and fails later
  on the None; this mutes the warning and says so in one line instead of what fails later."""
  paths = []

  def drop(record) -> bool:
    if "get_config() returned None" in str(record.msg):
      paths.append(str(record.args[0]) if record.args else "")
      return False
    return True

  logger = absl_logging.get_absl_logger()
  logger.addFilter(drop)
  try:
    yield
  except Exception:  # pylint: disable=broad-except
    if not paths:
      raise
  finally:
    logger.removeFilter(drop)
  if paths:
    fail(f"config file {paths[0]}: get_config() returned None; it must return an ml_collections.ConfigDict "
         "(a missing return statement?)")


@contextlib.contextmanager
def clear_errors():
  """Turns the library's errors into one line on stderr: exit code 2 for bad input, 3 for a non-finite loss,
  1 for a disk that filled up (what was saved stays: the same command resumes)."""
  try:
    yield
  except (errors.ConfigError, data.DataError, errors.SweepError) as e:
    fail(str(e))
  except errors.TrainingError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(errors.NON_FINITE_EXIT_CODE)
  except errors.TermError as e:  # One line naming the term, then the user's own traceback to debug.
    print(f"error: {e}", file=sys.stderr)
    traceback.print_exception(e.__cause__, file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)
  except Exception as e:  # pylint: disable=broad-except
    full = next((c for c in _chain(e) if isinstance(c, OSError) and c.errno in _DISK_FULL), None)
    if full is None:
      raise
    where = f" writing {full.filename}" if full.filename else ""
    print(f"error: the disk is full{where} ({os.strerror(full.errno)}); free space, then run the same command "
          "again: it resumes from the last checkpoint", file=sys.stderr)
    sys.exit(DISK_FULL_EXIT_CODE)


def check_workdir(workdir: str, *, flag: str = "--workdir") -> None:
  """Refuses in one line (exit 2) a workdir that cannot hold a run: a file, under a file, not writable,
  no space. Imports no JAX: called first, so the refusal is immediate."""
  from ae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  try:
    workdir_lib.check_usable(workdir, flag=flag)
  except errors.ConfigError as e:
    fail(str(e))


def lock_workdir(workdir: str, *, flag: str = "--workdir") -> None:
  """Holds `workdir`'s lock until this process ends; another run in it is refused in one line (exit 2).
  Called by the process that writes the files (process 0) only."""
  from ae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  try:
    workdir_lib.lock(workdir, flag=flag)
  except errors.ConfigError as e:
    fail(str(e))
  except OSError as e:
    fail(f"{flag}={workdir}: cannot create its lock file ({e.strerror}); pass a folder you can write to")


def report(result, workdir: str, config=None) -> None:
  """Prints the final losses, the test-split evaluation table, a set point's verdict (with `config`), and
  where every output file is (`result`: a `workdir.Result`)."""
  # Imported here: the report loads matplotlib and scikit-learn, which a bad flag never needs.
  from ae_jax import report as report_lib  # pylint: disable=g-import-not-at-top
  from ae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  lines = ["", f"Final metrics (step {result.step}):"]
  for split, values in (("train", result.train), ("test", result.test)):
    for name, value in sorted(values.items()):
      if name.startswith("loss"):
        lines.append(f"  {split:5s} {name:24s} {value:.4f}")
  if result.eval:
    lines += ["", "Evaluation on the test split:", report_lib.format_table(result.eval), ""]
    warning = report_lib.useless(result.eval)
    if warning:
      lines += [f"warning: {warning}", ""]
  lines += report_lib.setpoint_lines(config, result) if config is not None else []
  lines.append(f"Outputs in {os.path.abspath(workdir)}:")
  outputs = {"metrics": workdir_lib.path(workdir, workdir_lib.METRICS), **dict(sorted(result.paths.items()))}
  width = max(map(len, outputs))
  lines.extend(f"  {name:{width}s}  {path}" for name, path in outputs.items())
  print("\n".join(lines))


def exit_for_sweep(out: dict[str, Any]) -> None:
  """Exit code 1 if a member's program failed (rerun the command to retry it), 3 if every member
  diverged (nothing to compare), else 0."""
  failed = [row["member"] for row in out["rows"] if str(row["status"]).startswith("failed")]
  if failed:
    print(f"error: {len(failed)} member(s) failed ({', '.join(failed[:4])}); see the log above, then run the "
          "same command again to retry them", file=sys.stderr)
    sys.exit(1)
  if out["rows"] and all(str(row["status"]).startswith("diverged") for row in out["rows"]):
    print(f"error: all {len(out['rows'])} members diverged (their losses became non-finite; the table says "
          "where); lower --config.learning_rate or the penalty weights", file=sys.stderr)
    sys.exit(errors.NON_FINITE_EXIT_CODE)


def use_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk (~/.cache/ae_jax/xla): a rerun, a resumed run or the next
  member compiles nothing it compiled before. JAX_COMPILATION_CACHE_DIR moves it;
  JAX_ENABLE_COMPILATION_CACHE=false turns it off."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.config.jax_compilation_cache_dir is None:
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ae_jax", "xla")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def default_workdir(config, swept: list[str] | None = None) -> str:
  """`workdir.default_for` this config (a sweep of the keys `swept`), printed: where a run given no
  --workdir goes, the same folder for the same command."""
  from ae_jax import configs  # pylint: disable=g-import-not-at-top
  from ae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir = workdir_lib.default_for(config.to_dict(), configs.get("default").to_dict(), swept=swept)
  print(f"workdir: {workdir} (this config's own folder: the same command resumes there; --workdir=DIR to choose)",
        flush=True)
  return workdir
