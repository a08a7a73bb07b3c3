"""Orbax checkpoints of the train state, each with a checksum of its arrays (the workdir's other files
and its guard: `ae_jax.workdir`).

Resuming is exact because everything random in training (data order, noise, samples) is a pure
function of (seed, step): restoring the state at step s and training on gives the parameters an
uninterrupted run would have had.

A checkpoint counts as good when it restores into the train state's structure and its arrays match
the checksum recorded when it was saved (flipped bytes are caught). On resume the newest good one is
used; newer ones that are not are named in one line each and deleted, so the resumed run saves them
again.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
from absl import logging as absl_logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from ae_jax import workdir as workdir_lib

ITEM = "default"  # The item CheckpointManager saves a single StandardSave under.
CHECKSUM = "ae_jax_checksum.json"  # In each step's folder: the sha256 of every array, in tree order.


class Checkpointer:
  """Saves the state every call to `save`, keeps the newest `max_to_keep`, restores the newest good one."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self._directory = os.path.abspath(directory)
    with _orbax_quiet():  # It reads every step's metadata: a damaged one is named by `restore_latest`.
      self._manager = ocp.CheckpointManager(
          self._directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False))
    self._last_good: int | None = None  # Saved by this run, or verified when restored.

  def save(self, step: int, state: Any) -> None:
    """Saves `state` at `step` with its checksum (every process takes part; process 0 writes the checksum)."""
    if step in self._manager.all_steps():  # Left by a run that went further from an older state: replace it.
      if jax.process_index() == 0:
        shutil.rmtree(self._step_dir(step), ignore_errors=True)
      self._manager.reload()
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      digest = checksum(state)
      workdir_lib.write_text(os.path.join(self._step_dir(step), CHECKSUM), json.dumps(digest))
    self._last_good = step

  def restore_latest(self, template: Any) -> Any | None:
    """The newest good checkpoint, restored into `template`'s structure (None if there is none).

    A checkpoint that does not restore or does not match its checksum is skipped with one line naming
    it; process 0 deletes the ones newer than the checkpoint used (the resumed run saves them again).
    Every process must call `reload` after a barrier that follows this, so all agree on the steps.
    """
    with _orbax_quiet():
      self._manager.reload()
    steps = sorted(self._manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      try:
        with _orbax_quiet():
          restored = self._restore_verified(step, template)
      except Exception as e:  # pylint: disable=broad-except  # Missing, truncated, mismatched: try an older one.
        damaged.append(step)
        logging.warning("Checkpoint %s cannot be restored (%s); it is deleted and saved again when training "
                        "gets there; %s.", self._step_dir(step), _first_line(e),
                        "trying an older one" if step != steps[-1] else "no older one is left")
        continue
      self._last_good = step
      self._remove(damaged)
      return restored
    if damaged:
      logging.warning("No checkpoint in %s restores: training starts again from step 0.", self._directory)
    self._remove(damaged)
    return None

  def reload(self) -> None:
    """Re-reads the steps on disk (after process 0 removed damaged ones)."""
    self._manager.reload()

  def _remove(self, steps: list[int]) -> None:
    if steps and jax.process_index() == 0:
      for step in steps:
        shutil.rmtree(self._step_dir(step), ignore_errors=True)
    with _orbax_quiet():
      self._manager.reload()

  def _step_dir(self, step: int) -> str:
    return os.path.join(self._directory, str(step))

  def _restore_verified(self, step: int, template: Any) -> Any:
    restored, saved = self._restore(step, template)
    file = os.path.join(self._step_dir(step), CHECKSUM)
    try:
      with open(file, encoding="utf-8") as f:
        expected = json.load(f)
    except FileNotFoundError:  # Saved by an older version (or killed between the two writes): arrays only.
      return restored
    except ValueError as e:
      raise ValueError(f"its checksum file is torn ({_first_line(e)})") from None
    if checksum(saved) != expected:
      raise ValueError("its arrays do not match the checksum recorded when it was saved")
    return restored

  def _restore(self, step: int, template: Any) -> tuple[Any, Any]:
    """(the state, the tree as saved): checkpoint `step` into `template`. One saved before the train state
    had `model_state` (TopK's counters) restores too, with the template's `model_state` (zero counters:
    every unit counts as having just fired, so none is dead before `dead_after` more examples)."""
    path = os.path.join(self._step_dir(step), ITEM)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"its item folder {ITEM!r} is missing")
    with ocp.StandardCheckpointer() as checkpointer:  # A fresh one: a failed restore leaves no state behind.
      try:
        restored = _check_shapes(checkpointer.restore(path, template), template)
        return restored, restored
      except ValueError:
        if not _lacks_model_state(checkpointer.metadata(path), template):
          raise
      fields = {f.name: getattr(template, f.name) for f in dataclasses.fields(template) if f.name != "model_state"}
      restored = _check_shapes(checkpointer.restore(path, fields), fields)
    if template.model_state:
      logging.warning("Checkpoint at step %d predates the train state's model_state; its TopK counters of "
                      "examples since each unit fired restart from 0.", step)
    return template.replace(**restored), type(template)(**{**restored, "model_state": {}})

  def latest_step(self) -> int | None:
    """The newest checkpoint on disk (not checked; `last_good` is)."""
    return self._manager.latest_step()

  def last_good(self) -> int | None:
    """The newest checkpoint known good: saved by this run, or verified when the run resumed from it."""
    return self._last_good

  def close(self) -> None:
    self._manager.close()


def checksum(tree: Any) -> list[str]:
  """The sha256 of each array of `tree` (dtype, shape and bytes), in tree order."""
  digests = []
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    x = np.ascontiguousarray(np.asarray(leaf))
    digests.append(hashlib.sha256(f"{x.dtype.str}{x.shape}".encode() + x.tobytes()).hexdigest())
  return digests


def _check_shapes(restored: Any, template: Any) -> Any:
  """Raises ValueError if an array came back with another shape than the template's."""
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(template)):
    if np.shape(got) != np.shape(want):
      raise ValueError(f"an array has shape {np.shape(got)}, the train state's has {np.shape(want)}")
  return restored


@contextlib.contextmanager
def _orbax_quiet():
  """Keeps orbax's own lines about a damaged checkpoint out of the log (ours names it in one line)."""
  logger = absl_logging.get_absl_logger()  # Orbax logs through absl's logger.

  def drop(record) -> bool:
    return "orbax" not in record.pathname

  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _lacks_model_state(metadata: Any, template: Any) -> bool:
  tree = getattr(metadata, "item_metadata", None) or getattr(metadata, "tree", metadata)
  tree = getattr(tree, "tree", tree)
  return (dataclasses.is_dataclass(template) and hasattr(template, "model_state") and isinstance(tree, dict)
          and "model_state" not in tree)
