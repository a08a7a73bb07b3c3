"""Orbax checkpoints of the train state (the workdir's files and its guard: `ae_jax.workdir`).

Resuming is exact because everything random in training (data order, noise, samples) is a pure
function of (seed, step): restoring the state at step s and training on gives the parameters an
uninterrupted run would have had.
"""

import dataclasses
import os
from typing import Any

from absl import logging
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves the state every call to `save`, keeps the newest `max_to_keep`, restores the newest readable."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore_latest(self, template: Any) -> Any | None:
    """The newest checkpoint that restores into `template`'s structure; older ones if it is corrupt."""
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._restore(step, template)
      except Exception as e:  # A corrupt or partial checkpoint: fall back to the one before.
        logging.warning("Checkpoint at step %d cannot be restored (%s: %s); trying an older one.",
                        step, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
    return None

  def _restore(self, step: int, template: Any) -> Any:
    """Checkpoint `step` into `template`; one saved before the train state had `model_state` (TopK's
    counters) restores too, with the template's `model_state` (zero counters: every unit counts as
    having just fired, so none is dead before `dead_after` more examples)."""
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(template))
    except ValueError:
      if not _lacks_model_state(self._manager.item_metadata(step), template):
        raise
    fields = {f.name: getattr(template, f.name) for f in dataclasses.fields(template) if f.name != "model_state"}
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(fields))
    if template.model_state:
      logging.warning("Checkpoint at step %d predates the train state's model_state; its TopK counters of "
                      "examples since each unit fired restart from 0.", step)
    return template.replace(**restored)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def close(self) -> None:
    self._manager.close()


def _lacks_model_state(metadata: Any, template: Any) -> bool:
  tree = getattr(metadata, "tree", metadata)
  return (dataclasses.is_dataclass(template) and hasattr(template, "model_state") and isinstance(tree, dict)
          and "model_state" not in tree)
