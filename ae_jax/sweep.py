"""Sweeps: many settings and seeds of one base config, trained as few programs as their structure allows.

    results = sweep.run(base_config, [{"beta": 0.5, "seed": 0}, {"beta": 2.0, "seed": 0}], "runs/beta")

Members (override dicts, see `ae_jax.sweep_spec`) that share a structure train together as one program
(`train.train_members`): their hyperparameters are a stacked pytree, their states carry a member axis
split over the devices. Groups of different structure (e.g. a sweep over `family`) run one after another.
Each member writes what a single run writes into `workdir/<member name>/`; the sweep adds `sweep.json`
(what it is) and its tables (one row per member, and mean ± std over seeds): `ae_jax.workdir` names them.

Rerunning the same sweep resumes it: finished members are re-reported from their files, the others
resume from their checkpoints. New members may be added to a finished sweep (only they train); a
sweep with another base config is refused unless `overwrite`.
"""

from collections.abc import Sequence
import copy
import math
import os
from typing import Any

from absl import logging

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import errors
from ae_jax import families
from ae_jax import frontier
from ae_jax import hparams
from ae_jax import launch
from ae_jax import multihost
from ae_jax import pbt
from ae_jax import search as search_lib
from ae_jax import setpoint
from ae_jax import sweep_spec
from ae_jax import sweep_table
from ae_jax import workdir as workdir_lib

BASE_METRICS = ("train_loss", "test_loss")
VAL_LOSS = "val_loss"  # A row's validation-split loss (config.validation_fraction > 0).


def member_configs(base_config, members: list[dict[str, Any]]) -> list[Any]:
  """The validated config of each member (a ConfigError names the member that is wrong)."""
  configs = []
  for overrides in members:
    config = copy.deepcopy(base_config)
    try:
      sweep_spec.apply(config, overrides)
      config_lib.validate(config)
      unread = families.unread_hparams(config, overrides)
      if unread:
        raise config_lib.ConfigError(
            f"--config.{unread[0]} is not read by the {config.family} family (it reads "
            f"{', '.join(families.get(config.family).hparams) or 'no family hyperparameter'}); drop it from the "
            "sweep, or sweep a family that reads it")
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"sweep member {_describe(overrides)}: {e}") from None
    configs.append(config)
  return configs


def _check_fits(config, ds: data.Dataset, overrides: dict[str, Any]) -> None:
  """ConfigError naming the member if its batch is larger than what it trains on (before anything trains)."""
  size = data.training_size(ds, config.validation_fraction)
  if config.batch_size > size:
    raise config_lib.ConfigError(f"sweep member {_describe(overrides)}: --config.batch_size={config.batch_size} "
                                 f"exceeds the {size} training examples of {ds.name}; lower it")


def _describe(overrides: dict[str, Any]) -> str:
  return ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(base config)"


def term_names(config) -> list[str]:
  """The names of the config's user terms (`config.extra_terms`)."""
  return [name for name, _, _ in hparams.parse_extra_terms(config.extra_terms)]


def metric_columns(configs) -> list[str]:
  """train_loss, test_loss, each user term's train and test loss, then the key evaluation metrics of
  the families in the sweep."""
  columns = list(BASE_METRICS)
  for config in configs:
    columns += [f"{split}_loss_{name}" for name in term_names(config) for split in ("train", "test")
                if f"{split}_loss_{name}" not in columns]
  for config in configs:
    columns += [m for m in families.get(config.family).metrics if m not in columns]
  return columns


def _prepare(workdir: str, base_config, members: list[dict[str, Any]], names: list[str], overwrite: bool,
             drawn: dict[str, Any] | None = None) -> None:
  """Refuses a workdir holding a sweep of another base config unless `overwrite`; records this one.

  Every process checks; process 0 alone deletes and writes, and the others wait until it has.
  """
  base = workdir_lib.comparable(base_config.to_dict())
  stored = workdir_lib.read_sweep(workdir)
  if stored is not None and not overwrite and stored.get("base") != base:
    changed = sorted(k for k in stored.get("base", {}).keys() | base.keys() if stored["base"].get(k) != base.get(k))
    raise config_lib.ConfigError(
        f"workdir {workdir!r} holds a sweep of a different base config ({', '.join(changed[:4])} differ); use "
        "another --workdir, or pass --overwrite to discard that sweep")
  multihost.barrier("sweep: workdir checked")
  if multihost.is_main():
    if stored is not None and overwrite:
      workdir_lib.clear_sweep(workdir, stored.get("member_names", []))
    workdir_lib.write_sweep(workdir, base, members, names, drawn=drawn)
  multihost.barrier("sweep: workdir prepared")


def run(base_config, members: list[dict[str, Any]], workdir: str, *, select: str | None = None,
        overwrite: bool = False, devices=None, names: list[str] | None = None,
        drawn: dict[str, Any] | None = None, search: str = "grid", eta: int = sweep_spec.DEFAULT_ETA,
        rungs: int | None = None, pbt_interval: int | None = None, pbt_quantile: float = 0.25,
        explore: Sequence[str] | None = None, search_seed: int = 0) -> dict[str, Any]:
  """Trains (or resumes, or re-reports) every member; returns {"rows", "results" (a `workdir.Result`
  per member), "paths", "best", "text", "names"}.

  `names` (default: from the swept values) name the members' folders. `drawn` (what drawn members were
  drawn from: `sweep_spec.search_record`) is recorded in sweep.json. `search="halving"` trains the
  members by successive halving (`ae_jax.search`: `eta`, `rungs`; ranked on a validation loss term,
  `select` or the loss), `search="pbt"` as a population (`ae_jax.pbt`: `pbt_interval`, `pbt_quantile`,
  `explore`, `search_seed`); both carve a 10% validation split if the config has none.

  Raises SweepError or ConfigError (one line) for bad input and DataError for bad data. A member
  whose loss stops being finite is marked diverged; a program that fails marks its members failed.
  """
  from ae_jax import train  # pylint: disable=g-import-not-at-top  # Loads JAX and TensorFlow.

  if search not in sweep_spec.SEARCHES:
    raise sweep_spec.SweepError(f"--search={search!r} is not one of: {', '.join(sweep_spec.SEARCHES)}")
  if search != "grid" and not base_config.validation_fraction:
    base_config = copy.deepcopy(base_config)
    base_config.validation_fraction = search_lib.VALIDATION_FRACTION
    logging.warning("--search=%s ranks members on a validation split and the config has none: carving %d%% of "
                    "the training examples (--config.validation_fraction=%g).", search,
                    100 * search_lib.VALIDATION_FRACTION, search_lib.VALIDATION_FRACTION)
  members = sweep_spec.validate(members, base_config)
  swept = sweep_spec.swept_keys(members)
  configs = member_configs(base_config, members)
  names = names or [sweep_spec.member_name(m, swept) for m in members]
  if select:
    sweep_table.direction(select)  # A malformed --select fails before anything trains.
  if search != "grid":
    search_lib.rung_metric(select)
    if len({hparams.structure_key(c) for c in configs}) > 1:
      raise sweep_spec.SweepError(f"--search={search} ranks members of one structure against each other; sweep "
                                  "structure keys (family, widths, batch_size, ...) in separate sweeps")
    if search == "pbt":
      _check_explored(configs, pbt.explored_keys(members, explore))
  _prepare(workdir, base_config, members, names, overwrite, drawn)
  results: list[workdir_lib.Result | None] = [workdir_lib.read_finished(os.path.join(workdir, n), c)
                                              for n, c in zip(names, configs)]
  pending = [i for i, r in enumerate(results) if r is None]
  resuming = sum(workdir_lib.has_checkpoint(os.path.join(workdir, names[i])) for i in pending)
  logging.info("Sweep of %d members in %s: %d finished, %d to resume from their checkpoints, %d to train from the "
               "start.", len(members), workdir, len(members) - len(pending), resuming, len(pending) - resuming)
  groups: dict[str, list[int]] = {}
  for i in pending:
    groups.setdefault(hparams.structure_key(configs[i]), []).append(i)
  if search != "grid":
    config = configs[0]
    ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
    population = [train.Member(c, os.path.join(workdir, n)) for c, n in zip(configs, names)]
    finished = {i: r for i, r in enumerate(results) if r is not None}
    if search == "halving":
      results = search_lib.halving(population, members, names, ds, finished=finished, workdir=workdir, eta=eta,
                                   rungs=rungs, select=select, devices=devices)
    else:
      results = pbt.run(population, members, names, ds, finished=finished, workdir=workdir, interval=pbt_interval,
                        quantile=pbt_quantile, explore=explore, factors=pbt.DEFAULT_FACTORS, select=select,
                        search_seed=search_seed, devices=devices, drawn=drawn)
    groups = {}
  datasets: dict[tuple[str, str, str], data.Dataset] = {}
  for group in groups.values():  # Every member's data checked before any member trains.
    for i in group:
      config = configs[i]
      source = (config.dataset, config.data_dir, config.binarize)
      if source not in datasets:
        datasets[source] = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
      _check_fits(config, datasets[source], members[i])
  for group in groups.values():
    config = configs[group[0]]
    source = (config.dataset, config.data_dir, config.binarize)
    batch = [train.Member(configs[i], os.path.join(workdir, names[i])) for i in group]
    logging.info("Sweep: training %d member(s) as one program: %s", len(batch), ", ".join(names[i] for i in group))
    try:
      outs = train.train_members(batch, datasets[source], devices=devices)
    except (config_lib.ConfigError, data.DataError, errors.TermError):
      raise  # Bad input or the user's own code: one line (and their traceback) from the entry point.
    except Exception as e:  # pylint: disable=broad-except  # One program failing must not lose the others.
      if launch.lost_a_process(e):
        raise  # Another process died: this one cannot go on either (one line from the entry point).
      logging.exception("Sweep: the program of %s failed.", ", ".join(names[i] for i in group))
      message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      outs = [workdir_lib.Result(status=workdir_lib.FAILED, message=message) for _ in group]
    for i, out in zip(group, outs):
      results[i] = out

  rows = [_row(name, c, swept, r) for name, c, r in zip(names, configs, results)]
  if search != "grid":
    for row, fate in zip(rows, search_lib.fates(workdir_lib.read_search(workdir), names)):
      row[sweep_table.FATE] = fate
  metrics = metric_columns(configs)
  if any(SETPOINT in row for row in rows):
    metrics.insert(0, SETPOINT)
  if any(VAL_LOSS in row for row in rows):  # Validation columns: what --select ranks on.
    for test in [m for m in metrics if m.startswith("test_loss")]:
      metrics.insert(metrics.index(test), VAL_LOSS + test[len("test_loss"):])
    if select:
      key = sweep_table.selection_key(rows, select)[0]
      if key not in metrics:
        metrics.insert(metrics.index(VAL_LOSS) + 1, key)
  family = base_config.family if len({c.family for c in configs}) == 1 else "families"
  title = f"{family} on {_dataset_title(base_config.dataset)}"
  if multihost.is_main():  # The others' results lack the evaluation (process 0 runs it): they write nothing.
    paths = sweep_table.write(workdir, rows, swept_keys=swept, metrics=metrics, select=select, title=title)
    paths.update({f"frontier_{kind}": path for kind, path in
                  frontier.write(workdir, configs, rows, results, swept, title=title).items()})
    if search != "grid":
      paths["search"] = search_lib.save_picture(
          workdir, [train.Member(c, os.path.join(workdir, n)) for c, n in zip(configs, names)], names)
  else:
    paths = workdir_lib.sweep_tables(workdir)
  multihost.barrier("sweep: tables written")
  try:
    best = sweep_table.best(rows, sweep_table.selection_key(rows, select)[0], swept_keys=swept) if select else None
  except ValueError:  # No member has that metric; the table's "Best by" line lists the ones there are.
    best = None
  if best is not None and multihost.is_main():
    workdir_lib.record_best(workdir, select, best["member"])  # What ae_jax.load(workdir, "best") loads.
  text = sweep_table.format_text(rows, swept_keys=swept, metrics=metrics, select=select)
  return {"rows": rows, "results": results, "paths": paths, "best": best, "text": text, "names": names}


def _check_explored(configs, explored: Sequence[str]) -> None:
  """PBT must not perturb a coefficient a set point adapts: the controller owns it."""
  for config in configs:
    for key in setpoint.active(config):
      coefficient = families.get(config.family).setpoints[key].coefficient
      if coefficient in explored:
        raise sweep_spec.SweepError(
            f"--explore includes {coefficient}, which --config.{key} adapts: PBT and the controller would both move "
            f"it; explore {key} (or other keys) instead")


SETPOINT = "setpoint"  # A row's verdict on its target: met, or missed by how much.
NA_SETPOINT = "not finished"


def _dataset_title(dataset: str) -> str:
  """The dataset as a title names it: an npz by its file name, not its machine path."""
  return f"npz:{os.path.basename(dataset[4:])}" if dataset.startswith("npz:") else dataset


def _row(name: str, config, swept: list[str], result: workdir_lib.Result) -> dict[str, Any]:
  status = result.status
  if status == workdir_lib.DIVERGED:
    status = f"diverged at step {result.diverged_at}"
  elif status == workdir_lib.FAILED:
    status = f"failed: {result.message}"
  elif status == workdir_lib.STOPPED:
    status = f"stopped at rung {result.rung} (step {result.step})"
  row = {"member": name, **{k: sweep_spec.current_value(k, config) for k in swept}, "status": status,
         "train_loss": result.train.get("loss", math.nan), "test_loss": result.test.get("loss", math.nan)}
  for term in term_names(config):  # A user term's loss on each split, as the loss's own columns.
    row[f"train_loss_{term}"] = result.train.get(f"loss_{term}", math.nan)
    row[f"test_loss_{term}"] = result.test.get(f"loss_{term}", math.nan)
  row.update(result.eval)
  for key in setpoint.active(config):
    point = families.get(config.family).setpoints[key]
    row[SETPOINT] = (setpoint.achieved(point, float(config[key]), result.eval.get(point.metric, math.nan))
                     if result.done else NA_SETPOINT)
  if result.validation or result.eval_validation:
    row[VAL_LOSS] = result.validation.get("loss", math.nan)
    row.update({f"{VAL_LOSS}_{term}": result.validation.get(f"loss_{term}", math.nan) for term in term_names(config)})
    row.update({sweep_table.VALIDATION + k: v for k, v in result.eval_validation.items()})
  return row


def replay(base_config, members: list[dict[str, Any]], workdir: str, member: str, *,
           names: list[str] | None = None, devices=None) -> tuple[workdir_lib.Result, workdir_lib.Result]:
  """Retrains `member` of the PBT sweep in `workdir` as a single run into `workdir/replay/<member>`, by
  following its lineage (`ae_jax.pbt.replay`); returns (the replay's result, the member's own).

  `base_config` and `members` are the sweep's, as given to `run(..., search="pbt")`.
  """
  if not base_config.validation_fraction:
    base_config = copy.deepcopy(base_config)
    base_config.validation_fraction = search_lib.VALIDATION_FRACTION
  members = sweep_spec.validate(members, base_config)
  names = names or [sweep_spec.member_name(m, sweep_spec.swept_keys(members)) for m in members]
  record = workdir_lib.read_search(workdir)
  if record is None or record.get("search") != "pbt":
    raise sweep_spec.SweepError(f"--replay: {workdir!r} holds no population-based training (search.json); run "
                                "the sweep with --search=pbt first")
  if member not in names:
    raise sweep_spec.SweepError(f"--replay={member}: no such member; the members are {', '.join(names)}")
  configs = dict(zip(names, member_configs(base_config, members)))
  own = workdir_lib.read_finished(os.path.join(workdir, member), configs[member])
  if own is None or not own.done:
    raise sweep_spec.SweepError(f"--replay={member}: the member has not finished; run the sweep to the end first")
  config = configs[member]
  ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
  replayed = pbt.replay(configs, member, record["exploits"], ds, os.path.join(workdir, "replay", member),
                        devices=devices)
  return replayed, own
