"""Starting a run as several processes (hosts) of JAX's multi-controller runtime (`jax.distributed`).

Every entry point defines the flags (`define_distributed_flags`), calls `initialize_distributed()`
before any JAX computation, and wraps its work in `errors_end_all_processes()`, so that one failing
process ends the others promptly instead of leaving them waiting on a collective. On one process all
three do nothing.
"""

import atexit
import contextlib
import os
import re
import sys
import threading
from typing import NoReturn

from absl import flags
from absl import logging as absl_logging

from ae_jax import cli

fail, _first_line, USAGE_EXIT_CODE = cli.fail, cli.first_line, cli.USAGE_EXIT_CODE


_PROCESS: tuple[int, int] | None = None  # (process index, count) once jax.distributed is initialized.
# Gloo (JAX's CPU collectives, C++) prints each connection to stdout from its own threads, a line sometimes
# split in two: "[Gloo] Rank 1 is connected to 1 peer ranks. " and "Expected number ... is : 1".
_GLOO_LINE = re.compile(rb"^(\[Gloo\] .*|.*Expected number of connected peer ranks is : \d+\s*)$")
_RESTORE_STDOUT = []  # The function that ends the relay of `_stdout_without_gloo`, once it runs.
# JAX's cluster detections this entry point trusts to start several processes (`jax.distributed.initialize()`
# with no arguments): SLURM's srun, Open MPI's mpirun, a Cloud TPU VM of a pod slice (GCE or GKE).
_AUTO_CLUSTERS = ("slurm", "ompi", "gcetpu", "gketpu")


def define_distributed_flags() -> None:
  """The flags of a run over several processes (hosts); none of them is needed on one process."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, which all processes connect to; "
                      "with --num_processes and --process_id. Left out under SLURM, Open MPI or on a TPU pod "
                      "slice, JAX finds all three; elsewhere one process runs.")
  flags.DEFINE_integer("num_processes", None, "How many processes take part (each runs this same command).",
                       lower_bound=1)
  flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 (0 writes the files).",
                       lower_bound=0)
  flags.DEFINE_integer("distributed_timeout", 300, "Seconds every process waits for all the others to connect "
                       "before it stops with an error.", lower_bound=1)
  flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds after which a process that stopped answering counts "
                       "as dead, and the others stop with an error.", lower_bound=1)


def _auto_cluster() -> str | None:
  """The name of the cluster JAX detects with more than one process in it, else None."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top  # JAX's own detection.
    for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
      if env.name in _AUTO_CLUSTERS and env.is_env_present() and (env.get_process_count() or 1) > 1:
        return env.name
  except Exception as e:  # pylint: disable=broad-except  # Detection must not stop a single-process run.
    absl_logging.warning("Cluster detection failed (%s); running as one process.", _first_line(e))
  return None


def initialize_distributed() -> None:
  """Joins the processes of a multi-process run, before any JAX computation; nothing on one process.

  With --coordinator_address/--num_processes/--process_id, or under a cluster JAX detects (SLURM,
  Open MPI, a TPU pod slice), calls `jax.distributed.initialize`. A process that cannot reach all the
  others within --distributed_timeout stops with one line; after it, `errors_end_all_processes`
  makes any error end this process promptly (and with it, through JAX, the others).
  """
  global _PROCESS
  address, count, index = (flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id)
  given = [name for name, v in (("--coordinator_address", address), ("--num_processes", count),
                                ("--process_id", index)) if v is not None]
  if given and len(given) < 3:
    missing = sorted({"--coordinator_address", "--num_processes", "--process_id"} - set(given))
    fail(f"{', '.join(given)} needs {' and '.join(missing)} too (every process gets the same "
         "--coordinator_address and --num_processes, and its own --process_id)")
  if given and index >= count:
    fail(f"--process_id={index} must be below --num_processes={count}")
  if given and count == 1:
    return
  cluster = None if given else _auto_cluster()
  if not given and cluster is None:
    return  # One process: no coordinator.
  import signal  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  _stdout_without_gloo()
  timeout = flags.FLAGS.distributed_timeout
  who = f"process {index} of {count}" if given else f"this process ({cluster})"
  where = f"the coordinator at {address}" if address else "the coordinator"
  connected = threading.Event()

  def watchdog():
    # JAX aborts with a C++ stack trace some time after its own timeout; say what happened first.
    if not connected.wait(timeout):
      _exit_now(1, f"{who} could not connect to all processes through {where} within "
                f"--distributed_timeout={timeout}s; check that all processes were started with the same "
                "--coordinator_address and --num_processes and distinct --process_id, that process 0 runs on "
                "that host, and that its port is reachable from every host")

  threading.Thread(target=watchdog, daemon=True, name="distributed-watchdog").start()
  try:
    jax.distributed.initialize(address, count, index, initialization_timeout=timeout + 30,
                               heartbeat_timeout_seconds=flags.FLAGS.heartbeat_timeout)
  except Exception as e:  # pylint: disable=broad-except
    _exit_now(USAGE_EXIT_CODE, f"{who}: jax.distributed.initialize failed: {_first_line(e)}; pass "
              "--coordinator_address, --num_processes and --process_id")
  connected.set()
  # JAX's preemption notifier catches SIGTERM; ae_jax does not use it, so `kill` and `timeout` end a run.
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  _PROCESS = (jax.process_index(), jax.process_count())
  absl_logging.info("Process %d of %d, %d of %d devices here.", *_PROCESS, jax.local_device_count(),
                    jax.device_count())


def _stdout_without_gloo() -> None:
  """Relays this process's stdout (file descriptor 1) through a pipe that drops Gloo's connection notices,
  so the default output holds what ae_jax prints; drained and undone at exit."""
  sys.stdout.flush()
  original = os.dup(1)
  read, write = os.pipe()
  os.dup2(write, 1)
  os.close(write)

  def relay():
    pending = b""
    with os.fdopen(read, "rb", buffering=0) as pipe:
      for chunk in iter(lambda: pipe.read(65536), b""):
        *lines, pending = (pending + chunk).split(b"\n")
        _write_all(original, b"".join(line + b"\n" for line in lines if not _GLOO_LINE.match(line)))
    if pending and not _GLOO_LINE.match(pending):
      _write_all(original, pending)

  thread = threading.Thread(target=relay, daemon=True, name="stdout-without-gloo")
  thread.start()

  def restore():
    if _RESTORE_STDOUT:
      _RESTORE_STDOUT.clear()
      try:
        sys.stdout.flush()
      except Exception:  # pylint: disable=broad-except
        pass
      os.dup2(original, 1)  # The pipe's last writer closes: the relay drains it and ends.
      thread.join(timeout=5)

  _RESTORE_STDOUT.append(restore)
  atexit.register(restore)


def _write_all(fd: int, data: bytes) -> None:
  while data:
    data = data[os.write(fd, data):]


def is_main_process() -> bool:
  """Whether this process prints the report (process 0, or the only one)."""
  return _PROCESS is None or _PROCESS[0] == 0


def _exit_now(code: int, message: str | None = None) -> NoReturn:
  """Prints `message` as one error line and ends the process now: no atexit hooks, so neither a
  collective stuck on a dead process nor JAX's shutdown barrier can hold it."""
  if message:
    print(f"error: {message}", file=sys.stderr)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass
  for restore in list(_RESTORE_STDOUT):  # What was printed reaches the real stdout before the end.
    restore()
  os._exit(code)  # pylint: disable=protected-access


def lost_a_process(error: BaseException) -> bool:
  """Whether `error` says another process of this run is gone (a closed connection, a missed heartbeat)."""
  text = str(error)
  return _PROCESS is not None and any(s in text for s in (
      "Connection closed by peer", "Connection reset by peer", "Gloo", "unhealthy", "UNAVAILABLE"))


@contextlib.contextmanager
def errors_end_all_processes():
  """With several processes, any error ends this process at once with one line naming it; the others
  then fail their next collective with a closed connection (named below), or JAX ends them once this
  one misses --heartbeat_timeout. Without this, the others would wait on a collective or on JAX's
  shutdown barrier. On one process it changes nothing."""
  if _PROCESS is None:
    yield
    return
  who = f"process {_PROCESS[0]} of {_PROCESS[1]}"
  try:
    yield
  except SystemExit as e:  # fail() and friends printed their line already.
    _exit_now(e.code if isinstance(e.code, int) else 1)
  except BaseException as e:  # pylint: disable=broad-except
    if lost_a_process(e):
      _exit_now(1, f"{who}: lost another process ({_first_line(e)[:200]}); see the other processes' logs "
                "for the first error")
    absl_logging.exception("%s failed:", who)
    _exit_now(1, f"{who}: {_first_line(e)}; the other processes stop too (see the traceback above)")
