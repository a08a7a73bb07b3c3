"""The train state, the optimizer and the data-parallel step over a ('sweep', 'data') mesh of devices.

Everything here works on *members*: the state, the batch and the hyperparameters carry a leading
member axis (a single run has one member). The step is written per device in the pmap style (a
`lax.pmean` of gradients and metrics over 'data') and mapped with `jax.shard_map`: members are split
over the 'sweep' axis (no all-reduce between them), each member's batch over the 'data' axis. On one
device the members run vectorised (`vmap`) or one after another (`lax.map`) inside one program.

All randomness comes from each member's seed and the step number (`fold_in(key, step)`), one key per
example, so results depend neither on the device count nor on how members are grouped.
"""

from collections.abc import Callable
import functools
import math
from typing import Any

import flax
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

SWEEP, DATA = "sweep", "data"
Metrics = dict[str, jax.Array]
HP = dict[str, jax.Array]
MakeOptimizer = Callable[[HP], optax.GradientTransformation]
StepFn = Callable[["TrainState", dict[str, jax.Array], HP, jax.Array], tuple["TrainState", Metrics]]
OPTIMIZERS = ("adam", "adamw", "sgd")
MEMBER_VECTORIZE = ("auto", "vmap", "loop")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Steps this member has trained (it stops counting when it diverges).
  params: Any
  opt_state: Any
  diverged_at: jax.Array  # 0 while the loss is finite, else the step that was not (the state is frozen).


def make_mesh(num_members: int = 1, devices=None) -> Mesh:
  """A ('sweep', 'data') mesh: gcd(members, devices) devices along 'sweep', the rest along 'data'."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sweep = math.gcd(num_members, devices.size)
  return Mesh(devices.reshape(sweep, devices.size // sweep), (SWEEP, DATA))


def member_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays with a leading member axis: members split over 'sweep', replicated over 'data'."""
  return NamedSharding(mesh, P(SWEEP))


def make_optimizer(config) -> MakeOptimizer:
  """`hp -> optax transformation`: the kind is structure, its numbers (learning rate) are data.

  The optimizer's state does not depend on the numbers, so one `init` serves every member and a
  traced learning rate never recompiles.
  """
  kinds = {"adam": optax.adam, "adamw": optax.adamw, "sgd": functools.partial(optax.sgd, momentum=0.9)}
  if config.optimizer not in kinds:
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
  kind = kinds[config.optimizer]
  return lambda hp: kind(hp["learning_rate"])


def run_keys(seed) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, eval) keys of a member: every random draw of a run derives from its seed."""
  init_key, train_key, eval_key = jax.random.split(jax.random.key(seed), 3)
  return init_key, train_key, eval_key


def data_key(seed) -> jax.Array:
  """The key of the member's data order (`feeds.epoch_permutation`)."""
  return jax.random.split(run_keys(seed)[1])[0]


def _step_key(seed) -> jax.Array:
  return jax.random.split(run_keys(seed)[1])[1]


def init_state(params, make_opt: MakeOptimizer, hp: HP) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=make_opt(hp).init(params),
                    diverged_at=jnp.zeros((), jnp.int32))


def make_init(init_params: Callable[[jax.Array], Any], make_opt: MakeOptimizer, mesh: Mesh):
  """Jitted `hp (stacked) -> TrainState (stacked)`: each member initialised from its own seed."""

  def one(hp):
    return init_state(init_params(run_keys(hp["seed"])[0]), make_opt, hp)

  return jax.jit(jax.vmap(one), out_shardings=member_sharding(mesh))


def make_train_step(loss_fn, make_opt: MakeOptimizer, mesh: Mesh, *, dynamic_binarize: bool = False,
                    vectorize: bool = True) -> StepFn:
  """Returns the pure step `(state, batch, hp, t) -> (state, metrics)` (not jitted: jit or scan it).

  `state`, `hp` and `batch` (with batch["image"] of shape (members, B, ...)) have a leading member
  axis; `t` is the global step, which draws the step's randomness (a diverged member's own step
  stops). Metrics come back per member. `vectorize` runs a device's members as one vmapped
  computation, else one after another.
  """

  def member_step(state: TrainState, batch, keys, hp):
    # Mark the replicated params as per-device values, so their gradients stay local (pmap style)
    # and the pmean below is the one all-reduce. Without the cast, shard_map's autodiff would sum
    # the gradients of replicated inputs over devices by itself.
    params = jax.tree.map(lambda p: lax.pcast(p, DATA, to="varying"), state.params)
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, keys, hp)
    grads = lax.pmean(grads, DATA)
    terms = lax.pmean(terms, DATA)
    updates, opt_state = make_opt(hp).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**terms, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
               "update_norm": optax.tree.norm(updates)}
    # A member whose loss or gradients stop being finite keeps its last good state from then on.
    # (A branch for one member; under vmap it becomes a select over the members.)
    alive = state.diverged_at == 0
    good = alive & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, diverged_at=state.diverged_at)
    frozen = state.replace(diverged_at=jnp.where(alive, state.step + 1, state.diverged_at))
    return lax.cond(good, lambda: new, lambda: frozen), metrics

  def per_device(state, batch, keys, hp):
    if state.step.shape[0] == 1:  # One member here: no member axis in the math (vmap of 1 costs ~10%).
      out = member_step(*jax.tree.map(lambda x: x[0], (state, batch, keys, hp)))
      return jax.tree.map(lambda x: x[None], out)
    if vectorize:
      return jax.vmap(member_step)(state, batch, keys, hp)
    return lax.map(lambda args: member_step(*args), (state, batch, keys, hp))

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(SWEEP), P(SWEEP, DATA), P(SWEEP, DATA), P(SWEEP)),
                          out_specs=(P(SWEEP), P(SWEEP)))

  def step(state: TrainState, batch, hp, t):
    batch_size = batch["image"].shape[1]

    def draws(seed, image):
      binarize_key, example_key = jax.random.split(jax.random.fold_in(_step_key(seed), t))
      if dynamic_binarize:
        image = jax.random.bernoulli(binarize_key, image).astype(image.dtype)
      return image, jax.random.split(example_key, batch_size)

    image, keys = jax.vmap(draws)(hp["seed"], batch["image"])
    return sharded(state, {**batch, "image": image}, keys, hp)

  return step
