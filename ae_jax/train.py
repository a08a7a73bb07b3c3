"""Training: the state, the data-parallel step, the fused on-device loop, and `train_and_evaluate`.

The step is written per device in the pmap style (`lax.pmean` of gradients and metrics) and mapped
with `jax.shard_map` over a 1-D ('data',) mesh of all devices, so the same code runs on 1 CPU, N GPUs
or a TPU slice. All randomness is derived inside jit from one key and the step number
(`fold_in(key, step)`), one key per example, so results do not depend on the device count.
The loop keeps the dataset on the device and runs `log_every` steps per call in a `lax.scan`;
the host only sees metrics at log and eval intervals.
"""

from collections.abc import Callable
import concurrent.futures
import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from ae_jax import checkpoints
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import models
from ae_jax import objectives
from ae_jax import report
from ae_jax import writers

AXIS = "data"
Metrics = dict[str, jax.Array]
StepFn = Callable[["TrainState", dict[str, jax.Array], jax.Array], tuple["TrainState", Metrics]]


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss); the message says what to change."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_mesh(devices=None) -> Mesh:
  """A 1-D ('data',) mesh over `devices` (default: all)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def make_optimizer(config) -> optax.GradientTransformation:
  if config.optimizer == "adam":
    return optax.adam(config.learning_rate)
  if config.optimizer == "adamw":
    return optax.adamw(config.learning_rate)
  if config.optimizer == "sgd":
    return optax.sgd(config.learning_rate, momentum=0.9)
  raise config_lib.ConfigError(f"unknown optimizer {config.optimizer!r}")


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def make_train_step(
    loss_fn: objectives.LossFn, optimizer: optax.GradientTransformation, mesh: Mesh, *,
    dynamic_binarize: bool = False,
) -> StepFn:
  """Returns the pure step `(state, batch, key) -> (state, metrics)` (not jitted: jit or scan it).

  `batch` is the global batch; its leading axis is split over the mesh. `key` is the run's base key;
  the step folds in `state.step`, so feeding the same key every step is correct.
  """

  def per_device(state: TrainState, batch, keys):
    # Mark the replicated params as per-device values, so their gradients stay local (pmap style)
    # and the pmean below is the one all-reduce. Without the cast, shard_map's autodiff would sum
    # the gradients of replicated inputs over devices by itself.
    params = jax.tree.map(lambda p: lax.pcast(p, AXIS, to="varying"), state.params)
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, keys)
    grads = lax.pmean(grads, AXIS)
    terms = lax.pmean(terms, AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        **terms,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "update_norm": optax.tree.norm(updates),
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  sharded = jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=(P(), P()))

  def step(state: TrainState, batch, key):
    step_key = jax.random.fold_in(key, state.step)
    binarize_key, example_key = jax.random.split(step_key)
    batch_size = batch["image"].shape[0]
    if dynamic_binarize:
      image = batch["image"]
      batch = {**batch, "image": jax.random.bernoulli(binarize_key, image).astype(image.dtype)}
    return sharded(state, batch, jax.random.split(example_key, batch_size))

  return step


def make_train_chunk(step_fn: StepFn, *, num_examples: int, batch_size: int, length: int):
  """Returns jitted `(state, key, images, labels) -> (state, metrics stacked over `length` steps)`.

  Batches are drawn on the device, without replacement within an epoch, from a permutation that
  depends only on (key, epoch): the data order is a pure function of the step, so a resumed run
  sees exactly the batches an uninterrupted one would.
  """
  steps_per_epoch = num_examples // batch_size

  def permutation(key, step):
    return epoch_permutation(key, step // steps_per_epoch, num_examples)

  @functools.partial(jax.jit, donate_argnums=0)
  def chunk(state: TrainState, key, images, labels):
    step_key = jax.random.split(key)[1]

    def body(carry, _):
      state, perm = carry
      pos = state.step % steps_per_epoch
      perm = lax.cond(pos == 0, lambda: permutation(key, state.step), lambda: perm)
      idx = lax.dynamic_slice_in_dim(perm, pos * batch_size, batch_size)
      state, metrics = step_fn(state, {"image": images[idx], "label": labels[idx]}, step_key)
      return (state, perm), metrics

    (state, _), metrics = lax.scan(body, (state, permutation(key, state.step)), length=length)
    return state, metrics

  return chunk


def epoch_permutation(key: jax.Array, epoch, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch`, a pure function of (run key, epoch).

  Both feeds use it (on-device gathers, host streaming), so they train on identical batches.
  """
  data_key = jax.random.split(key)[0]
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def make_stream_chunk(step_fn: StepFn):
  """Like `make_train_chunk`, for batches streamed from the host: `(state, key, images, labels)` with
  images of shape (length, batch, ...), as `HostFeeder` makes them."""

  @functools.partial(jax.jit, donate_argnums=0)
  def chunk(state: TrainState, key, images, labels):
    step_key = jax.random.split(key)[1]
    return lax.scan(lambda st, batch: step_fn(st, batch, step_key), state, {"image": images, "label": labels})

  return chunk


class DeviceFeed:
  """Trains on a dataset held on the device: `run` is one `make_train_chunk` call (compiled per length)."""

  def __init__(self, step_fn: StepFn, images: np.ndarray, labels: np.ndarray, key: jax.Array, *,
               batch_size: int, mesh: Mesh):
    replicated = NamedSharding(mesh, P())
    self._images, self._labels = jax.device_put(images, replicated), jax.device_put(labels, replicated)
    self._step_fn, self._key, self._batch_size, self._chunks = step_fn, key, batch_size, {}

  def run(self, state: TrainState, step: int, length: int, next_length: int = 0):
    del step, next_length  # The chunk reads the step from the state and needs no prefetch.
    if length not in self._chunks:
      self._chunks[length] = make_train_chunk(self._step_fn, num_examples=len(self._images),
                                              batch_size=self._batch_size, length=length)
    return self._chunks[length](state, self._key, self._images, self._labels)

  def close(self) -> None:
    pass


class HostFeed:
  """Trains on a dataset streamed from host memory, in `DeviceFeed`'s order, one chunk ahead.

  While the device trains on one chunk, a background thread gathers the next (length, batch, ...)
  block and copies it to the devices, sharded over the batch axis.
  """

  def __init__(self, step_fn: StepFn, images: np.ndarray, labels: np.ndarray, key: jax.Array, *,
               batch_size: int, mesh: Mesh):
    self._images, self._labels, self._key, self._batch_size = images, labels, key, batch_size
    self._steps_per_epoch = len(images) // batch_size
    self._sharding = NamedSharding(mesh, P(None, AXIS))
    self._chunk = make_stream_chunk(step_fn)
    self._permutation = jax.jit(epoch_permutation, static_argnums=2)
    self._perms: dict[int, np.ndarray] = {}
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending = None

  def _indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(step, self._steps_per_epoch)
    if epoch not in self._perms:  # Keep this epoch's order and the previous one's.
      self._perms = {epoch: np.asarray(self._permutation(self._key, epoch, len(self._images))),
                     **{e: p for e, p in self._perms.items() if e == epoch - 1}}
    return self._perms[epoch][pos * self._batch_size:(pos + 1) * self._batch_size]

  def _build(self, step: int, length: int):
    idx = np.stack([self._indices(s) for s in range(step, step + length)])
    return jax.device_put(self._images[idx], self._sharding), jax.device_put(self._labels[idx], self._sharding)

  def run(self, state: TrainState, step: int, length: int, next_length: int = 0):
    if self._pending is not None and self._pending[:2] == (step, length):
      images, labels = self._pending[2].result()
    else:
      images, labels = self._build(step, length)
    self._pending = None
    if next_length:
      self._pending = (step + length, next_length, self._pool.submit(self._build, step + length, next_length))
    return self._chunk(state, self._key, images, labels)

  def close(self) -> None:
    self._pool.shutdown(wait=True)


def data_fits_on_device(num_bytes: int, *, fraction: float = 0.25) -> bool:
  """Whether a dataset of `num_bytes` should live on the device (accelerators report their memory)."""
  stats = jax.devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  return limit is None or num_bytes <= fraction * limit


def make_evaluate(loss_fn: objectives.LossFn, *, batch_size: int = 500):
  """Returns `evaluate(params, images, labels, key) -> {name: mean over the set}` (host floats)."""

  @jax.jit
  def eval_batch(params, images, labels, key):
    keys = jax.random.split(key, images.shape[0])
    _, terms = loss_fn(params, {"image": images, "label": labels}, keys)
    return terms

  def evaluate(params, images, labels, key) -> dict[str, float]:
    totals, count = {}, 0
    for i, start in enumerate(range(0, len(images), batch_size)):
      x, y = images[start:start + batch_size], labels[start:start + batch_size]
      terms = eval_batch(params, x, y, jax.random.fold_in(key, i))
      for k, v in terms.items():
        totals[k] = totals.get(k, 0.0) + v * len(x)
      count += len(x)
    return {k: float(v) / count for k, v in jax.device_get(totals).items()}

  return evaluate


def _check_finite(metrics: dict[str, np.ndarray], first_step: int) -> None:
  loss = metrics["loss"]
  bad = np.flatnonzero(~np.isfinite(loss))
  if bad.size:
    raise TrainingError(
        f"loss became {loss[bad[0]]} at step {first_step + int(bad[0]) + 1}; lower --config.learning_rate "
        "or the penalty weights, and check the data for extreme values")


def _model_from_config(config, example_shape) -> Any:
  return models.from_config(config, example_shape)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains `config.family` on `config.dataset`, writing metrics and pictures to `workdir`.

  Returns the final train and test metrics and the paths written. Raises ConfigError or DataError
  (one-line messages) for bad input, TrainingError if the loss stops being finite.
  """
  config_lib.validate(config)
  ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
  mesh = make_mesh()
  num_devices = mesh.devices.size
  if config.batch_size % num_devices:
    raise config_lib.ConfigError(
        f"--config.batch_size={config.batch_size} must be divisible by the {num_devices} devices")
  num_train = len(ds.train_images)
  if config.batch_size > num_train:
    raise config_lib.ConfigError(
        f"--config.batch_size={config.batch_size} exceeds the {num_train} training examples of {ds.name}")
  try:
    model = _model_from_config(config, ds.example_shape)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None

  key = jax.random.key(config.seed)
  init_key, train_key, eval_key = jax.random.split(key, 3)
  optimizer = make_optimizer(config)
  replicated = NamedSharding(mesh, P())
  state = jax.device_put(init_state(models.init(model, init_key, ds.example_shape), optimizer), replicated)

  step_fn = make_train_step(objectives.build(config, model, axis_name=AXIS), optimizer, mesh,
                            dynamic_binarize=config.binarize == "dynamic")
  on_device = config.data_placement == "device" or (
      config.data_placement == "auto" and data_fits_on_device(ds.train_images.nbytes))
  feed = (DeviceFeed if on_device else HostFeed)(
      step_fn, ds.train_images, ds.train_labels, train_key, batch_size=config.batch_size, mesh=mesh)
  evaluate = make_evaluate(objectives.build(config, model))

  checkpoints.prepare_workdir(workdir, config)
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("Resumed from the checkpoint at step %d in %s.", int(state.step), workdir)
  step = int(state.step)
  checkpoints.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"), step)
  writer = writers.create(workdir)
  writer.write_hparams({**config.to_dict(), "num_devices": num_devices, "dataset_name": ds.name})
  logging.info("Training %s on %s (%d train, %d test, shape %s) on %d %s device(s).", config.family,
               ds.name, num_train, len(ds.test_images), ds.example_shape, num_devices, jax.default_backend())

  history, first_step, start = [], step, time.perf_counter()
  train_metrics: dict[str, float] = {}
  test_metrics: dict[str, float] = {}
  try:
    while step < config.num_steps:
      length = min(config.log_every - step % config.log_every, config.num_steps - step)
      next_length = min(config.log_every, config.num_steps - step - length)
      state, metrics = feed.run(state, step, length, next_length)
      metrics = jax.device_get(metrics)
      _check_finite(metrics, step)
      step += length
      train_metrics = {k: float(np.mean(v)) for k, v in metrics.items()}
      row = dict(train_metrics)
      if step % config.eval_every == 0 or step == config.num_steps:
        test_metrics = evaluate(state.params, ds.test_images, ds.test_labels, eval_key)
        row.update({f"test_{k}": v for k, v in test_metrics.items()})
      writer.write_scalars(step, row)
      history.append({"step": step, **row})
      if step % config.checkpoint_every == 0 or step == config.num_steps:
        checkpointer.save(step, state)
      rate = (step - first_step) / (time.perf_counter() - start)
      logging.info("step %d/%d  loss %.4f  %.1f steps/s  ETA %.0fs", step, config.num_steps,
                   train_metrics["loss"], rate, (config.num_steps - step) / rate)
  finally:
    writer.flush()
    checkpointer.close()
    feed.close()
  if not test_metrics:  # Resumed a finished run: evaluate what was restored.
    test_metrics = evaluate(state.params, ds.test_images, ds.test_labels, eval_key)

  report_key = jax.random.fold_in(eval_key, 1)  # eval_key itself drew the test losses' noise.
  eval_metrics = report.evaluate_model(config, model, state.params, ds, report_key)
  jsonl = os.path.join(workdir, "metrics.jsonl")
  logged = writers.read_jsonl(jsonl) if os.path.exists(jsonl) else []
  if not any(row["step"] == step and any(k.startswith("eval/") for k in row) for row in logged):
    # Once per step: rerunning a finished run recomputes the same numbers, and does not log them twice.
    writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
  writer.flush()
  curves = logged or history  # The file includes resumed steps; eval/* rows hold no curve keys.
  paths = report.save_pictures(config, model, state.params, ds, workdir, report_key, curves)
  if jax.process_index() == 0:
    paths["eval"] = os.path.join(workdir, "eval.json")
    with open(paths["eval"], "w", encoding="utf-8") as f:
      json.dump({"step": step, **eval_metrics}, f, indent=2, allow_nan=True)
  writer.close()
  return {"train": train_metrics, "test": test_metrics, "eval": eval_metrics, "history": history,
          "paths": paths, "params": state.params}

