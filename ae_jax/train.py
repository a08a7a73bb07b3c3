"""The training loop: members of one structure trained as one program, then finished one by one.

`train_members` is the one code path: a single run (`train_and_evaluate`) is a program of one member,
a sweep (`ae_jax.sweep`) runs one program per structure group. The program itself is assembled by
`ae_jax.program.build`; each member's files are `ae_jax.workdir`'s; its evaluation, pictures and
status are written by `ae_jax.finish`.

The loop runs `log_every` steps per call (a jitted `lax.scan`, buffers donated); the host sees
metrics only at log intervals. A member whose loss stops being finite is frozen by the step and
marked diverged here; the others go on.
"""

from collections.abc import Callable
import dataclasses
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from ae_jax import batching
from ae_jax import checkpoints
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import errors
from ae_jax import families
from ae_jax import finish
from ae_jax import hparams
from ae_jax import multihost
from ae_jax import program as program_lib
from ae_jax import step as step_lib
from ae_jax import workdir as workdir_lib
from ae_jax import writers

TrainingError = errors.TrainingError
Result = workdir_lib.Result


@dataclasses.dataclass
class Member:
  """One run of a program: its full config (structure shared with the others) and its workdir."""

  config: Any
  workdir: str


def make_evaluate(loss_fn: families.LossFn, *, batch_size: int = 500):
  """Returns `evaluate(params, model_state, hp, images, labels, keys) -> [{name: mean over the set}] per
  member`.

  `params`, `model_state`, `hp` and `keys` carry the member axis; all members are evaluated in each
  call. Each batch starts from the training's `model_state` (what the loss returns is dropped).
  """

  @jax.jit
  def eval_batch(params, model_state, hp, images, labels, keys):
    def one(p, s, h, key):
      return loss_fn(p, {"image": images, "label": labels}, jax.random.split(key, images.shape[0]), h, s)[1][0]
    return jax.vmap(one)(params, model_state, hp, keys)

  def evaluate(params, model_state, hp, images, labels, keys) -> list[dict[str, float]]:
    totals, count = {}, 0
    # Unpadded batches (the loss returns batch means): the last, smaller one compiles once more.
    for i, part in enumerate(batching.slices(len(images), batch_size)):
      x, y = images[part], labels[part]
      terms = eval_batch(params, model_state, hp, x, y, jax.vmap(jax.random.fold_in, (0, None))(keys, i))
      for k, v in terms.items():
        totals[k] = totals.get(k, 0.0) + v * len(x)
      count += len(x)
    totals = multihost.fetch(totals)
    num_members = len(next(iter(totals.values())))
    return [{k: float(v[m]) / count for k, v in totals.items()} for m in range(num_members)]

  return evaluate


def _member(tree, i: int):
  return jax.tree.map(lambda x: np.asarray(x[i]) if isinstance(x, np.ndarray) else x[i], tree)


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def train_and_evaluate(config, workdir: str) -> Result:
  """Trains `config.family` on `config.dataset`, writing metrics and pictures to `workdir`.

  Returns the final train and test metrics, the evaluation, the paths written and the params.
  Raises ConfigError or DataError (one-line messages) for bad input, TrainingError if the loss stops
  being finite (the last good checkpoint stays in `workdir`).
  """
  config_lib.validate(config)
  ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
  (result,) = train_members([Member(config, workdir)], ds)
  if not result.done:
    raise TrainingError(result.message)
  return result


# A search's hook at evaluation steps: `exploit(step, state, hp, validation, results) -> (state, hp,
# replaced)` may copy members' states and change their `hp` (population-based training); `replaced`
# names the members whose state was taken from another (so a diverged one lives again).
Exploit = Callable[[int, Any, Any, list[dict[str, float]] | None, list[Result]], tuple[Any, Any, set[int]]]


def train_members(members: list[Member], ds: data.Dataset, *, devices=None, stop_at: int | None = None,
                  hp_list: list[hparams.HParams] | None = None, exploit: Exploit | None = None) -> list[Result]:
  """Trains `members` (validated configs of one structure) on `ds` as one program; finishes each.

  Members resume from their own newest checkpoints; members found at different steps train as
  separate programs. `stop_at` < num_steps trains only that far (a rung of a search: the state is
  checkpointed and both splits evaluated there, the member is not finished); the schedule still counts
  to num_steps, so going on later is exactly what an uninterrupted run does. `hp_list` replaces the
  configs' hyperparameters (a search's current ones); `exploit` is a search's hook (`Exploit`), called
  after each evaluation. With `validation_fraction`
  > 0 the members train on what is left of the training split after `data.carve_validation`, and are
  evaluated on both the validation and the test split.
  """
  ds = data.carve_validation(ds, members[0].config.validation_fraction, binarize=members[0].config.binarize)
  # Epochs become steps here, once the data set's size is known (num_steps of every member's config).
  members = [Member(config_lib.resolved(m.config, len(ds.train_images)), m.workdir) for m in members]
  if len({hparams.structure_key(m.config) for m in members}) > 1:
    raise ValueError("train_members needs members of one structure; group them with hparams.structure_key")
  hp_list = hp_list or [hparams.from_config(m.config) for m in members]
  whole = program_lib.build(members[0].config, ds, hp_list, devices=devices)
  _prepare_workdirs(members)

  fresh = multihost.fetch(whole.init_state())
  states, checkpointers = [], []
  for i, m in enumerate(members):
    checkpointers.append(checkpoints.Checkpointer(workdir_lib.checkpoint_dir(m.workdir)))
    restored = checkpointers[-1].restore_latest(_member(fresh, i))
    if restored is not None:
      logging.info("Resumed %s from its checkpoint at step %d.", m.workdir, int(restored.step))
    states.append(restored if restored is not None else _member(fresh, i))
  multihost.barrier("train_members: checkpoints restored")  # Process 0 deleted damaged ones: all see the same.
  for c in checkpointers:
    c.reload()

  results: list[Result] = [Result() for _ in members]
  try:
    by_step: dict[int, list[int]] = {}
    for i, s in enumerate(states):
      by_step.setdefault(int(s.step), []).append(i)
    for idx in by_step.values():
      program = whole if len(idx) == len(members) else program_lib.build(
          members[0].config, ds, [hp_list[i] for i in idx], devices=devices, check=False)
      if exploit is not None and len(idx) < len(members):
        raise TrainingError(f"members resumed from checkpoints at different steps ({sorted(by_step)}): a "
                            "population must resume together; rerun with --overwrite to start it again")
      outs = _train(program, [members[i] for i in idx], [states[i] for i in idx], [checkpointers[i] for i in idx],
                    stop_at=stop_at, exploit=exploit)
      for i, out in zip(idx, outs):
        results[i] = out
  finally:
    for c in checkpointers:
      c.close()
  if stop_at is not None and stop_at < members[0].config.num_steps:
    multihost.barrier("train_members: stopped at a rung")
    return results
  shared: dict[Any, Any] = {}  # Evaluation results that do not depend on the member (PCA, pixel probe).
  for m, hp, result in zip(members, hp_list, results):
    finish.finish(m.config, m.workdir, whole.model, ds, hp, result, shared)
  multihost.barrier("train_members: finished")  # The others wait for process 0's files (and evaluation).
  return results


def _prepare_workdirs(members: list[Member]) -> None:
  """`workdir.prepare` of every member: all processes check (and refuse alike), process 0 writes, the
  others wait until it has."""
  for m in members:
    workdir_lib.check(m.workdir, m.config)
  multihost.barrier("train_members: workdirs checked")
  if multihost.is_main():
    for m in members:
      workdir_lib.prepare(m.workdir, m.config)
  multihost.barrier("train_members: workdirs prepared")


def _train(program: program_lib.Program, members: list[Member], states, checkpointers, *,
           stop_at: int | None = None, exploit: Exploit | None = None) -> list[Result]:
  """Trains the members of `program`, which start at the same step, to `num_steps` (or `stop_at`)."""
  config, ds, mesh, hp = program.config, program.dataset, program.mesh, program.hp
  state = multihost.put(_stack(states), program.sharding)
  evaluate = make_evaluate(program.loss)
  eval_keys = jax.jit(jax.vmap(lambda s: step_lib.run_keys(s)[2]), out_shardings=program.sharding)(hp["seed"])
  # The validation split's draws (noise, samples) are independent of the test split's.
  val_keys = jax.jit(jax.vmap(lambda s: jax.random.fold_in(step_lib.run_keys(s)[2], 2)),
                     out_shardings=program.sharding)(hp["seed"])

  def evaluate_splits(state) -> tuple[list[dict[str, float]], list[dict[str, float]] | None]:
    tests = evaluate(state.params, state.model_state, hp, ds.test_images, ds.test_labels, eval_keys)
    if not ds.has_validation:
      return tests, None
    return tests, evaluate(state.params, state.model_state, hp, ds.validation_images, ds.validation_labels,
                           val_keys)

  step = int(states[0].step)
  if multihost.is_main():
    for m in members:
      workdir_lib.truncate_metrics(m.workdir, step)
  outs = [Result() for _ in members]
  member_writers = [writers.create(m.workdir) for m in members]
  for m, w in zip(members, member_writers):
    w.write_hparams({**m.config.to_dict(), **hparams.from_config(m.config), "num_devices": mesh.devices.size,
                     "dataset_name": ds.name})
  warning = conv_cpu_warning(config)
  if warning:
    logging.warning("%s", warning)
  logging.info("Training %d member(s) of %s on %s (%d train, %d test, shape %s) on %d %s device(s), mesh %s.",
               len(members), config.family, ds.name, len(ds.train_images), len(ds.test_images),
               ds.example_shape, mesh.devices.size, jax.default_backend(), dict(mesh.shape))
  first_step, start = step, time.perf_counter()
  target = config.num_steps if stop_at is None else min(stop_at, config.num_steps)
  try:
    while step < target and any(o.done for o in outs):
      length = min(config.log_every - step % config.log_every, target - step)
      next_length = min(config.log_every, target - step - length)
      state, metrics = program.feed.run(state, hp, step, length, next_length)
      metrics, diverged_at = multihost.fetch((metrics, state.diverged_at))
      step += length
      evaluate_now = step % config.eval_every == 0 or step == target
      tests, vals = evaluate_splits(state) if evaluate_now else (None, None)
      save = step % config.checkpoint_every == 0 or step == target
      replaced: set[int] = set()
      if exploit is not None and evaluate_now:
        state, hp, replaced = exploit(step, state, hp, vals, outs)
        for i in replaced:  # Its state is now another member's: it goes on, even if it had diverged.
          outs[i].status, outs[i].message, outs[i].diverged_at = workdir_lib.DONE, "", None
      for i, (m, out, writer) in enumerate(zip(members, outs, member_writers)):
        if not out.done:
          continue
        if diverged_at[i] and i not in replaced:
          _mark_diverged(out, m, metrics, i, int(diverged_at[i]), step - length, checkpointers[i])
          continue
        out.train = {k: float(np.mean(v[:, i])) for k, v in metrics.items()}
        row = dict(out.train)
        if tests is not None:
          out.test = tests[i]
          row.update({workdir_lib.TEST_PREFIX + k: v for k, v in tests[i].items()})
        if vals is not None:
          out.validation = vals[i]
          row.update({workdir_lib.VALIDATION_PREFIX + k: v for k, v in vals[i].items()})
        writer.write_scalars(step, row)
        out.history.append({"step": step, **row})
        if save:
          checkpointers[i].save(step, multihost.member(state, i, mesh))  # Every process takes part.
      rate = (step - first_step) / (time.perf_counter() - start)
      losses = [o.train["loss"] for o in outs if o.done]
      logging.info("step %d/%d  loss %s  %.1f steps/s  ETA %.0fs", step, target,
                   _summary(losses), rate, (target - step) / rate)
  finally:
    for w in member_writers:
      w.close()
    program.feed.close()
  if not any(o.test for o in outs):  # Resumed finished members: evaluate what was restored.
    tests, vals = evaluate_splits(state)
    for i, out in enumerate(outs):
      out.test = tests[i]
      out.validation = vals[i] if vals is not None else {}
  for m, out in zip(members, outs):
    logged = workdir_lib.last_train_row(m.workdir) if out.done and not out.train else None
    if logged is not None and logged[0] == step:  # Nothing trained now: report what the run logged there.
      out.train = logged[1]
  params = multihost.fetch(state.params)
  for i, out in enumerate(outs):
    out.params, out.step = _member(params, i), step
  return outs


def conv_cpu_warning(config) -> str | None:
  """One line on what a conv model costs on the CPU backend (docs/speed.md), else None."""
  if config.architecture != "conv" or jax.default_backend() != "cpu":
    return None
  return (f"architecture=conv on CPU is slow: conv (32, 64) on 28x28 MNIST takes about 100 ms per step "
          f"at batch 128 on 2 cores, 20x the 5 ms of the 784-400-20 MLP, and the time grows with the batch "
          f"and the conv widths (here {tuple(config.widths)}, batch {config.batch_size}); "
          "a GPU runs the same command (docs/speed.md).")


def _summary(losses: list[float]) -> str:
  if len(losses) == 1:
    return f"{losses[0]:.4f}"
  return f"{min(losses):.4f}..{max(losses):.4f} over {len(losses)} members" if losses else "(all diverged)"


def _mark_diverged(out: Result, member: Member, metrics, i: int, diverged_at: int, first_step: int,
                   checkpointer) -> None:
  """Records where and why member `i` stopped; its last good checkpoint stays as it is."""
  j = diverged_at - first_step - 1  # The failing step's row in this chunk's metrics.
  bad = [k for k, v in metrics.items() if k.startswith("loss") or k == "grad_norm"
         if not np.isfinite(v[j, i])]
  last = checkpointer.last_good()
  kept = (f"the last good checkpoint is {workdir_lib.checkpoint_path(member.workdir, last)}"
          if last is not None else "no checkpoint was saved before it")
  out.status = workdir_lib.DIVERGED
  out.diverged_at = diverged_at
  out.message = (f"the loss became non-finite at step {diverged_at} (non-finite: {', '.join(bad) or 'loss'}); "
                 f"{kept}; lower --config.learning_rate or the penalty weights, or check the data for "
                 "extreme values")
  logging.error("%s: %s", member.workdir, out.message)
