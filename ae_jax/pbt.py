"""Population-based training inside a sweep's program: the worst members take the best ones' state.

Every `interval` steps (an evaluation step), the members are ranked on a validation loss term; each
member of the bottom `quantile` copies the parameters, optimizer state and model state of a member of
the top `quantile` (a gather along the member axis, on the devices, across processes where members
span them), then explores: each explored hyperparameter is the parent's times a factor (0.8 or 1.25 by
default) drawn from (search seed, step, member), or, for a key the sweep drew from a range
(`loguniform(...)`), redrawn from that range one time in four. Shapes do not change, so nothing recompiles. A member
whose loss stopped being finite ranks last and is never a parent (and so lives again when replaced).

Every exploit is written to the sweep's search.json (`ae_jax.workdir`) before training goes on: who
took whose state at which step and with which hyperparameters. The checkpoint of a step is taken after
its exploit, and the current hyperparameters are the recorded ones, so the same command after a kill
goes on exactly (`replay_hp`); `lineage` gives the segments a member's final state went through.
"""

from collections.abc import Sequence
import math
import random
from typing import Any

from absl import logging
import jax
import numpy as np

from ae_jax import checkpoints
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import finish
from ae_jax import hparams
from ae_jax import multihost
from ae_jax import program as program_lib
from ae_jax import search as search_lib
from ae_jax import search_space
from ae_jax import step as step_lib
from ae_jax import sweep_spec
from ae_jax import sweep_table
from ae_jax import train
from ae_jax import workdir as workdir_lib

DEFAULT_QUANTILE = 0.25
DEFAULT_FACTORS = (0.8, 1.25)


def explored_keys(overrides: Sequence[dict[str, Any]], explore: Sequence[str] | None) -> list[str]:
  """The hyperparameters PBT perturbs: `explore`, or the swept ones that are numbers in the math (a user
  term's `weight/<name>` included)."""
  explorable = lambda k: k in hparams.FLOAT_KEYS or sweep_spec.term_name(k) is not None
  keys = list(explore) if explore else sorted({k for o in overrides for k in o if explorable(k)})
  bad = [k for k in keys if not explorable(k)]
  if bad:
    raise sweep_spec.SweepError(f"--explore={','.join(bad)}: PBT perturbs hyperparameters (numbers in the math: "
                                f"{', '.join(hparams.FLOAT_KEYS)}, weight/<term>), not structure keys or the seed")
  if not keys:
    raise sweep_spec.SweepError("PBT has nothing to explore: sweep a hyperparameter (e.g. --sweep=learning_rate="
                                "1e-3,3e-3) or name them with --explore=learning_rate,beta")
  return keys


def decide(scores: Sequence[float], *, quantile: float, rng: np.random.Generator) -> dict[int, int]:
  """{bottom member: the top member it copies} for scores (lower is better; non-finite ranks last)."""
  n = len(scores)
  count = max(1, math.floor(quantile * n)) if n > 1 else 0
  order = sweep_table.order({i: [score] for i, score in enumerate(scores)})  # As --select and halving rank.
  top = [i for i in order[:count] if math.isfinite(scores[i])]
  if not top:
    return {}
  return {i: top[int(rng.integers(len(top)))] for i in order[n - count:] if i not in top}


RESAMPLE_PROBABILITY = 0.25  # A drawn key is redrawn from its range this often instead of scaled (Ray's default).


def perturb(hp: dict[str, float], keys: Sequence[str], *, factors: Sequence[float], rng: np.random.Generator,
            spaces: dict[str, Any] | None = None) -> dict[str, float]:
  """The explored keys of `hp`, each times a factor drawn from `factors`, or, for a key drawn from a range
  (`spaces`: key -> `search_space.Distribution`), redrawn from it with probability RESAMPLE_PROBABILITY."""
  out = {}
  for k in keys:
    factor = factors[int(rng.integers(len(factors)))]
    resample = spaces and k in spaces and rng.random() < RESAMPLE_PROBABILITY
    value = spaces[k].draw(random.Random(int(rng.integers(2**62)))) if resample else hp[k] * factor
    out[k] = float(np.float32(value))
  return out


def ranges(drawn: dict[str, Any] | None) -> dict[str, Any]:
  """The numeric distributions a drawn sweep's keys came from (sweep.json's `drawn`), by key."""
  if not drawn or not drawn.get("spaces"):
    return {}
  spaces = {k: v for k, v in drawn["spaces"].items() if isinstance(v, str)}
  if not spaces:
    return {}
  parsed = sweep_spec.parse_spaces(";".join(f"{k}={v}" for k, v in spaces.items()))
  return {k: v for k, v in parsed.items() if isinstance(v, search_space.Distribution) and v.numeric}


def _rng(search_seed: int, step: int) -> np.random.Generator:
  return np.random.default_rng([search_seed, step])


def replay_hp(hp_list: list[dict[str, Any]], exploits: Sequence[dict[str, Any]], names: Sequence[str]
              ) -> list[dict[str, Any]]:
  """Every member's hyperparameters after the recorded `exploits`."""
  hp_list = [dict(h) for h in hp_list]
  for exploit in exploits:
    for move in exploit["moves"]:
      i = names.index(move["member"])
      hp_list[i] = {**hp_list[i], **move["hp"]}
  return hp_list


def lineage(name: str, exploits: Sequence[dict[str, Any]], num_steps: int) -> list[dict[str, Any]]:
  """The segments member `name`'s final state went through, first to last: each {"member" (whose program
  slot trained it: its seed drew the data order and noise), "hp" (the explored values then; None: the
  member's own), "start", "end"}; the first segment's member also drew the initial parameters."""
  segments, current, end = [], name, num_steps
  for exploit in sorted(exploits, key=lambda e: -e["step"]):
    move = next((m for m in exploit["moves"] if m["member"] == current), None)
    if move is None or exploit["step"] >= end:
      continue
    segments.append({"member": current, "start": exploit["step"], "end": end})
    current, end = move["parent"], exploit["step"]
  segments.append({"member": current, "start": 0, "end": end})
  segments.reverse()
  for segment in segments:  # The hyperparameters each segment trained with.
    segment["hp"] = _hp_at(segment["member"], segment["start"], exploits)
  return segments


def _hp_at(name: str, step: int, exploits: Sequence[dict[str, Any]]) -> dict[str, float] | None:
  """Member `name`'s explored values from `step` on (its last move at or before it), None: its own."""
  hp = None
  for exploit in sorted(exploits, key=lambda e: e["step"]):
    if exploit["step"] > step:
      break
    hp = next((m["hp"] for m in exploit["moves"] if m["member"] == name), hp)
  return hp


def _common_checkpoint_step(members: list[train.Member]) -> int:
  """The newest step every member has a checkpoint of (0 when one has none)."""
  steps = []
  for m in members:
    checkpointer = checkpoints.Checkpointer(workdir_lib.checkpoint_dir(m.workdir))
    steps.append(checkpointer.latest_step() or 0)
    checkpointer.close()
  return min(steps)


def run(members: list[train.Member], overrides: list[dict[str, Any]], names: list[str], ds: data.Dataset, *,
        finished: dict[int, workdir_lib.Result], workdir: str, interval: int | None, quantile: float,
        explore: Sequence[str] | None, factors: Sequence[float], select: str | None, search_seed: int,
        devices=None, drawn: dict[str, Any] | None = None) -> list[workdir_lib.Result]:
  """Trains the sweep's `members` (one structure) as a population; returns every member's result."""
  if len(finished) == len(members):
    return [finished[i] for i in range(len(members))]
  config = members[0].config
  metric = search_lib.rung_metric(select)
  keys = explored_keys(overrides, explore)
  spaces = ranges(drawn)
  interval = interval or config.eval_every
  if interval % config.eval_every:
    raise sweep_spec.SweepError(f"--pbt_interval={interval} must be a multiple of --config.eval_every="
                                f"{config.eval_every}: members are ranked on the validation losses of evaluation steps")
  if not 0 < quantile <= 0.5:
    raise sweep_spec.SweepError(f"--pbt_quantile={quantile} must be in (0, 0.5]")
  num_steps = config_lib.resolve_steps(config, data.training_size(ds, config.validation_fraction))
  plan = {"search": "pbt", "interval": interval, "quantile": quantile, "explore": keys, "factors": list(factors),
          "metric": f"val_{metric}", "search_seed": search_seed, "members": names, "num_steps": num_steps}
  record = search_lib.recorded(workdir, plan)
  exploits = list(record["exploits"]) if record else []
  # The checkpoints are taken after their step's exploit: the population goes on from the newest step
  # they all have, with the hyperparameters the exploits up to it gave (later ones are met again).
  start = _common_checkpoint_step(members)
  hp_list = replay_hp([hparams.from_config(m.config) for m in members],
                      [e for e in exploits if e["step"] <= start], names)
  gather = None

  def exploit(step, state, hp, validation, results):
    nonlocal gather
    if step % interval or step >= num_steps:
      return state, hp, set()
    recorded = next((e for e in exploits if e["step"] == step), None)
    if recorded is not None:  # Decided before a restart (the same decision: scores are functions of seeds).
      moves = recorded["moves"]
    else:
      scores = [search_lib._score(v, metric) if r.done else math.nan  # pylint: disable=protected-access
                for v, r in zip(validation, results)]
      rng = _rng(search_seed, step)
      moves = [{"member": names[i], "parent": names[parent],
                "hp": perturb(hp_list[parent], keys, factors=factors, rng=rng, spaces=spaces)}
               for i, parent in decide(scores, quantile=quantile, rng=rng).items()]
      exploits.append({"step": step, "scores": dict(zip(names, scores)), "moves": moves})
      if multihost.is_main():
        workdir_lib.write_search(workdir, {**plan, "exploits": exploits})
      multihost.barrier("pbt: exploit recorded")
    if not moves:
      return state, hp, set()
    source = np.arange(len(members), dtype=np.int32)
    for move in moves:
      i = names.index(move["member"])
      source[i] = names.index(move["parent"])
      hp_list[i] = {**hp_list[i], **move["hp"]}
    if gather is None:  # One compile: the member axis keeps its size and its sharding.
      gather = jax.jit(lambda tree, idx: jax.tree.map(lambda x: x[idx], tree), out_shardings=state.step.sharding)
    state = gather(state, source)
    hp = multihost.put(hparams.stack(hp_list), hp["seed"].sharding)
    logging.info("PBT at step %d: %s.", step, ", ".join(f"{m['member']} <- {m['parent']}" for m in moves))
    return state, hp, {names.index(m["member"]) for m in moves}

  todo = [i for i in range(len(members)) if i not in finished]
  if len(todo) < len(members):
    raise sweep_spec.SweepError("some members of this population finished and others did not; rerun with "
                                "--overwrite to train the population again")
  outs = train.train_members(members, ds, devices=devices, hp_list=hp_list, exploit=exploit)
  return outs


def replay(configs: dict[str, Any], name: str, exploits: Sequence[dict[str, Any]], ds: data.Dataset, workdir: str,
           *, devices=None) -> workdir_lib.Result:
  """Retrains member `name` of a population as a single run into `workdir`, segment by segment of its
  `lineage` (whose seed drew the data order and noise, with which hyperparameters, over which steps),
  and finishes it as a run: its parameters equal those the member ended with in the population.

  `configs` are the population's member configs by name (validated, one structure).
  """
  config = configs[name]
  carved = data.carve_validation(ds, config.validation_fraction, binarize=config.binarize)
  num_steps = config_lib.resolve_steps(config, len(carved.train_images))
  segments = lineage(name, exploits, num_steps)
  hp_of = lambda s: {**hparams.from_config(configs[s["member"]]), **(s["hp"] or {})}
  program = program_lib.build(configs[segments[0]["member"]], carved, [hp_of(segments[0])], devices=devices)
  state = program.init_state()
  for segment in segments:
    hp = multihost.put(hparams.stack([hp_of(segment)]), program.sharding)
    step = segment["start"]
    while step < segment["end"]:
      length = min(config.log_every - step % config.log_every, segment["end"] - step)
      state, _ = program.feed.run(state, hp, step, length)
      step += length
  program.feed.close()
  member = train.Member(config_lib.resolved(config, len(carved.train_images)), workdir)
  final_hp = hparams.from_config(member.config)  # Its seed draws the evaluation's noise, as in the sweep.
  evaluate = train.make_evaluate(program.loss)
  eval_keys = jax.jit(jax.vmap(lambda s: step_lib.run_keys(s)[2]))(np.asarray([final_hp["seed"]], np.int32))
  test = evaluate(state.params, state.model_state, program.hp, carved.test_images, carved.test_labels, eval_keys)[0]
  result = workdir_lib.Result(step=num_steps, test=test, params=jax.tree.map(lambda x: np.asarray(x[0]),
                                                                            multihost.fetch(state.params)))
  if multihost.is_main():
    workdir_lib.prepare(workdir, member.config)
  checkpointer = checkpoints.Checkpointer(workdir_lib.checkpoint_dir(workdir))
  checkpointer.save(num_steps, multihost.member(state, 0, program.mesh))
  checkpointer.close()
  finish.finish(member.config, workdir, program.model, carved, final_hp, result, {})
  multihost.barrier("pbt: replayed")
  return result
