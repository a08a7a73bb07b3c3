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

from ae_jax import hparams

SWEEP, DATA = "sweep", "data"
Metrics = dict[str, jax.Array]
HP = dict[str, jax.Array]
MakeOptimizer = Callable[[HP], optax.GradientTransformation]
StepFn = Callable[..., tuple["TrainState", Metrics]]  # (state, batch, hp, t, log=True) -> (state, metrics).
# Metrics the step computes only when asked to log (`log`): a loop keeps them from its last step alone.
LOGGED_STEP_METRICS = ("param_norm", "update_norm")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "warmup_cosine", "exponential", "piecewise", "iwae")
IWAE_STAGES = 8  # The IWAE schedule's stages i = 0..7.
MEMBER_VECTORIZE = ("auto", "vmap", "loop")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Steps this member has trained (it stops counting when it diverges).
  params: Any
  opt_state: Any
  diverged_at: jax.Array  # 0 while the loss is finite, else the step that was not (the state is frozen).
  # The family's state besides the parameters (`families.init_state`; {} for most families): the loss
  # reads it and returns it updated, over the global batch, so it is the same on every device.
  model_state: Any


def make_mesh(num_members: int = 1, devices=None) -> Mesh:
  """A ('sweep', 'data') mesh: gcd(members, devices) devices along 'sweep', the rest along 'data'."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sweep = math.gcd(num_members, devices.size)
  return Mesh(devices.reshape(sweep, devices.size // sweep), (SWEEP, DATA))


def member_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays with a leading member axis: members split over 'sweep', replicated over 'data'."""
  return NamedSharding(mesh, P(SWEEP))


def make_optimizer(config, *, steps_per_epoch: int | None = None) -> MakeOptimizer:
  """`hp -> optax transformation`: the kinds (optimizer, schedule, piecewise boundaries) are structure,
  their numbers (learning rate, Adam's b1, b2, eps, weight decay, clipping norm, schedule numbers) data.

  The optimizer's state does not depend on the numbers, so one `init` serves every member and a
  traced number never recompiles. `steps_per_epoch` (training examples // batch size) is needed by
  the `iwae` schedule, whose stages are counted in epochs.
  """
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
  if config.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
  if config.lr_schedule == "iwae" and not steps_per_epoch:
    raise ValueError("lr_schedule='iwae' counts epochs: pass steps_per_epoch to make_optimizer")
  kind, schedule = config.optimizer, config.lr_schedule
  boundaries, total_steps = tuple(config.boundaries), config.num_steps

  def make(hp):
    lr = learning_rate_schedule(schedule, hp, total_steps=total_steps, boundaries=boundaries,
                                steps_per_epoch=steps_per_epoch)
    if kind == "adam":
      opt = optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    elif kind == "adamw":
      opt = optax.adamw(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    else:
      opt = optax.sgd(lr, momentum=0.9)
    return clip_by_global_norm(opt, hp["grad_clip"])

  return make


def learning_rate_schedule(kind: str, hp: HP, *, total_steps: int, boundaries: tuple[int, ...] = (),
                           steps_per_epoch: int | None = None):
  """The learning rate of `kind` from the numbers in `hp`: a scalar (constant) or `count -> lr`.

  Written as small pure functions rather than optax's schedule constructors, which compare their
  numbers with Python `if`s (and so refuse traced hyperparameters); the tests check each against
  optax's own schedule on plain numbers. `constant` stays a scalar, so its optimizer state is the
  one a constant learning rate always had (older checkpoints restore).

  - warmup_cosine: linear from 0 to lr over `warmup_steps`, then a cosine to lr * final_lr_fraction
    at `total_steps` (optax.warmup_cosine_decay_schedule with decay_steps = total_steps).
  - exponential: lr * decay_rate ** (count / decay_steps) (optax.exponential_decay, not staircase).
  - piecewise: lr times the product of scales[i] over the boundaries[i] <= count
    (optax.piecewise_constant_schedule).
  - iwae: lr * 10 ** (-i / 7) during the 3 ** i epochs of stage i = 0..7 (Burda et al. 2015), then
    stage 7 on.
  """
  lr = hp["learning_rate"]
  if kind == "constant":
    return lr
  if kind == "warmup_cosine":
    return functools.partial(warmup_cosine, lr=lr, warmup_steps=hp["warmup_steps"], total_steps=total_steps,
                             final_fraction=hp["final_lr_fraction"])
  if kind == "exponential":
    return lambda count: lr * hp["decay_rate"] ** (count / hp["decay_steps"])
  if kind == "piecewise":
    scales = [hp[f"{hparams.SCALE_PREFIX}{i}"] for i in range(len(boundaries))]
    return functools.partial(piecewise, lr=lr, boundaries=boundaries, scales=scales)
  if kind == "iwae":
    return functools.partial(iwae, lr=lr, steps_per_epoch=steps_per_epoch)
  raise ValueError(f"unknown lr_schedule {kind!r}; choose one of {', '.join(LR_SCHEDULES)}")


def warmup_cosine(count, *, lr, warmup_steps, total_steps, final_fraction):
  count = jnp.asarray(count, jnp.float32)
  warm = lr * count / jnp.maximum(warmup_steps, 1.0)
  progress = jnp.clip((count - warmup_steps) / jnp.maximum(total_steps - warmup_steps, 1.0), 0.0, 1.0)
  cosine = lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
  return jnp.where(count < warmup_steps, warm, cosine)


def piecewise(count, *, lr, boundaries, scales):
  value = lr
  for boundary, scale in zip(boundaries, scales):
    value = jnp.where(count >= boundary, value * scale, value)
  return value


def iwae_boundaries(steps_per_epoch: int) -> tuple[int, ...]:
  """The steps where the IWAE schedule's stages 1..7 start: after sum_{j<i} 3^j = (3^i - 1) / 2 epochs."""
  return tuple((3**i - 1) // 2 * steps_per_epoch for i in range(1, IWAE_STAGES))


def iwae(count, *, lr, steps_per_epoch):
  stage = sum(jnp.where(count >= b, 1.0, 0.0) for b in iwae_boundaries(steps_per_epoch))
  return lr * 10.0 ** (-stage / (IWAE_STAGES - 1))


def l2_norm(tree) -> jax.Array:
  """The global l2 norm of a pytree, as optax.tree.norm, written with dot products: XLA:CPU runs each
  leaf's sum of squares far faster as a dot than as a reduction (benchmarks/profile_step.py: the three
  norms logged every step took 0.35 ms of a 4.2 ms MLP step at batch 128 as reductions, 0.15 ms as dots)."""
  return jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(tree)))


def clip_by_global_norm(opt: optax.GradientTransformation, max_norm) -> optax.GradientTransformation:
  """`opt` applied to gradients rescaled to global norm <= max_norm (0: no clipping, a traced number).

  Wraps `opt` rather than chaining optax.clip_by_global_norm, so the state is `opt`'s own whether
  clipping is on or off (and checkpoints from before the option restore).
  """

  def update(grads, state, params=None):
    norm = l2_norm(grads)
    scale = jnp.where((max_norm > 0) & (norm > max_norm), max_norm / jnp.maximum(norm, 1e-30), 1.0)
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    return opt.update(grads, state, params)

  return optax.GradientTransformation(opt.init, update)


def run_keys(seed) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, eval) keys of a member: every random draw of a run derives from its seed."""
  init_key, train_key, eval_key = jax.random.split(jax.random.key(seed), 3)
  return init_key, train_key, eval_key


def data_key(seed) -> jax.Array:
  """The key of the member's data order (`feeds.epoch_permutation`)."""
  return jax.random.split(run_keys(seed)[1])[0]


def _step_key(seed) -> jax.Array:
  return jax.random.split(run_keys(seed)[1])[1]


def init_state(params, make_opt: MakeOptimizer, hp: HP, model_state: Any = None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=make_opt(hp).init(params),
                    diverged_at=jnp.zeros((), jnp.int32),
                    model_state=jax.tree.map(jnp.asarray, {} if model_state is None else model_state))


def make_init(init_params: Callable[[jax.Array], Any], make_opt: MakeOptimizer, mesh: Mesh, *,
              model_state: Any = None):
  """Jitted `hp (stacked) -> TrainState (stacked)`: each member initialised from its own seed, with
  `model_state` (`families.init_state`, the same for every member; default {})."""

  def one(hp):
    return init_state(init_params(run_keys(hp["seed"])[0]), make_opt, hp, model_state)

  return jax.jit(jax.vmap(one), out_shardings=member_sharding(mesh))


def make_train_step(loss_fn, make_opt: MakeOptimizer, mesh: Mesh, *, dynamic_binarize: bool = False,
                    vectorize: bool = True) -> StepFn:
  """Returns the pure step `(state, batch, hp, t, log=True) -> (state, metrics)` (not jitted: jit or scan it).

  `state`, `hp` and `batch` (with batch["image"] of shape (members, B, ...)) have a leading member
  axis; `t` is the global step, which draws the step's randomness (a diverged member's own step
  stops). Metrics come back per member. `log` (a bool, traced or not) asks for the norms of
  `LOGGED_STEP_METRICS` too (else they are 0): the loops ask at the step they log, and skip a read of
  every parameter twice on the others (the gradient's norm, which the divergence guard and clipping
  read, is computed at every step). `vectorize` runs a device's members as one vmapped computation,
  else one after another.
  """

  data_parallel = mesh.shape[DATA] > 1

  def member_step(state: TrainState, batch, keys, hp, log):
    # Data parallel: mark the replicated params as per-device values, so their gradients stay local
    # (pmap style) and the pmean below is the one all-reduce. Without the cast, shard_map's autodiff
    # would sum the gradients of replicated inputs over devices by itself.
    # The named scopes label the step's parts in profiles (benchmarks/profile_step.py); they cost nothing.
    with jax.named_scope("loss_and_grad"):
      params = state.params
      if data_parallel:
        params = jax.tree.map(lambda p: lax.pcast(p, DATA, to="varying"), params)
      (_, (terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, batch, keys, hp, state.model_state)
      if data_parallel:
        grads = lax.pmean(grads, DATA)
        terms = lax.pmean(terms, DATA)
    with jax.named_scope("optimizer"):
      updates, opt_state = make_opt(hp).update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    with jax.named_scope("norms"):
      metrics = {**terms, "grad_norm": l2_norm(grads)}

      def norms():
        return l2_norm(params), l2_norm(updates)

      def skipped():  # Zeros typed as the norms are (varying over the members' axis inside shard_map).
        return tuple(jnp.zeros_like(metrics["grad_norm"]) for _ in LOGGED_STEP_METRICS)

      metrics.update(zip(LOGGED_STEP_METRICS, norms() if log is True else lax.cond(log, norms, skipped)))
    # A member whose loss or gradients stop being finite keeps its last good state from then on.
    # (A branch for one member; under vmap it becomes a select over the members.)
    with jax.named_scope("divergence_guard"):
      alive = state.diverged_at == 0
      good = alive & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
      new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, diverged_at=state.diverged_at,
                       model_state=model_state)
      frozen = state.replace(diverged_at=jnp.where(alive, state.step + 1, state.diverged_at))
      return lax.cond(good, lambda: new, lambda: frozen), metrics

  def per_device(state, batch, keys, hp, log):
    if state.step.shape[0] == 1:  # One member here: no member axis in the math (vmap of 1 costs ~10%).
      out = member_step(*jax.tree.map(lambda x: x[0], (state, batch, keys, hp)), log)
      return jax.tree.map(lambda x: x[None], out)
    if vectorize:
      return jax.vmap(member_step, in_axes=(0, 0, 0, 0, None))(state, batch, keys, hp, log)
    return lax.map(lambda args: member_step(*args, log), (state, batch, keys, hp))

  # With one device on 'data' the batch is not split over it: nothing varies over 'data' and no
  # all-reduce is emitted (XLA:CPU runs a one-device all-reduce as a copy of every gradient, 0.12-0.16 ms
  # of a 4-6 ms MLP step at batch 128). The math is the same.
  data = DATA if data_parallel else None
  def sharded(state, batch, keys, hp, log):
    static = log is True  # No predicate to pass: the norms are computed.
    fn = (lambda *args: per_device(*args, True)) if static else per_device
    args = (state, batch, keys, hp) + (() if static else (log,))
    specs = (P(SWEEP), P(SWEEP, data), P(SWEEP, data), P(SWEEP)) + (() if static else (P(),))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=(P(SWEEP), P(SWEEP)))(*args)

  def step(state: TrainState, batch, hp, t, log=True):
    batch_size = batch["image"].shape[1]

    def draws(seed, image):
      binarize_key, example_key = jax.random.split(jax.random.fold_in(_step_key(seed), t))
      if dynamic_binarize:
        image = jax.random.bernoulli(binarize_key, image).astype(image.dtype)
      return image, jax.random.split(example_key, batch_size)

    with jax.named_scope("draws"):
      image, keys = jax.vmap(draws)(hp["seed"], batch["image"])
    return sharded(state, {**batch, "image": image}, keys, hp, log)

  return step
