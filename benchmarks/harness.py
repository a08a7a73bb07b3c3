"""What every benchmark shares, written once: the round-robin timer, the matmul peak, device info, JSON
lines, the common flags, the family configs, and the plain loops' hand-written Adam step.

Timing is round-robin because the machines that run these are often loaded: each round calls every
case once, rounds alternate direction (a case runs as often just before its reference as just after),
and the matmul peak is re-timed before each round. Scripts report medians of per-round values, so
load that slows one round slows both sides of its ratios.
"""

from collections.abc import Callable, Sequence
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, NamedTuple

from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from ae_jax import cli
from ae_jax import config as config_lib

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
if EXPERIMENTS not in sys.path:
  sys.path.insert(0, EXPERIMENTS)  # The family configs import their default as `configs.default`.
import configs  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position

EXAMPLE_SHAPE = (28, 28, 1)  # MNIST's: the random images every script trains on by default.

# The flags every script reads. Their defaults are benchmark.py's; a script with other defaults sets
# them with `set_defaults` at the start of its main.
REPEATS = flags.DEFINE_integer("repeats", 11, "Timed rounds: one call of every case each, after one warm-up "
                               "call (step_costs: 15).", lower_bound=1)
BATCH_SIZE = flags.DEFINE_list("batch_size", ["128", "1024"], "Global batch sizes, comma-separated; each is "
                               "timed as its own groups (step_costs: 128).")
STEPS = flags.DEFINE_integer("steps", 0, "Steps per timed call (0: 4096 examples' worth, at least 2; "
                             "step_costs: 32).", lower_bound=0)
NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 10_000, "Random training images.", lower_bound=1)
QUICK = flags.DEFINE_bool("quick", False, "CI mode: every case tiny (batch 16 on 256 examples, 2 steps, 1 "
                          "round, no warm-up, a small matmul). Checks that it runs; the numbers mean nothing.")
OUT = flags.DEFINE_string("out", "", "Also write the JSON lines to this file.")
NUM_STEPS = flags.DEFINE_integer("num_steps", 3000, "Training steps of a member that trains to the end "
                                 "(benchmark_sweep's end to end, benchmark_search).", lower_bound=3)
DATASET = flags.DEFINE_string("dataset", "random", "'random' (MNIST-shaped uniform noise) or any --config.dataset "
                              "value, e.g. npz:/data/mnist.npz (benchmark_search: digits).")


def set_defaults(**defaults: Any) -> None:
  """A script's own defaults of the shared flags; a flag given on the command line keeps its value."""
  for name, value in defaults.items():
    flags.FLAGS.set_default(name, value)


def positive_ints(flag: str, values: list[str]) -> list[int]:
  """A comma-separated list flag of positive integers (--batch_size=128,1024), or one line and exit 2."""
  try:
    out = [int(v) for v in values]
  except ValueError:
    out = []
  if not out or min(out) <= 0:
    cli.fail(f"--{flag}={','.join(values)} must be a comma-separated list of positive integers")
  return out


@contextlib.contextmanager
def json_lines(path: str):
  """`emit(row)`: each row as one JSON line on stdout and, given a path, in that file too (flushed per
  row, so a stopped run keeps what it measured). A missing folder of `path` is created; a path that
  cannot be written is refused in one line (exit 2) before anything is measured."""
  out = None
  if path:
    try:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      out = open(path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    except OSError as e:
      print(f"error: --out={path}: cannot write it ({e.strerror}); pass a file path in a writable folder",
            file=sys.stderr)
      sys.exit(2)

  def emit(row: dict[str, Any]) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out:
      out.write(line + "\n")
      out.flush()

  try:
    yield emit
  finally:
    if out:
      out.close()


def family_config(family: str, batch_size: int, **overrides) -> ml_collections.ConfigDict:
  """The family's own config file (experiments/configs/FAMILY.py), with `batch_size` and `overrides`."""
  config = configs.get(family, batch_size=batch_size, **overrides)
  config_lib.validate(config)
  return config


def random_images(num_examples: int) -> np.ndarray:
  """MNIST-shaped uniform noise in [0, 1] (float32), the same for every script and run."""
  return np.random.default_rng(0).random((num_examples, *EXAMPLE_SHAPE), np.float32)


# Timing.


class Rounds(NamedTuple):
  seconds: list[list[float]]  # seconds[i][r]: what call i returned in round r.
  peaks: list[float]  # The matmul's FLOP/s just before round r; empty without a matmul.


def round_robin(calls: Sequence[Callable[[], float]], repeats: int, *,
                matmul: Callable[[], float] | None = None) -> Rounds:
  """Calls each of `calls` (each returns the seconds it timed) once per round, `repeats` rounds,
  alternating direction; re-times `matmul` (median of 3) before each round."""
  seconds, peaks = [[] for _ in calls], []
  for r in range(repeats):
    if matmul is not None:
      peaks.append(statistics.median(matmul() for _ in range(3)))
    for times, call in list(zip(seconds, calls))[::1 if r % 2 == 0 else -1]:
      times.append(call())
  return Rounds(seconds, peaks)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
  """The median over rounds of numerator / denominator within a round."""
  return statistics.median(n / d for n, d in zip(numerators, denominators))


def make_matmul(size: int, mesh, min_seconds: float = 0.05) -> Callable[[], float]:
  """Returns a function that times chained float32 (size x size) matmuls on every device: FLOP/s.

  The chain is long enough to take `min_seconds`, so fast devices are not timing their dispatch.
  """
  n = mesh.devices.size
  sharding = NamedSharding(mesh, P(mesh.axis_names))
  a = jax.device_put(jax.random.normal(jax.random.key(0), (n, size, size), jnp.float32), sharding)
  b = jax.device_put(jax.random.normal(jax.random.key(1), (n, size, size), jnp.float32) / math.sqrt(size),
                     sharding)

  def chain(length: int) -> Callable[[], float]:
    fn = jax.jit(lambda a, b: lax.fori_loop(0, length, lambda _, x: x @ b, a), out_shardings=sharding)
    fn(a, b).block_until_ready()

    def flops_per_s() -> float:
      start = time.perf_counter()
      fn(a, b).block_until_ready()
      return 2 * n * size**3 * length / (time.perf_counter() - start)

    return flops_per_s

  once = chain(1)
  length = math.ceil(min_seconds * max(once() for _ in range(3)) / (2 * n * size**3))
  return once if length <= 1 else chain(length)


def count_macs(jaxpr) -> int:
  """Multiply-accumulates of the dot_general and conv ops in a jaxpr (scan bodies times length)."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    elif name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
    subs = [getattr(v, "jaxpr", v) for v in eqn.params.values() for v in (v if isinstance(v, (list, tuple)) else [v])]
    subs = [count_macs(s) for s in subs if hasattr(s, "eqns")]
    if subs:
      total += max(subs) if name == "cond" else sum(subs) * eqn.params.get("length", 1)
  return total


# What the numbers were measured on.


def device_info(**extra: Any) -> dict[str, Any]:
  """The first JSON line of every script: the device, JAX, the host's CPUs (the model on CPU), `extra`."""
  device = jax.devices()[0]
  info = {"device": device.device_kind, "backend": jax.default_backend(), "num_devices": jax.device_count(),
          "jax": jax.__version__, "cpu_count": os.cpu_count()}
  if device.platform == "cpu":
    info["cpu"] = cpu_model()
  return {**info, **extra}


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
  except OSError:
    model = ""
  return model or platform.processor() or platform.machine()


def peak_bytes_in_use() -> int | None:
  """The allocator's peak for the process so far (GPUs report it; it cannot be reset)."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


# The plain loops' optimizer step.


class Update(NamedTuple):
  params: Any
  opt_state: Any
  loss: jax.Array
  grads: Any
  updates: Any


class AdamStep:
  """The hand-written step of every plain loop (plain_loop, step_costs, benchmark_sweep's shared
  batches): the loss's value and gradient, then optax's Adam, under the named scopes profile_step
  charges kernels to (`loss_and_grad`, `optimizer`; they cost nothing).

  `axis_name`: called inside `shard_map` over that axis, the params are `pcast` to varying and the
  loss and gradients `pmean`ed, as ae_jax's step does (step_costs' shard_map suspect).
  """

  def __init__(self, loss: Callable[[Any, jax.Array, jax.Array], jax.Array], learning_rate: float, *,
               axis_name: str | None = None):
    self.loss, self.axis_name = loss, axis_name  # loss(params, x, key) -> scalar.
    self.optimizer = optax.adam(learning_rate)

  def init(self, params) -> Any:
    return self.optimizer.init(params)

  def __call__(self, params, opt_state, x: jax.Array, key: jax.Array) -> Update:
    with jax.named_scope("loss_and_grad"):
      inner = params
      if self.axis_name is not None:
        inner = jax.tree.map(lambda p: lax.pcast(p, self.axis_name, to="varying"), params)
      value, grads = jax.value_and_grad(self.loss)(inner, x, key)
      if self.axis_name is not None:
        value, grads = lax.pmean((value, grads), self.axis_name)
    with jax.named_scope("optimizer"):
      updates, opt_state = self.optimizer.update(grads, opt_state, params)
      return Update(optax.apply_updates(params, updates), opt_state, value, grads, updates)
