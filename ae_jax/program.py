"""The one assembly of a run: model, family loss, optimizer, mesh, stacked `hp`, initial state, step, feed.

    program = program.build(config, dataset, [hparams.from_config(config)])
    state = program.init_state()
    state, metrics = program.feed.run(state, program.hp, 0, 100)

`build` returns the compiled-on-demand program of a group of members that share a structure (a single
run is a group of one). The training loop (`ae_jax.train`), the benchmarks and the tests all call it;
nothing else wires a run, so what the benchmarks time is what `train.py` runs.
"""

from collections.abc import Sequence
import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
import numpy as np

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import families
from ae_jax import feeds
from ae_jax import hparams
from ae_jax import models
from ae_jax import multihost
from ae_jax import step as step_lib


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled training program of a group of members (the same structure, their own `hp`)."""

  config: Any  # Member 0's config, epochs resolved to num_steps: the structure every member shares.
  dataset: data.Dataset
  model: nn.Module
  loss: families.LossFn  # The family's loss outside shard_map (evaluation, tracing checks).
  make_opt: step_lib.MakeOptimizer
  mesh: Mesh
  hp: dict[str, jax.Array]  # Stacked over members, split over the mesh's 'sweep' axis.
  init: Any  # Jitted `hp -> TrainState` (stacked): each member from its own seed.
  step: step_lib.StepFn  # The pure step `(state, batch, hp, t) -> (state, metrics)`.
  feed: feeds.DeviceFeed | feeds.HostFeed

  @property
  def sharding(self) -> NamedSharding:
    return step_lib.member_sharding(self.mesh)

  @property
  def num_members(self) -> int:
    return int(self.hp["seed"].shape[0])

  def init_state(self) -> step_lib.TrainState:
    """Every member's state at step 0 (stacked, on the mesh)."""
    return self.init(self.hp)


def model_of(config, example_shape: Sequence[int]) -> nn.Module:
  """The family's model for `config`; ConfigError for impossible shapes."""
  try:
    return families.model_from_config(config, example_shape)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None


def build(config, dataset: data.Dataset, hp_list: Sequence[hparams.HParams], *, devices=None,
          vectorize: bool | None = None, placement: str | None = None, loop: str | None = None,
          check: bool = True, compiler_options: dict[str, Any] | None = None) -> Program:
  """The program that trains the members `hp_list` (hyperparameters of configs sharing `config`'s
  structure) on `dataset` over `devices` (default: all).

  Raises ConfigError (one line) when the batch does not fit the devices or the data, or when the
  loss cannot be traced with these shapes (`check`: user terms of the wrong shape fail here). Nothing
  is compiled until the program's functions are called. `vectorize`, `placement` and `loop` default to
  `config.member_vectorize`, `config.data_placement` and `config.loop` (the device feed's loop form; the
  host feed always scans); `compiler_options` go to the initializer.
  """
  config = config_lib.resolved(config, len(dataset.train_images))
  mesh = step_lib.make_mesh(len(hp_list), devices)
  _check_batch(config, dataset, mesh)
  model = model_of(config, dataset.example_shape)
  try:
    loss = families.build(config, model)
    train_loss = families.build(config, model, axis_name=step_lib.DATA)
    if check:
      _check_traces(loss, model, dataset, hp_list[0], families.init_state(config), batch_size=config.batch_size)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  make_opt = make_optimizer(config, dataset)
  vectorize = config.member_vectorize != "loop" if vectorize is None else vectorize
  step_fn = step_lib.make_train_step(train_loss, make_opt, mesh, dynamic_binarize=config.binarize == "dynamic",
                                     vectorize=vectorize)
  placement = placement or config.data_placement
  on_device = placement == "device" or (
      placement == "auto" and feeds.data_fits_on_device(dataset.train_images.nbytes))
  if on_device:
    feed = feeds.DeviceFeed(step_fn, dataset.train_images, dataset.train_labels, batch_size=config.batch_size,
                            mesh=mesh, loop=loop or config.get("loop", "auto"), members=len(hp_list))
  else:
    feed = feeds.HostFeed(step_fn, dataset.train_images, dataset.train_labels, batch_size=config.batch_size,
                          mesh=mesh)
  bias = models.data_mean_logits(dataset.train_images) if config.init_output_bias == "data_mean" else None
  init = _initializer(config, model, dataset, make_opt, mesh, bias, compiler_options)
  hp = multihost.put(hparams.stack(hp_list), step_lib.member_sharding(mesh))
  return Program(config=config, dataset=dataset, model=model, loss=loss, make_opt=make_opt, mesh=mesh, hp=hp,
                 init=init, step=step_fn, feed=feed)


def initial_state(config, dataset: data.Dataset) -> tuple[nn.Module, step_lib.TrainState]:
  """The model of `config` (resolved: num_steps counted) and one member's train state at step 0, on the
  host: what a run's checkpoints restore into (`ae_jax.trained.load`). Builds no loss, step or feed."""
  model = model_of(config, dataset.example_shape)
  init = step_lib.make_init(lambda key: models.init(model, key, dataset.example_shape),
                            make_optimizer(config, dataset), step_lib.make_mesh(1, jax.devices()[:1]),
                            model_state=families.init_state(config))
  state = jax.device_get(init(hparams.stack([hparams.from_config(config)])))
  return model, jax.tree.map(lambda leaf: np.asarray(leaf[0]), state)


def make_optimizer(config, dataset: data.Dataset) -> step_lib.MakeOptimizer:
  """The optimizer of `config` on `dataset` (the `iwae` schedule counts epochs of it)."""
  return step_lib.make_optimizer(
      config, steps_per_epoch=config_lib.steps_per_epoch(config, len(dataset.train_images)))


def _check_batch(config, dataset: data.Dataset, mesh: Mesh) -> None:
  data_devices = mesh.shape[step_lib.DATA]
  if config.batch_size % data_devices:
    raise config_lib.ConfigError(
        f"--config.batch_size={config.batch_size} must be divisible by the {data_devices} devices that "
        "split each member's batch")
  if config.batch_size > len(dataset.train_images):
    raise config_lib.ConfigError(f"--config.batch_size={config.batch_size} exceeds the "
                                 f"{len(dataset.train_images)} training examples of {dataset.name}")


def _check_traces(loss_fn, model, dataset: data.Dataset, hp, model_state, *, batch_size: int) -> None:
  """Traces the loss on a batch of the config's size (no compute): user terms of the wrong shape fail
  here, and their message quotes the user's own batch shape."""
  params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), dataset.example_shape))
  batch = {"image": jax.ShapeDtypeStruct((batch_size, *dataset.example_shape), np.float32),
           "label": jax.ShapeDtypeStruct((batch_size,), np.int32)}
  jax.eval_shape(loss_fn, params, batch, jax.random.split(jax.random.key(0), batch_size),
                 {k: np.asarray(v, np.int32 if k in hparams.INT_KEYS else np.float32) for k, v in hp.items()},
                 model_state)


def _initializer(config, model, dataset: data.Dataset, make_opt, mesh: Mesh, bias, compiler_options):
  """`step.make_init` of this program, jitted. Programs of one model and optimizer structure share it
  (a benchmark's plain AE and its contractive twins compile it once), unless the output bias depends
  on the data."""
  def make():
    init = step_lib.make_init(lambda key: models.init(model, key, dataset.example_shape, output_bias=bias),
                              make_opt, mesh, model_state=families.init_state(config))
    return jax.jit(init, compiler_options=compiler_options) if compiler_options else init

  if bias is not None:
    return make()
  key = (model, dataset.example_shape, mesh, tuple(sorted((compiler_options or {}).items())),
         json.dumps([config[k] for k in ("optimizer", "lr_schedule", "boundaries", "num_steps", "batch_size")]),
         len(dataset.train_images),
         json.dumps(jax.tree.map(lambda x: np.asarray(x).tolist(), families.init_state(config))))
  if key not in _INITIALIZERS:
    if len(_INITIALIZERS) >= 32:
      _INITIALIZERS.pop(next(iter(_INITIALIZERS)))
    _INITIALIZERS[key] = make()
  return _INITIALIZERS[key]


_INITIALIZERS: dict[Any, Any] = {}  # Jitted initializers by model and optimizer structure.
