"""Orbax checkpoints of the train state, and the guard that keeps one workdir to one run.

Resuming is exact because everything random in training (data order, noise, samples) is a pure
function of (seed, step): restoring the state at step s and training on gives the parameters an
uninterrupted run would have had.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

from absl import logging
import orbax.checkpoint as ocp

from ae_jax import config as config_lib

CONFIG_FILE = "run_config.json"
# Keys that may change between the runs that share a workdir: they do not change the trajectory.
# num_steps and num_epochs are not, under lr_schedule=warmup_cosine: its cosine ends at the last step.
RESUMABLE_KEYS = frozenset({"num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every",
                            "num_pictures", "iwae_samples", "overwrite", "data_dir", "data_placement",
                            "member_vectorize", "probe_examples", "probe_max_iter", "evaluate"})


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


def check_workdir(workdir: str, config) -> None:
  """Raises ConfigError if `workdir` holds a run with a different config (unless `config.overwrite`).

  Reads only: with several processes every one checks (and refuses alike), then process 0 alone
  calls `prepare_workdir`.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = comparable(config.to_dict())
  if os.path.exists(path) and not config.overwrite:
    with open(path, encoding="utf-8") as f:
      stored = comparable(json.load(f))
    changed = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    if changed:
      diff = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
      raise config_lib.ConfigError(
          f"workdir {workdir!r} holds a run with a different config ({diff}); use another --workdir, "
          "or pass --config.overwrite=True to discard that run")


def prepare_workdir(workdir: str, config) -> None:
  """Refuses a workdir that holds a different run, unless `config.overwrite`; then records `config`."""
  check_workdir(workdir, config)
  path = os.path.join(workdir, CONFIG_FILE)
  if config.overwrite:
    for name in ("checkpoints", "metrics.jsonl", CONFIG_FILE):
      target = os.path.join(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)


def comparable(values: dict[str, Any]) -> dict[str, Any]:
  """The keys that decide a run's trajectory, through JSON (tuples become lists, as in a stored config)."""
  keep = ()
  if values.get("lr_schedule") == "warmup_cosine":  # The length as asked: epochs, or steps without them.
    keep = ("num_epochs",) if values.get("num_epochs") else ("num_steps",)
  return {k: v for k, v in json.loads(json.dumps(values, default=str)).items()
          if k not in RESUMABLE_KEYS or k in keep}


def truncate_jsonl(path: str, step: int) -> None:
  """Drops rows logged after `step` (written after the checkpoint a resumed run restarts from)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(lines)
