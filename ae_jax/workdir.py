"""A run's record on disk: the one module that names a workdir's files, writes and reads them.

    workdir/
      run_config.json   the config the run was started with (guards the workdir: one run per folder)
      hparams.json      the member's hyperparameters and the device count (clu's hparams)
      metrics.jsonl     one JSON row per logged step: train losses, test_* losses, eval/* at the end
      checkpoints/      orbax checkpoints of the train state, by step
      eval.json         the end-of-run evaluation on the test split
      eval_validation.json   the same on the validation split (config.validation_fraction > 0)
      status.json       done | diverged (where, why) and the step reached
      *.png, events.*   pictures and TensorBoard files
    sweep workdir/
      sweep.json        the base config and the members; sweep.md, sweep.csv, sweep.png: the tables
      search.json       a search's plan and its decisions (halving: who went on at each rung)
      search.png        the members' validation metric against step, decisions marked (PBT: hp too)
      <member>/         each member's workdir as above
      frontier.md, frontier.csv, frontier.png   a sweep over set-point targets (`ae_jax.frontier`)
      comparison.md, comparison.png   experiments/compare.py's table (a sweep over the families)

`Result` is what a single run and a sweep member return: written by `write_status`/`write_eval` and
read back by `read_finished`, so the two agree on its fields by construction. This module sits low in
the package (it imports no JAX), below both the training loop and the report.
"""

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
from typing import Any

from absl import logging

from ae_jax import errors

CONFIG = "run_config.json"
LOCK = ".lock"  # Held (fcntl.flock) by the run using the workdir; the kernel drops it when the process dies.
HPARAMS = "hparams.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval.json"
EVAL_VALIDATION = "eval_validation.json"
STATUS = "status.json"
PICTURES = ("reconstructions", "denoising", "latent_scatter", "samples", "interpolations", "filters", "curves")
SWEEP = "sweep.json"
TENSORBOARD_PREFIX = "events.out.tfevents."  # TensorBoard's files (clu's writer names them).
SEARCH = "search.json"
SEARCH_PLOT = "search.png"
SWEEP_BEST = "best"  # sweep.json: {"select", "member"}, the member --select chose (ae_jax.load(workdir, "best")).
SWEEP_TABLES = {"csv": "sweep.csv", "markdown": "sweep.md", "png": "sweep.png"}
FRONTIER_TABLES = {"csv": "frontier.csv", "markdown": "frontier.md", "png": "frontier.png"}  # Set-point sweeps.
COMPARISON_TABLES = {"markdown": "comparison.md", "png": "comparison.png"}  # experiments/compare.py
EVAL_PREFIX = "eval/"  # metrics.jsonl: the end-of-run evaluation's keys.
EVAL_VALIDATION_PREFIX = "eval_val/"  # metrics.jsonl: the end-of-run evaluation on the validation split.
TEST_PREFIX = "test_"  # metrics.jsonl: the test split's losses at evaluation steps.
VALIDATION_PREFIX = "val_"  # metrics.jsonl: the validation split's losses at evaluation steps.

# Keys that may change between the runs that share a workdir: they do not change the trajectory.
# num_steps and num_epochs are not, under lr_schedule=warmup_cosine: its cosine ends at the last step.
RESUMABLE_KEYS = frozenset({"num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every",
                            "num_pictures", "iwae_samples", "overwrite", "data_dir", "data_placement",
                            "loop", "member_vectorize", "probe_examples", "probe_max_iter", "evaluate"})

DONE, DIVERGED, FAILED, STOPPED = "done", "diverged", "failed", "stopped"


@dataclasses.dataclass
class Result:
  """What a run (or a sweep member) ended with."""

  status: str = DONE  # done | diverged | failed (a sweep program that raised) | stopped (by a search)
  message: str = ""  # Why it stopped, when it did not finish.
  step: int = 0  # The step its parameters are from.
  diverged_at: int | None = None
  rung: int | None = None  # The rung of a search where it stopped.
  train: dict[str, float] = dataclasses.field(default_factory=dict)  # Last logged training metrics.
  test: dict[str, float] = dataclasses.field(default_factory=dict)  # Last test-split losses.
  eval: dict[str, float] = dataclasses.field(default_factory=dict)  # The end-of-run evaluation (test split).
  validation: dict[str, float] = dataclasses.field(default_factory=dict)  # Last validation-split losses.
  eval_validation: dict[str, float] = dataclasses.field(default_factory=dict)  # The evaluation on validation.
  history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # Rows logged by this call.
  paths: dict[str, str] = dataclasses.field(default_factory=dict)  # Pictures and eval.json.
  params: Any = None  # The trained parameters (None when read back from files).

  @property
  def done(self) -> bool:
    return self.status == DONE


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


def checkpoint_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, CHECKPOINTS, str(step))


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a saved step (orbax's folders are named by step): a run to resume."""
  folder = checkpoint_dir(workdir)
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def picture(workdir: str, name: str) -> str:
  """Where the picture `name` (one of PICTURES) goes."""
  if name not in PICTURES:
    raise ValueError(f"unknown picture {name!r}; the workdir's pictures are {', '.join(PICTURES)}")
  return os.path.join(workdir, f"{name}.png")


def sweep_tables(workdir: str) -> dict[str, str]:
  """{"csv", "markdown", "png"}: where a sweep's tables go."""
  return {kind: os.path.join(workdir, name) for kind, name in SWEEP_TABLES.items()}


def frontier_tables(workdir: str) -> dict[str, str]:
  return {kind: os.path.join(workdir, name) for kind, name in FRONTIER_TABLES.items()}


def comparison_tables(workdir: str) -> dict[str, str]:
  """{"markdown", "png"}: where experiments/compare.py puts its table."""
  return {kind: os.path.join(workdir, name) for kind, name in COMPARISON_TABLES.items()}


def comparable(values: dict[str, Any]) -> dict[str, Any]:
  """The keys that decide a run's trajectory, through JSON (tuples become lists, as in a stored config)."""
  keep = ()
  if values.get("lr_schedule") == "warmup_cosine":  # The length as asked: epochs, or steps without them.
    keep = ("num_epochs",) if values.get("num_epochs") else ("num_steps",)
  return {k: v for k, v in json.loads(json.dumps(values, default=str)).items()
          if k not in RESUMABLE_KEYS or k in keep}


RUNS = "runs"  # Where the entry points put a run (or a sweep) given no --workdir.


def default_for(config: dict[str, Any], defaults: dict[str, Any], *, swept: list[str] | None = None) -> str:
  """runs/<family>/<digest>, or runs/sweep_<family>/<digest> for a sweep of the keys `swept`: where a
  run goes given no --workdir.

  The digest is of the keys that decide a trajectory (`comparable`) where `config` differs from
  `defaults` (experiments/configs/default.py's), and of a sweep's swept keys other than the seed: the
  same command resumes in the same folder (a sweep with more values or seeds extends it), a config the
  workdir guard would refuse there gets another, and a key added to default.py later renames nothing.
  """
  config, defaults = comparable(config), comparable(defaults)
  changed = {k: config.get(k) for k in sorted(config.keys() | defaults.keys()) if config.get(k) != defaults.get(k)}
  if swept is not None:
    changed = {"config": changed, "swept": sorted(set(swept) - {"seed"})}
  digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode("utf-8")).hexdigest()[:8]
  return os.path.join(RUNS, f"{'sweep_' if swept is not None else ''}{config.get('family', 'run')}", digest)


MIN_FREE_BYTES = 50 * 2**20  # A run's checkpoints, pictures and metrics of a small model fit; less is refused.
_LOCKS: dict[str, int] = {}  # Workdirs this process holds the lock of: their open lock files.


def check_usable(workdir: str, *, flag: str = "--workdir") -> None:
  """Raises ConfigError (one line) if `workdir` cannot hold a run: a file, under a file, not writable,
  or on a disk with less than MIN_FREE_BYTES free. Reads only; imports no JAX (runs before it loads)."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.ConfigError(f"{flag}={workdir} is a file, not a folder; pass a folder (it is created if missing)")
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.ConfigError(f"{flag}={workdir} lies under {existing}, which is a file; pass a folder path")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is" if existing == workdir else f"would be created in {existing}, which is"
    raise errors.ConfigError(f"{flag}={workdir} {what} not writable; pass a folder you can write to")
  free = shutil.disk_usage(existing).free
  if free < MIN_FREE_BYTES:
    raise errors.ConfigError(f"{flag}={workdir}: only {free / 2**20:.1f} MiB free on its disk (a run needs "
                             f"{MIN_FREE_BYTES // 2**20} MiB); free space or pass a folder on another disk")


def lock(workdir: str, *, flag: str = "--workdir") -> None:
  """Takes the workdir's lock for the rest of this process, or raises ConfigError (one line) if another
  run holds it. An OS lock (fcntl.flock): the kernel releases it when the process ends, even by kill -9,
  so no stale lock is ever left to remove. Locking a workdir this process holds already does nothing."""
  workdir = os.path.abspath(workdir)
  if workdir in _LOCKS:
    return
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(path(workdir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
      raise
    raise errors.ConfigError(f"{flag}={workdir} is in use by another run (process {holder or '?'}); wait for it "
                             "to end (or end it), or pass another folder") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  _LOCKS[workdir] = fd


def check(workdir: str, config) -> None:
  """Raises ConfigError if `workdir` holds a run with a different config (unless `config.overwrite`).

  Reads only: with several processes every one checks (and refuses alike), then process 0 alone
  calls `prepare`.
  """
  stored = _read_json(path(workdir, CONFIG))
  if stored is None or config.overwrite:
    return
  stored, current = comparable(stored), comparable(config.to_dict())
  changed = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
  if changed:
    diff = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
    raise errors.ConfigError(
        f"workdir {workdir!r} holds a run with a different config ({diff}); use another --workdir, "
        "or pass --overwrite to discard that run")


def prepare(workdir: str, config) -> None:
  """Refuses a workdir that holds a different run, unless `config.overwrite`; then records `config`."""
  check(workdir, config)
  if config.overwrite:
    clear_run(workdir)
  os.makedirs(workdir, exist_ok=True)
  write_text(path(workdir, CONFIG), json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))


def run_files(workdir: str) -> list[str]:
  """Every file and folder of a run in `workdir` (what --overwrite discards; not a sweep's members)."""
  names = [CONFIG, HPARAMS, METRICS, CHECKPOINTS, EVAL, EVAL_VALIDATION, STATUS,
           *(f"{name}.png" for name in PICTURES)]
  if os.path.isdir(workdir):
    names += sorted(n for n in os.listdir(workdir) if n.startswith(TENSORBOARD_PREFIX) or ".tmp-" in n)
  return [path(workdir, name) for name in names if os.path.lexists(path(workdir, name))]


def clear_run(workdir: str) -> None:
  """Deletes the run recorded in `workdir` (`run_files`): nothing of it is read back or shown after."""
  for target in run_files(workdir):
    if os.path.isdir(target) and not os.path.islink(target):
      shutil.rmtree(target)
    else:
      os.remove(target)


def clear_sweep(workdir: str, member_names: list[str]) -> None:
  """Deletes a sweep's members, its search record and its tables (what --overwrite discards)."""
  for name in member_names:
    if name and os.path.isdir(path(workdir, name)):
      shutil.rmtree(path(workdir, name))
  for file in (SEARCH, SEARCH_PLOT, *SWEEP_TABLES.values(), *COMPARISON_TABLES.values()):
    if os.path.exists(path(workdir, file)):
      os.remove(path(workdir, file))


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of metrics.jsonl ([] before the first); a torn row (a run killed while appending it) is
  dropped with one log line."""
  file = path(workdir, METRICS)
  try:
    with open(file, encoding="utf-8", errors="replace") as f:
      lines = [line for line in f if line.strip()]
  except FileNotFoundError:
    return []
  rows = []
  for i, line in enumerate(lines):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or not isinstance(row.get("step"), int):
        raise ValueError("a row without a step")
      rows.append(row)
    except ValueError:
      where = "its last row" if i == len(lines) - 1 else f"row {i + 1}"
      logging.warning("%s: dropped %s, which is torn (%r...); a resumed run logs it again.", file, where,
                      line.strip()[:40])
  return rows


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops rows logged after `step` (written after the checkpoint a resumed run restarts from) and torn
  rows, so that the next row is appended after a whole line."""
  file = path(workdir, METRICS)
  if not os.path.exists(file):
    return
  rows = [row for row in read_metrics(workdir) if row["step"] <= step]
  write_text(file, "".join(json.dumps(row) + "\n" for row in rows))


def last_train_row(workdir: str) -> tuple[int, dict[str, float]] | None:
  """(step, training metrics) of the last training row logged (a rerun of a finished run reports it)."""
  for row in reversed(read_metrics(workdir)):
    if "loss" in row:
      return row["step"], {k: _number(v) for k, v in row.items()
                           if k != "step" and not k.startswith((TEST_PREFIX, VALIDATION_PREFIX))}
  return None


def _number(value: Any) -> Any:
  """A logged value back to a float ('nan', 'inf' are written as text: `finite_or_text`)."""
  if isinstance(value, str):
    try:
      return float(value)
    except ValueError:
      return value
  return value


def has_eval_row(rows: list[dict[str, Any]], step: int) -> bool:
  """Whether the evaluation of `step` is logged already (a rerun of a finished run logs it once)."""
  return any(row["step"] == step and any(k.startswith(EVAL_PREFIX) for k in row) for row in rows)


def write_eval(workdir: str, step: int, metrics: dict[str, float], *, name: str = EVAL) -> str:
  """eval.json (or `name`: EVAL_VALIDATION); returns its path."""
  file = path(workdir, name)
  write_text(file, json.dumps({"step": step, **metrics}, indent=2, allow_nan=True))
  return file


def write_status(workdir: str, result: Result, *, num_epochs: int) -> None:
  """status.json: how the run ended (`num_epochs` as asked, so a raised count trains on)."""
  status = {"status": result.status, "step": result.step, "message": result.message,
            "diverged_at": result.diverged_at, "num_epochs": num_epochs}
  if result.rung is not None:
    status["rung"] = result.rung
  write_text(path(workdir, STATUS), json.dumps(status, indent=2))


def read_finished(workdir: str, config) -> Result | None:
  """A member's result read back from its files, if it finished (or diverged) with this config."""
  status, stored = _read_json(path(workdir, STATUS)), _read_json(path(workdir, CONFIG))
  if (not isinstance(status, dict) or not isinstance(stored, dict) or not {"status", "step"} <= status.keys()
      or comparable(stored) != comparable(config.to_dict())):
    return None  # Unfinished, or a torn record: the member resumes from its checkpoint and writes it again.
  if status["status"] == DONE and (status.get("num_epochs", 0) != config.num_epochs if config.num_epochs
                                   else status["step"] != config.num_steps):
    return None  # num_steps (or num_epochs: the data set and batch size are the same) was raised: train on.
  result = Result(status=status["status"], message=status.get("message", ""), step=status["step"],
                  diverged_at=status.get("diverged_at"), rung=status.get("rung"))
  for name, field in ((EVAL, "eval"), (EVAL_VALIDATION, "eval_validation")):
    evaluated = _read_json(path(workdir, name)) if status["status"] == DONE else None
    if isinstance(evaluated, dict):
      setattr(result, field, {k: v for k, v in evaluated.items() if k != "step"})
    elif status["status"] == DONE and os.path.exists(path(workdir, name)):
      return None  # Finished, but its evaluation is torn: resumed at its last step, evaluated again.
  for row in read_metrics(workdir):
    if "loss" in row:
      result.train = {k: v for k, v in row.items()
                      if k != "step" and not k.startswith((TEST_PREFIX, VALIDATION_PREFIX))}
    for prefix, field in ((TEST_PREFIX, "test"), (VALIDATION_PREFIX, "validation")):
      if prefix + "loss" in row:
        setattr(result, field, {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)})
  return result


def read_search(workdir: str) -> dict[str, Any] | None:
  """search.json: a search's plan and its decisions so far (`ae_jax.search`), or None."""
  return _read_json(path(workdir, SEARCH))


def write_search(workdir: str, record: dict[str, Any]) -> None:
  write_text(path(workdir, SEARCH), json.dumps(record, indent=2, allow_nan=True))


def remove_search(workdir: str) -> None:
  if os.path.exists(path(workdir, SEARCH)):
    os.remove(path(workdir, SEARCH))


def read_sweep(workdir: str) -> dict[str, Any] | None:
  """sweep.json: {"base", "members", "member_names", and "drawn" for drawn members}, or None."""
  return _read_json(path(workdir, SWEEP))


def write_sweep(workdir: str, base: dict[str, Any], members: list[dict[str, Any]], names: list[str],
                drawn: dict[str, Any] | None = None) -> None:
  os.makedirs(workdir, exist_ok=True)
  record = {"base": base, "members": members, "member_names": names, **({"drawn": drawn} if drawn else {})}
  write_text(path(workdir, SWEEP), json.dumps(record, indent=2, default=str))


def record_best(workdir: str, select: str, member: str) -> None:
  """Adds to sweep.json the member `select` chose (a sweep rerun without --select records none)."""
  record = read_sweep(workdir)
  record[SWEEP_BEST] = {"select": select, "member": member}
  write_text(path(workdir, SWEEP), json.dumps(record, indent=2, default=str))


def finite_or_text(value: float) -> float | str:
  """JSON has no NaN: non-finite metrics are written as text ('nan', 'inf')."""
  return value if math.isfinite(value) else str(value)


def _read_json(file: str) -> Any:
  """The file's JSON, or None if it is missing or torn (one log line: the caller re-derives it)."""
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: written in place by an older version and torn.
    logging.warning("%s is torn or not JSON (%s); treating it as missing, it is written again.", file,
                    str(e).splitlines()[0][:80])
    return None


def write_text(file: str, text: str) -> None:
  """Writes `file` whole or not at all: a temporary name in the same folder, then a rename."""
  with atomic(file) as temporary, open(temporary, "w", encoding="utf-8", newline="") as f:
    f.write(text)


@contextlib.contextmanager
def atomic(file: str):
  """Yields a temporary path next to `file`; renamed to `file` if the block ends without an error, so a
  reader (or a run killed meanwhile) sees the old file or the new one, never a torn one."""
  file = os.fspath(file)
  temporary = f"{file}.tmp-{os.getpid()}"
  try:
    yield temporary
    os.replace(temporary, file)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)

