"""The training loop: members of one structure trained as one program, then evaluated one by one.

`train_members` is the one code path: a single run (`train_and_evaluate`) is a program of one member,
a sweep (`ae_jax.sweep`) runs one program per structure group. Each member has its own workdir and
writes there what a single run writes: metrics.jsonl, TensorBoard, checkpoints, eval.json, pictures.

The loop runs `log_every` steps per call (a jitted `lax.scan`, buffers donated); the host sees
metrics only at log intervals. A member whose loss stops being finite is frozen by the step and
marked diverged here; the others go on.
"""

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from ae_jax import checkpoints
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import errors
from ae_jax import families
from ae_jax import feeds
from ae_jax import hparams
from ae_jax import models
from ae_jax import multihost
from ae_jax import report
from ae_jax import step as step_lib
from ae_jax import writers

STATUS_FILE = "status.json"


TrainingError = errors.TrainingError


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
    for i, start in enumerate(range(0, len(images), batch_size)):
      x, y = images[start:start + batch_size], labels[start:start + batch_size]
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


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains `config.family` on `config.dataset`, writing metrics and pictures to `workdir`.

  Returns the final train and test metrics, the evaluation, the paths written and the params.
  Raises ConfigError or DataError (one-line messages) for bad input, TrainingError if the loss stops
  being finite (the last good checkpoint stays in `workdir`).
  """
  config_lib.validate(config)
  ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
  (result,) = train_members([Member(config, workdir)], ds)
  if result["status"] != "done":
    raise TrainingError(result["message"])
  return result


def train_members(members: list[Member], ds: data.Dataset, *, devices=None) -> list[dict[str, Any]]:
  """Trains `members` (validated configs of one structure) on `ds` as one program; evaluates each.

  Returns one result per member: {"status": "done" | "diverged", "message", "train", "test", "eval",
  "history", "paths", "params", "step"}. Members resume from their own newest checkpoints; members
  found at different steps train as separate programs.
  """
  # Epochs become steps here, once the data set's size is known (num_steps of every member's config).
  members = [Member(config_lib.resolved(m.config, len(ds.train_images)), m.workdir) for m in members]
  config = members[0].config
  keys = {hparams.structure_key(m.config) for m in members}
  if len(keys) > 1:
    raise ValueError("train_members needs members of one structure; group them with hparams.structure_key")
  mesh = step_lib.make_mesh(len(members), devices)
  data_devices = mesh.shape[step_lib.DATA]
  if config.batch_size % data_devices:
    raise config_lib.ConfigError(
        f"--config.batch_size={config.batch_size} must be divisible by the {data_devices} devices that "
        "split each member's batch")
  if config.batch_size > len(ds.train_images):
    raise config_lib.ConfigError(f"--config.batch_size={config.batch_size} exceeds the {len(ds.train_images)} "
                                 f"training examples of {ds.name}")
  try:
    model = families.model_from_config(config, ds.example_shape)
    eval_loss = families.build(config, model)
    hp_list = [hparams.from_config(m.config) for m in members]
    _check_traces(eval_loss, model, ds, hp_list[0], families.init_state(config))
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  _prepare_workdirs(members)

  make_opt = make_optimizer(config, ds)
  bias = models.data_mean_logits(ds.train_images) if config.init_output_bias == "data_mean" else None
  init = step_lib.make_init(lambda key: models.init(model, key, ds.example_shape, output_bias=bias), make_opt,
                            mesh, model_state=families.init_state(config))
  fresh = multihost.fetch(init(hparams.stack(hp_list)))
  states, checkpointers = [], []
  for i, m in enumerate(members):
    checkpointers.append(checkpoints.Checkpointer(os.path.join(m.workdir, "checkpoints")))
    restored = checkpointers[-1].restore_latest(_member(fresh, i))
    if restored is not None:
      logging.info("Resumed %s from its checkpoint at step %d.", m.workdir, int(restored.step))
    states.append(restored if restored is not None else _member(fresh, i))

  results: list[dict[str, Any]] = [{} for _ in members]
  try:
    by_step: dict[int, list[int]] = {}
    for i, s in enumerate(states):
      by_step.setdefault(int(s.step), []).append(i)
    for idx in by_step.values():
      program = _Program(config, model, eval_loss, ds, mesh if len(idx) == len(members) else
                         step_lib.make_mesh(len(idx), devices))
      outs = program.train([members[i] for i in idx], [states[i] for i in idx], [hp_list[i] for i in idx],
                           [checkpointers[i] for i in idx])
      for i, out in zip(idx, outs):
        results[i] = out
  finally:
    for c in checkpointers:
      c.close()
  shared: dict[Any, Any] = {}  # Evaluation results that do not depend on the member (PCA, pixel probe).
  for m, hp, out in zip(members, hp_list, results):
    _finish(m, model, ds, hp, out, shared)
  multihost.barrier("train_members: finished")  # The others wait for process 0's files (and evaluation).
  return results


def make_optimizer(config, ds: data.Dataset) -> step_lib.MakeOptimizer:
  return step_lib.make_optimizer(config, steps_per_epoch=config_lib.steps_per_epoch(config, len(ds.train_images)))


def _prepare_workdirs(members: list[Member]) -> None:
  """`checkpoints.prepare_workdir` of every member: all processes check (and refuse alike), process 0
  writes, the others wait until it has."""
  for m in members:
    checkpoints.check_workdir(m.workdir, m.config)
  multihost.barrier("train_members: workdirs checked")
  if multihost.is_main():
    for m in members:
      checkpoints.prepare_workdir(m.workdir, m.config)
  multihost.barrier("train_members: workdirs prepared")


def _check_traces(loss_fn, model, ds: data.Dataset, hp, model_state) -> None:
  """Traces the loss on a batch of two (no compute): user terms of the wrong shape fail here."""
  params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), ds.example_shape))
  batch = {"image": jax.ShapeDtypeStruct((2, *ds.example_shape), np.float32),
           "label": jax.ShapeDtypeStruct((2,), np.int32)}
  jax.eval_shape(loss_fn, params, batch, jax.random.split(jax.random.key(0), 2),
                 {k: np.asarray(v, np.int32 if k in hparams.INT_KEYS else np.float32) for k, v in hp.items()},
                 model_state)


class _Program:
  """One compiled training program for a list of members that start at the same step."""

  def __init__(self, config, model, eval_loss, ds: data.Dataset, mesh):
    self.config, self.ds, self.mesh = config, ds, mesh
    make_opt = make_optimizer(config, ds)
    vectorize = config.member_vectorize != "loop"  # auto = vmap: it was as fast or faster in every case measured.
    step_fn = step_lib.make_train_step(families.build(config, model, axis_name=step_lib.DATA), make_opt, mesh,
                                       dynamic_binarize=config.binarize == "dynamic", vectorize=vectorize)
    on_device = config.data_placement == "device" or (
        config.data_placement == "auto" and feeds.data_fits_on_device(ds.train_images.nbytes))
    self.feed = (feeds.DeviceFeed if on_device else feeds.HostFeed)(
        step_fn, ds.train_images, ds.train_labels, batch_size=config.batch_size, mesh=mesh)
    self.evaluate = make_evaluate(eval_loss)

  def train(self, members, states, hp_list, checkpointers) -> list[dict[str, Any]]:
    config, ds = self.config, self.ds
    sharding = step_lib.member_sharding(self.mesh)
    state = multihost.put(_stack(states), sharding)
    hp = multihost.put(hparams.stack(hp_list), sharding)
    eval_keys = jax.jit(jax.vmap(lambda s: step_lib.run_keys(s)[2]), out_shardings=sharding)(hp["seed"])
    step = int(states[0].step)
    if multihost.is_main():
      for m in members:
        checkpoints.truncate_jsonl(os.path.join(m.workdir, "metrics.jsonl"), step)
    outs = [{"status": "done", "message": "", "history": [], "train": {}, "test": {}} for _ in members]
    member_writers = [writers.create(m.workdir) for m in members]
    for m, w, h in zip(members, member_writers, hp_list):
      w.write_hparams({**m.config.to_dict(), **h, "num_devices": self.mesh.devices.size, "dataset_name": ds.name})
    warning = conv_cpu_warning(config)
    if warning:
      logging.warning("%s", warning)
    logging.info("Training %d member(s) of %s on %s (%d train, %d test, shape %s) on %d %s device(s), mesh %s.",
                 len(members), config.family, ds.name, len(ds.train_images), len(ds.test_images),
                 ds.example_shape, self.mesh.devices.size, jax.default_backend(), dict(self.mesh.shape))
    first_step, start = step, time.perf_counter()
    try:
      while step < config.num_steps and any(o["status"] == "done" for o in outs):
        length = min(config.log_every - step % config.log_every, config.num_steps - step)
        next_length = min(config.log_every, config.num_steps - step - length)
        state, metrics = self.feed.run(state, hp, step, length, next_length)
        metrics, diverged_at = multihost.fetch((metrics, state.diverged_at))
        step += length
        evaluate_now = step % config.eval_every == 0 or step == config.num_steps
        tests = (self.evaluate(state.params, state.model_state, hp, ds.test_images, ds.test_labels, eval_keys)
                 if evaluate_now else None)
        save = step % config.checkpoint_every == 0 or step == config.num_steps
        for i, (m, out, writer) in enumerate(zip(members, outs, member_writers)):
          if out["status"] != "done":
            continue
          if diverged_at[i]:
            _mark_diverged(out, m, metrics, i, int(diverged_at[i]), step - length, checkpointers[i])
            continue
          out["train"] = {k: float(np.mean(v[:, i])) for k, v in metrics.items()}
          row = dict(out["train"])
          if tests is not None:
            out["test"] = tests[i]
            row.update({f"test_{k}": v for k, v in tests[i].items()})
          writer.write_scalars(step, row)
          out["history"].append({"step": step, **row})
          if save:
            checkpointers[i].save(step, multihost.member(state, i, self.mesh))  # Every process takes part.
        rate = (step - first_step) / (time.perf_counter() - start)
        losses = [o["train"]["loss"] for o in outs if o["status"] == "done"]
        logging.info("step %d/%d  loss %s  %.1f steps/s  ETA %.0fs", step, config.num_steps,
                     _summary(losses), rate, (config.num_steps - step) / rate)
    finally:
      for w in member_writers:
        w.close()
      self.feed.close()
    if not any(o["test"] for o in outs):  # Resumed finished members: evaluate what was restored.
      tests = self.evaluate(state.params, state.model_state, hp, ds.test_images, ds.test_labels, eval_keys)
      for out, test in zip(outs, tests):
        out["test"] = test
    params = multihost.fetch(state.params)
    for i, out in enumerate(outs):
      out.update(params=_member(params, i), step=step)
    return outs


def conv_cpu_warning(config) -> str | None:
  """One line on what a conv model costs on the CPU backend (README, Speed), else None."""
  if config.architecture != "conv" or jax.default_backend() != "cpu":
    return None
  return (f"architecture=conv on CPU is slow: conv (32, 64) on 28x28 MNIST takes about 100 ms per step "
          f"at batch 128 on 2 cores, 20x the 5 ms of the 784-400-20 MLP, and the time grows with the batch "
          f"and the conv widths (here {tuple(config.widths)}, batch {config.batch_size}); "
          "a GPU runs the same command (README, Speed).")


def _summary(losses: list[float]) -> str:
  if len(losses) == 1:
    return f"{losses[0]:.4f}"
  return f"{min(losses):.4f}..{max(losses):.4f} over {len(losses)} members" if losses else "(all diverged)"


def _mark_diverged(out, member: Member, metrics, i: int, diverged_at: int, first_step: int, checkpointer) -> None:
  """Records where and why member `i` stopped; its last good checkpoint stays as it is."""
  j = diverged_at - first_step - 1  # The failing step's row in this chunk's metrics.
  bad = [k for k, v in metrics.items() if k.startswith("loss") or k == "grad_norm"
         if not np.isfinite(v[j, i])]
  last = checkpointer.latest_step()
  kept = (f"the last good checkpoint is {os.path.join(member.workdir, 'checkpoints', str(last))}"
          if last is not None else "no checkpoint was saved before it")
  out["status"] = "diverged"
  out["diverged_at"] = diverged_at
  out["message"] = (f"the loss became non-finite at step {diverged_at} (non-finite: {', '.join(bad) or 'loss'}); "
                    f"{kept}; lower --config.learning_rate or the penalty weights, or check the data for "
                    "extreme values")
  logging.error("%s: %s", member.workdir, out["message"])


def _finish(member: Member, model, ds: data.Dataset, hp, out: dict[str, Any], shared: dict[Any, Any]) -> None:
  """A member's end-of-run evaluation, pictures, eval.json and status.json (diverged: status only)."""
  workdir, config = member.workdir, member.config
  status = {"status": out["status"], "step": out["step"], "message": out["message"],
            "diverged_at": out.get("diverged_at"), "num_epochs": config.num_epochs}
  if out["status"] == "done" and not multihost.is_main():
    out.update(eval={}, paths={})  # Process 0 evaluates, on the same params; the others wait at a barrier.
  elif out["status"] == "done":
    report_key = jax.random.fold_in(step_lib.run_keys(hp["seed"])[2], 1)  # eval_key drew the test losses' noise.
    out["eval"] = report.evaluate_model(config, model, out["params"], ds, report_key, shared=shared)
    jsonl = os.path.join(workdir, "metrics.jsonl")
    logged = writers.read_jsonl(jsonl) if os.path.exists(jsonl) else []
    writer = writers.create(workdir)
    if not any(row["step"] == out["step"] and any(k.startswith("eval/") for k in row) for row in logged):
      # Once per step: rerunning a finished run recomputes the same numbers, and does not log them twice.
      writer.write_scalars(out["step"], {f"eval/{k}": v for k, v in out["eval"].items()})
    writer.close()
    curves = logged or out["history"]  # The file includes resumed steps; eval/* rows hold no curve keys.
    out["paths"] = report.save_pictures(config, model, out["params"], ds, workdir, report_key, curves)
    out["paths"]["eval"] = os.path.join(workdir, "eval.json")
    with open(out["paths"]["eval"], "w", encoding="utf-8") as f:
      json.dump({"step": out["step"], **out["eval"]}, f, indent=2, allow_nan=True)
  else:
    out.update(eval={}, paths={})
  if multihost.is_main():
    with open(os.path.join(workdir, STATUS_FILE), "w", encoding="utf-8") as f:
      json.dump(status, f, indent=2)
