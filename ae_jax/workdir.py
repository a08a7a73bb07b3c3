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
      comparison.md, comparison.png   experiments/compare.py's table (a sweep over the families)

`Result` is what a single run and a sweep member return: written by `write_status`/`write_eval` and
read back by `read_finished`, so the two agree on its fields by construction. This module sits low in
the package (it imports no JAX), below both the training loop and the report.
"""

import dataclasses
import json
import math
import os
import shutil
from typing import Any

from ae_jax import errors

CONFIG = "run_config.json"
HPARAMS = "hparams.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval.json"
EVAL_VALIDATION = "eval_validation.json"
STATUS = "status.json"
PICTURES = ("reconstructions", "denoising", "latent_scatter", "samples", "interpolations", "filters", "curves")
SWEEP = "sweep.json"
SEARCH = "search.json"
SEARCH_PLOT = "search.png"
SWEEP_TABLES = {"csv": "sweep.csv", "markdown": "sweep.md", "png": "sweep.png"}
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


def picture(workdir: str, name: str) -> str:
  """Where the picture `name` (one of PICTURES) goes."""
  if name not in PICTURES:
    raise ValueError(f"unknown picture {name!r}; the workdir's pictures are {', '.join(PICTURES)}")
  return os.path.join(workdir, f"{name}.png")


def sweep_tables(workdir: str) -> dict[str, str]:
  """{"csv", "markdown", "png"}: where a sweep's tables go."""
  return {kind: os.path.join(workdir, name) for kind, name in SWEEP_TABLES.items()}


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
        "or pass --config.overwrite=True to discard that run")


def prepare(workdir: str, config) -> None:
  """Refuses a workdir that holds a different run, unless `config.overwrite`; then records `config`."""
  check(workdir, config)
  if config.overwrite:
    for name in (CHECKPOINTS, METRICS, CONFIG):
      target = path(workdir, name)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  os.makedirs(workdir, exist_ok=True)
  with open(path(workdir, CONFIG), "w", encoding="utf-8") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of metrics.jsonl ([] before the first)."""
  file = path(workdir, METRICS)
  if not os.path.exists(file):
    return []
  with open(file, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops rows logged after `step` (written after the checkpoint a resumed run restarts from)."""
  file = path(workdir, METRICS)
  if not os.path.exists(file):
    return
  with open(file, encoding="utf-8") as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(file, "w", encoding="utf-8") as f:
    f.writelines(lines)


def has_eval_row(rows: list[dict[str, Any]], step: int) -> bool:
  """Whether the evaluation of `step` is logged already (a rerun of a finished run logs it once)."""
  return any(row["step"] == step and any(k.startswith(EVAL_PREFIX) for k in row) for row in rows)


def write_eval(workdir: str, step: int, metrics: dict[str, float], *, name: str = EVAL) -> str:
  """eval.json (or `name`: EVAL_VALIDATION); returns its path."""
  file = path(workdir, name)
  with open(file, "w", encoding="utf-8") as f:
    json.dump({"step": step, **metrics}, f, indent=2, allow_nan=True)
  return file


def write_status(workdir: str, result: Result, *, num_epochs: int) -> None:
  """status.json: how the run ended (`num_epochs` as asked, so a raised count trains on)."""
  status = {"status": result.status, "step": result.step, "message": result.message,
            "diverged_at": result.diverged_at, "num_epochs": num_epochs}
  if result.rung is not None:
    status["rung"] = result.rung
  with open(path(workdir, STATUS), "w", encoding="utf-8") as f:
    json.dump(status, f, indent=2)


def read_finished(workdir: str, config) -> Result | None:
  """A member's result read back from its files, if it finished (or diverged) with this config."""
  status, stored = _read_json(path(workdir, STATUS)), _read_json(path(workdir, CONFIG))
  if status is None or stored is None or comparable(stored) != comparable(config.to_dict()):
    return None
  if status["status"] == DONE and (status.get("num_epochs", 0) != config.num_epochs if config.num_epochs
                                   else status["step"] != config.num_steps):
    return None  # num_steps (or num_epochs: the data set and batch size are the same) was raised: train on.
  result = Result(status=status["status"], message=status.get("message", ""), step=status["step"],
                  diverged_at=status.get("diverged_at"), rung=status.get("rung"))
  for name, field in ((EVAL, "eval"), (EVAL_VALIDATION, "eval_validation")):
    evaluated = _read_json(path(workdir, name)) if status["status"] == DONE else None
    if evaluated is not None:
      setattr(result, field, {k: v for k, v in evaluated.items() if k != "step"})
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
  with open(path(workdir, SEARCH), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, allow_nan=True)


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
  with open(path(workdir, SWEEP), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, default=str)


def finite_or_text(value: float) -> float | str:
  """JSON has no NaN: non-finite metrics are written as text ('nan', 'inf')."""
  return value if math.isfinite(value) else str(value)


def _read_json(file: str) -> Any:
  if not os.path.exists(file):
    return None
  with open(file, encoding="utf-8") as f:
    return json.load(f)
