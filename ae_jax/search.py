"""Successive halving inside a sweep: every setting starts, the best 1/eta of them go on at each rung.

Rungs are growing step budgets b_0 < b_1 < ... < b_{R-1} = num_steps (b_r = num_steps / eta^(R-1-r)).
At each rung the alive members train to its budget as one program, are evaluated on the validation
split, and are ranked by a validation loss term, a setting's seeds averaged; the best ceil(n / eta)
settings (all their seeds) go on, now as a smaller program (one compile per rung size: a frozen member
inside a vmap would still cost its FLOPs), the others stop and keep their checkpoint at the rung. The
schedule always counts to num_steps, so a survivor ends exactly as an uninterrupted single run with its
values does. A member that diverges drops out at once.

Each decision is written to the sweep's search.json (`ae_jax.workdir`) before the next rung trains and
is a function of metrics that are functions of the members' seeds, so the same command after a kill
replays the recorded rungs and goes on from the first undecided one.
"""

from collections.abc import Sequence
import json
import math
from typing import Any

from absl import logging

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import multihost
from ae_jax import pictures
from ae_jax import sweep_spec
from ae_jax import sweep_table
from ae_jax import train
from ae_jax import workdir as workdir_lib

KINDS = sweep_spec.SEARCHES
DEFAULT_ETA = sweep_spec.DEFAULT_ETA
DEFAULT_METRIC = "loss"  # The validation loss; any loss term (loss_rec, loss_kl, ...) may be named.
# Rung metrics made of loss terms: the VAE's negative ELBO at beta 1 compares members of different beta.
SUMS = {"negative_elbo": ("loss_rec", "loss_kl")}
VALIDATION_FRACTION = 0.1  # Carved when a halving sweep's config has no validation split.


def default_rungs(num_settings: int, eta: int) -> int:
  """floor(log_eta(settings)) + 1: the rungs that halving the settings down to about one takes."""
  rungs, left = 1, num_settings
  while left > 1 and math.ceil(left / eta) < left:
    left, rungs = math.ceil(left / eta), rungs + 1
  return rungs


def rung_steps(num_steps: int, *, eta: int, rungs: int) -> list[int]:
  """The step budget of each rung: num_steps / eta^(R-1-r), rounded, the last one num_steps."""
  if eta < 2:
    raise sweep_spec.SweepError(f"--eta={eta} must be at least 2 (the fraction 1/eta of the settings goes on)")
  if rungs < 1:
    raise sweep_spec.SweepError(f"--rungs={rungs} must be at least 1")
  steps = [max(1, round(num_steps / eta ** (rungs - 1 - r))) for r in range(rungs)]
  if len(set(steps)) < rungs:
    raise sweep_spec.SweepError(f"--rungs={rungs} with --eta={eta} needs rungs of distinct step budgets, but "
                                f"num_steps={num_steps} gives {steps}; use fewer rungs or more steps")
  return steps


def rung_metric(select: str | None) -> str:
  """The validation loss term a rung ranks on: `select` without a split prefix ('val_loss' -> 'loss')."""
  if not select:
    return DEFAULT_METRIC
  name = select.removeprefix("min:")
  for prefix in ("val_", "test_", "val/"):
    name = name.removeprefix(prefix)
  if not (name.startswith("loss") or name in SUMS) or select.startswith("max:"):
    raise sweep_spec.SweepError(
        f"--select={select}: halving ranks on a validation loss term at every rung (loss, loss_rec, loss_kl, "
        "..., or negative_elbo = loss_rec + loss_kl: lower is better); end-of-run metrics such as mse are "
        "measured only at the end")
  return name


def setting(overrides: dict[str, Any]) -> str:
  """What a member's seeds share: its overrides without the seed."""
  return json.dumps({k: v for k, v in overrides.items() if k != sweep_spec.SEED_KEY}, sort_keys=True, default=str)


def survivors(settings: Sequence[str], scores: Sequence[float], *, eta: int) -> set[str]:
  """The best ceil(n / eta) of the n settings by mean score over their members (lower is better), ranked
  by `sweep_table.order`: a setting with a non-finite score (a diverged member's) after every setting
  whose scores are all finite; ties go to the first listed."""
  by_setting: dict[str, list[float]] = {}
  for s, score in zip(settings, scores):
    by_setting.setdefault(s, []).append(score)
  ranked = sweep_table.order(by_setting)  # As --select ranks the settings at the end.
  return set(ranked[:math.ceil(len(ranked) / eta)])


def halving(members: list[train.Member], overrides: list[dict[str, Any]], names: list[str], ds: data.Dataset,
            *, finished: dict[int, workdir_lib.Result], workdir: str, eta: int, rungs: int | None,
            select: str | None, devices=None) -> list[workdir_lib.Result]:
  """Runs successive halving over the sweep's `members` (one structure); returns every member's result:
  the finished survivors', and `stopped` (or `diverged`) ones for the others. `finished` holds the
  results read back from a previous run of the same command (they are not trained again)."""
  metric = rung_metric(select)
  settings = [setting(o) for o in overrides]
  num_steps = config_lib.resolve_steps(members[0].config,
                                       data.training_size(ds, members[0].config.validation_fraction))
  rungs = rungs or default_rungs(len(set(settings)), eta)
  steps = rung_steps(num_steps, eta=eta, rungs=rungs)
  plan = {"search": "halving", "eta": eta, "rung_steps": steps, "metric": f"val_{metric}", "members": names}
  record = recorded(workdir, plan)
  decisions = list(record["decisions"]) if record else []
  results: dict[int, workdir_lib.Result] = dict(finished)
  alive = [i for i in range(len(members)) if i not in finished or finished[i].done]
  logging.info("Halving: %d settings, %d members, rungs at steps %s, eta %d, ranked on validation %s.",
               len(set(settings)), len(members), steps, eta, metric)
  for rung, budget in enumerate(steps):
    last = rung == len(steps) - 1
    if rung < len(decisions):  # Decided before a restart: replay it.
      kept = set(decisions[rung]["kept"])
      for i in [i for i in alive if names[i] not in kept]:
        results[i] = _stopped(members[i], rung, budget, decisions[rung]["scores"].get(names[i]), metric)
      alive = [i for i in alive if names[i] in kept]
      continue
    if last:
      todo = [i for i in alive if i not in finished]
      if todo:
        results.update(zip(todo, train.train_members([members[i] for i in todo], ds, devices=devices)))
      break
    outs = train.train_members([members[i] for i in alive], ds, devices=devices, stop_at=budget)
    scores = {i: (_score(out.validation, metric) if out.done else math.nan) for i, out in zip(alive, outs)}
    if any(not all(t in out.validation for t in SUMS.get(metric, (metric,))) for out in outs if out.done):
      raise sweep_spec.SweepError(f"--select: no validation term {metric!r}; the members report "
                                  f"{', '.join(sorted(next(o.validation for o in outs if o.done)))}")
    kept_settings = survivors([settings[i] for i in alive], [scores[i] for i in alive], eta=eta)
    kept = [i for i in alive if settings[i] in kept_settings and outs[alive.index(i)].done]
    decisions.append({"rung": rung, "step": budget, "kept": [names[i] for i in kept],
                      "scores": {names[i]: scores[i] for i in alive}})
    if multihost.is_main():
      workdir_lib.write_search(workdir, {**plan, "decisions": decisions})
    multihost.barrier("search: rung decided")
    for i, out in zip(alive, outs):
      if not out.done:
        results[i] = out
        if multihost.is_main():
          workdir_lib.write_status(members[i].workdir, out, num_epochs=members[i].config.num_epochs)
      elif i not in kept:
        results[i] = _stopped(members[i], rung, budget, scores[i], metric)
    logging.info("Halving: rung %d at step %d kept %d of %d members: %s.", rung, budget, len(kept), len(alive),
                 ", ".join(names[i] for i in kept))
    alive = kept
  return [results[i] for i in range(len(members))]


def recorded(workdir: str, plan: dict[str, Any]) -> dict[str, Any] | None:
  """The search.json of `workdir` if it records this `plan` (None if there is none); SweepError if it
  records another search, which the same command must not mix with this one."""
  record = workdir_lib.read_search(workdir)
  if record is not None and {k: record.get(k) for k in plan} != plan:
    raise sweep_spec.SweepError(f"workdir {workdir!r} holds a search with other settings or members "
                                f"({', '.join(k for k in plan if record.get(k) != plan[k])} differ); use another "
                                "--workdir, or pass --overwrite to discard it")
  return record


def _score(validation: dict[str, float], metric: str) -> float:
  return sum(validation[t] for t in SUMS[metric]) if metric in SUMS else validation[metric]


def _stopped(member: train.Member, rung: int, step: int, score: float | None, metric: str) -> workdir_lib.Result:
  """A member halving stopped at `rung`: its status says where; its checkpoint at `step` stays."""
  result = workdir_lib.Result(status=workdir_lib.STOPPED, step=step, rung=rung, message=(
      f"stopped at rung {rung} (step {step}): validation {metric} {score:.4g} ranked below the best settings"
      if score is not None and math.isfinite(score) else f"stopped at rung {rung} (step {step})"))
  if multihost.is_main():
    workdir_lib.write_status(member.workdir, result, num_epochs=member.config.num_epochs)
  return result


def save_picture(workdir: str, members: list[train.Member], names: list[str]) -> str | None:
  """search.png: each member's validation metric against step, the decision steps marked, the best
  member thick; for PBT also each explored hyperparameter against step. None without a search.json."""
  record = workdir_lib.read_search(workdir)
  if record is None:
    return None
  metric = record["metric"].removeprefix("val_")
  curves = {}
  for member, name in zip(members, names):
    curves[name] = []
    for row in workdir_lib.read_metrics(member.workdir):
      validation = {k[len(workdir_lib.VALIDATION_PREFIX):]: float(v) for k, v in row.items()
                    if k.startswith(workdir_lib.VALIDATION_PREFIX)}
      if validation and all(t in validation for t in SUMS.get(metric, (metric,))):
        curves[name].append((row["step"], _score(validation, metric)))
  final = {n: points[-1][1] for n, points in curves.items() if points and math.isfinite(points[-1][1])}
  best = min(final, key=final.get) if final else None
  hp_curves = None
  if record["search"] == "halving":
    marks = record["rung_steps"][:-1]
  else:
    marks = [e["step"] for e in record["exploits"]]
    hp_curves = {}
    for key in record["explore"]:
      hp_curves[key] = {}
      for member, name in zip(members, names):
        points = [(0, float(sweep_spec.current_value(key, member.config)))]
        for e in record["exploits"]:
          points += [(e["step"], m["hp"][key]) for m in e["moves"] if m["member"] == name]
        hp_curves[key][name] = points + [(record["num_steps"], points[-1][1])]
  return pictures.save_search(workdir_lib.path(workdir, workdir_lib.SEARCH_PLOT), curves, metric=f"validation {metric}",
                              marks=marks, best=best, hparams=hp_curves,
                              title=f"{record['search']}: validation {metric} (best: {best})")


def fates(record: dict[str, Any] | None, names: list[str]) -> list[str]:
  """What a search did to each member, for the tables: halving's "finished" or "stopped at rung r
  (step s)", PBT's "replaced at step s by m; ..." or "kept its own state"."""
  if record is None:
    return [""] * len(names)
  if record["search"] == "halving":
    stopped = {}
    for decision in record["decisions"]:
      for name in decision["scores"]:
        if name not in decision["kept"] and name not in stopped:
          stopped[name] = f"stopped at rung {decision['rung']} (step {decision['step']})"
    return [stopped.get(name, "finished") for name in names]
  moves = {name: [] for name in names}
  for exploit in record["exploits"]:
    for move in exploit["moves"]:
      moves[move["member"]].append(f"step {exploit['step']} by {move['parent']}")
  return ["replaced at " + "; ".join(m) if m else "kept its own state" for m in (moves[n] for n in names)]
