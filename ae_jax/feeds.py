"""Batches for the step: drawn on the device from a dataset held there, or streamed from host memory.

Both feeds draw each member's batches without replacement within an epoch, from a permutation that
depends only on (the member's seed, epoch): the data order is a pure function of the step, so a
resumed run sees exactly the batches an uninterrupted one would, and both feeds see the same ones.
A feed's `run(state, hp, step, length)` trains `length` steps and returns the new state and the
metrics stacked as (length, members), but those of `step.LOGGED_STEP_METRICS` (the parameter and
update norms) as (1, members): computed at the last step only, the one the training loop logs.

The device feed runs the steps in one of two loop forms (`LOOPS`, `config.loop`): one jitted
`lax.scan` over the `length` steps, or a Python loop of one jitted, donated call per step. Both call
the same per-step function of (seed, epoch, step), so they train on the same batches with the same
draws; `auto` picks the faster form for the backend (`resolve_loop`).
"""

import concurrent.futures
import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from ae_jax import multihost
from ae_jax import step as step_lib


def epoch_permutation(seed, epoch, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch` for the member with `seed`."""
  return jax.random.permutation(jax.random.fold_in(step_lib.data_key(seed), epoch), num_examples)


def _permutations(seeds, epoch, num_examples: int) -> jax.Array:
  return jax.vmap(epoch_permutation, (0, None, None))(seeds, epoch, num_examples)


LOOPS = ("auto", "scan", "step")
# `auto` steps on CPU up to this many examples per step (the global batch times the members), and scans
# above it. 0: `auto` always scans, the measured choice on the only CPU measured (docs/speed.md, the loop
# form): there the step loop ran 0.95-0.98x the scan at batch 128 and 0.98-1.03x at 1024 at moderate
# load, and 16 vmapped members 0.73x; its host thread's dispatch competes with XLA for 2 cores.
CPU_STEP_MAX_EXAMPLES = 0


def resolve_loop(loop: str, backend: str | None = None, examples_per_step: int = 0) -> str:
  """`scan` or `step` for `config.loop`. `auto`: `step` on the CPU backend up to `CPU_STEP_MAX_EXAMPLES`
  examples per step over all members (none, as measured so far), `scan` otherwise and on GPU and TPU,
  where a step of a small model can take less time than its dispatch."""
  if loop not in LOOPS:
    raise ValueError(f"unknown loop {loop!r}; choose one of {', '.join(LOOPS)}")
  if loop != "auto":
    return loop
  cpu = (backend or jax.default_backend()) == "cpu"
  return "step" if cpu and 0 < examples_per_step <= CPU_STEP_MAX_EXAMPLES else "scan"


def _batch(perms, pos, images, labels, batch_size: int):
  """The batch at position `pos` of the epoch whose orders are `perms` (members, examples)."""
  with jax.named_scope("batch"):
    idx = lax.dynamic_slice_in_dim(perms, pos * batch_size, batch_size, axis=1)  # (members, batch)
    return {"image": images[idx], "label": labels[idx]}


def make_train_one(step_fn: step_lib.StepFn, *, num_examples: int, batch_size: int):
  """Returns jitted `(state, hp, t, perms, images, labels, log) -> (state, metrics)`: step `t` alone, on
  the epoch orders `perms` (`_permutations` of t's epoch), the state donated; `log` (a bool array) asks
  for the logged step's norms. `make_train_chunk`'s body."""
  steps_per_epoch = num_examples // batch_size

  @functools.partial(jax.jit, donate_argnums=0)
  def one(state, hp, t, perms, images, labels, log):
    return step_fn(state, _batch(perms, t % steps_per_epoch, images, labels, batch_size), hp, t, log)

  return one


def _last_step_norms(metrics):
  """Stacked metrics with the logged step's norms (`step.LOGGED_STEP_METRICS`) kept from the last step."""
  return {k: v[-1:] if k in step_lib.LOGGED_STEP_METRICS else v for k, v in metrics.items()}


@jax.jit
def _stack_metrics(metrics):
  return _last_step_norms(jax.tree.map(lambda *xs: jnp.stack(xs), *metrics))


def make_train_chunk(step_fn: step_lib.StepFn, *, num_examples: int, batch_size: int, length: int):
  """Returns jitted `(state, hp, step, perms, images, labels) -> (state, metrics)` over `length` steps.

  `step` is the global step the chunk starts at (an array, so it does not recompile), `perms` the
  orders of its epoch (`DeviceFeed.epoch_orders`, computed once per epoch); a chunk that crosses into
  the next epoch draws that one's orders itself.
  """
  steps_per_epoch = num_examples // batch_size

  @functools.partial(jax.jit, donate_argnums=0)
  def chunk(state, hp, step, perms, images, labels):
    seeds = hp["seed"]

    def body(carry, _):
      state, perms, t = carry
      pos = t % steps_per_epoch
      with jax.named_scope("batch"):
        perms = lax.cond((pos == 0) & (t != step), lambda: _permutations(seeds, t // steps_per_epoch, num_examples),
                         lambda: perms)
      state, metrics = step_fn(state, _batch(perms, pos, images, labels, batch_size), hp, t, t == last)
      return (state, perms, t + 1), metrics

    last = step + length - 1
    (state, _, _), metrics = lax.scan(body, (state, perms, step), length=length)
    return state, _last_step_norms(metrics)

  return chunk


def make_stream_chunk(step_fn: step_lib.StepFn):
  """Like `make_train_chunk`, for batches streamed from the host: images of shape (length, members,
  batch, ...), as `HostFeed` makes them."""

  @functools.partial(jax.jit, donate_argnums=0)
  def chunk(state, hp, step, images, labels):
    last = step + images.shape[0] - 1

    def body(carry, batch):
      state, t = carry
      state, metrics = step_fn(state, batch, hp, t, t == last)
      return (state, t + 1), metrics

    (state, _), metrics = lax.scan(body, (state, step), {"image": images, "label": labels})
    return state, _last_step_norms(metrics)

  return chunk


class DeviceFeed:
  """Trains on a dataset held on the device: `run` is one `make_train_chunk` call (compiled per length),
  or with `loop="step"` one `make_train_one` call per step (compiled once), on the epoch's orders
  computed once per epoch."""

  def __init__(self, step_fn: step_lib.StepFn, images: np.ndarray, labels: np.ndarray, *, batch_size: int,
               mesh: Mesh, loop: str = "scan", members: int = 1):
    # Every process holds the whole dataset: each copies it to its own devices.
    self.images, self.labels = multihost.put((images, labels), NamedSharding(mesh, P()))
    self._step_fn, self._batch_size, self._chunks = step_fn, batch_size, {}
    self.loop = resolve_loop(loop, examples_per_step=batch_size * members)
    self._one = None
    self._perms = None  # (seeds, epoch, orders): the orders of the epoch being trained.
    self.steps_per_epoch = len(images) // batch_size
    self._permutations = jax.jit(_permutations, static_argnums=2)

  def chunk(self, length: int):
    """The jitted chunk `run` calls for `length` steps, `(state, hp, step, perms, self.images, self.labels)`
    with `perms = self.epoch_orders(hp["seed"], step // steps_per_epoch)`:
    public so the benchmarks lower and compile exactly what training runs."""
    if length not in self._chunks:
      self._chunks[length] = make_train_chunk(self._step_fn, num_examples=len(self.images),
                                              batch_size=self._batch_size, length=length)
    return self._chunks[length]

  def step_fn(self):
    """The jitted one-step function the `step` loop calls, `(state, hp, t, perms, images, labels)`."""
    if self._one is None:
      self._one = make_train_one(self._step_fn, num_examples=len(self.images), batch_size=self._batch_size)
    return self._one

  def compile(self, state, hp, length: int, compiler_options=None):
    """Compiles what `run(state, hp, step, length)` calls (the chunk, or the one-step function) ahead
    for these arguments' shapes, and `run` then calls that program (the benchmarks time and measure
    exactly it). Returns it."""
    perms = self.epoch_orders(hp["seed"], 0)
    args = (state, hp, np.int32(0), perms, self.images, self.labels)
    fn = self.chunk(length) if self.loop == "scan" else self.step_fn()
    compiled = fn.lower(*args, *(() if self.loop == "scan" else (np.True_,))).compile(compiler_options)
    if self.loop == "scan":
      self._chunks[length] = compiled
    else:
      self._one = compiled
    return compiled

  def epoch_orders(self, seeds, epoch: int) -> jax.Array:
    """Every member's order of the examples in `epoch` (members, examples), computed once per epoch."""
    if self._perms is None or self._perms[0] is not seeds or self._perms[1] != epoch:
      self._perms = (seeds, epoch, self._permutations(seeds, np.int32(epoch), len(self.images)))
    return self._perms[2]

  def run(self, state, hp, step: int, length: int, next_length: int = 0):
    del next_length  # Nothing to prefetch.
    if self.loop == "scan":
      perms = self.epoch_orders(hp["seed"], step // self.steps_per_epoch)
      return self.chunk(length)(state, hp, np.int32(step), perms, self.images, self.labels)
    one, metrics, last = self.step_fn(), [], step + length - 1
    for t in range(step, step + length):
      perms = self.epoch_orders(hp["seed"], t // self.steps_per_epoch)
      state, m = one(state, hp, np.int32(t), perms, self.images, self.labels, np.bool_(t == last))
      metrics.append(m)
    return state, _stack_metrics(metrics)

  def close(self) -> None:
    pass


class HostFeed:
  """Trains on a dataset streamed from host memory, in `DeviceFeed`'s order, one chunk ahead.

  While the device trains on one chunk, a background thread gathers the next (length, members,
  batch, ...) block and copies it to the devices, split over members and the batch.
  """

  def __init__(self, step_fn: step_lib.StepFn, images: np.ndarray, labels: np.ndarray, *, batch_size: int,
               mesh: Mesh):
    self._images, self._labels, self._batch_size = images, labels, batch_size
    self._steps_per_epoch = len(images) // batch_size
    self._sharding = NamedSharding(mesh, P(None, step_lib.SWEEP, step_lib.DATA))
    self._chunk = make_stream_chunk(step_fn)
    self._permutations = jax.jit(_permutations, static_argnums=2)
    self._perms: dict[int, np.ndarray] = {}
    self._seeds = None
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending = None

  def _indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(step, self._steps_per_epoch)
    if epoch not in self._perms:  # Keep this epoch's order and the previous one's.
      perms = np.asarray(self._permutations(self._seeds, epoch, len(self._images)))
      self._perms = {epoch: perms, **{e: p for e, p in self._perms.items() if e == epoch - 1}}
    return self._perms[epoch][:, pos * self._batch_size:(pos + 1) * self._batch_size]

  def _build(self, step: int, length: int):
    idx = np.stack([self._indices(s) for s in range(step, step + length)])  # (length, members, batch)
    # Each process gathers only the examples of its own devices' shards, and copies them there: a
    # device_put into a layout spanning processes would run a collective from this thread.
    return tuple(jax.make_array_from_callback((*idx.shape, *x.shape[1:]), self._sharding,
                                              lambda index, x=x: x[idx[index[:3]]])
                 for x in (self._images, self._labels))

  def run(self, state, hp, step: int, length: int, next_length: int = 0):
    if self._seeds is None:
      self._seeds = multihost.fetch(hp["seed"])
    if self._pending is not None and self._pending[:2] == (step, length):
      images, labels = self._pending[2].result()
    else:
      images, labels = self._build(step, length)
    self._pending = None
    if next_length:
      self._pending = (step + length, next_length, self._pool.submit(self._build, step + length, next_length))
    return self._chunk(state, hp, np.int32(step), images, labels)

  def close(self) -> None:
    self._pool.shutdown(wait=True)


def data_fits_on_device(num_bytes: int, *, fraction: float = 0.25) -> bool:
  """Whether a dataset of `num_bytes` should live on the device (accelerators report their memory)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  return limit is None or num_bytes <= fraction * limit
