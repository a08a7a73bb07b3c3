"""Sweep programs against single runs: member throughput, and a whole sweep end to end.

  python -m benchmarks.benchmark_sweep --out=bench_sweep.jsonl     # all parts (about 10 min on 2 CPU cores)
  python -m benchmarks.benchmark_sweep --part=throughput --members=16 --widths=400,64
  python -m benchmarks.benchmark_sweep --part=shared_batch         # members sharing one batch (seeds outside)
  python -m benchmarks.benchmark_sweep --quick                     # CI: everything tiny; the numbers mean nothing

Throughput: `--members` members of an MNIST-shaped MLP VAE (784-W-20 for each W in `--widths`,
batch 128, random images) trained by one program, vectorised (`vmap`) and as a loop inside the
program, timed round-robin with a single run of the same model (benchmarks/benchmark.py's
`run_group`: the program `program.build` assembles, its feed's chunk, every metric). `vs_sequential`
is the program's examples/s over all members divided by the single run's: above 1, the sweep trains
its members faster than running them one after another.

End to end: a 16-member sweep (4 learning rates x 4 seeds) of the default config on the embedded
digits as one `experiments/sweep.py` process, against the same 16 members as 16 sequential
`experiments/train.py` processes; both start with an empty compilation cache. Prints the wall times
and `speedup` = sequential / sweep.

One JSON object per line on stdout (and in `--out`): the device first, then one per measurement.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp

from ae_jax import cli
from ae_jax import families
from ae_jax import models
from ae_jax import step as step_lib
from benchmarks import benchmark
from benchmarks import harness
from benchmarks import plain_loop

# Also harness's --repeats, --quick and --out (and benchmark.py's flags, unused here).
_PART = flags.DEFINE_enum("part", "all", ["all", "throughput", "shared_batch", "end_to_end"], "What to measure.")
_MEMBERS = flags.DEFINE_integer("members", 16, "Members of the sweep program (throughput).", lower_bound=2)
_WIDTHS = flags.DEFINE_list("widths", ["400", "64"], "Hidden widths of the VAEs whose throughput is measured.")

EXPERIMENTS = harness.EXPERIMENTS
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)


def throughput(widths: list[int], members: int, options: benchmark.Options) -> list[dict[str, Any]]:
  """Single run vs the `members` program, vmapped and looped, per width; round-robin in one process."""
  dataset = benchmark.load_dataset(options)
  matmul = harness.make_matmul(options.matmul_size, step_lib.make_mesh())
  rows = []
  for width in widths:
    batch = options.batch_sizes[0]
    config = harness.family_config("vae", batch, widths=(width,), latent_dim=20)
    steps = options.steps or max(2, 4096 // batch)
    cases = [benchmark.Case(config, steps), benchmark.Case(config, steps, members=members, vectorize=True),
             benchmark.Case(config, steps, members=members, vectorize=False)]
    single, *swept = benchmark.run_group(cases, dataset, matmul, options)
    for row, vectorize in zip(swept, (True, False)):
      row.update(vectorize=vectorize, vs_sequential=row["examples_per_s"] / single["examples_per_s"])
    rows += [single, *swept]
  return rows


def shared_batch(widths: list[int], members: int, options: benchmark.Options) -> list[dict[str, Any]]:
  """What members that share a seed (and so their batches) could gain from one batch for all of them.

  A bare `lax.scan` of Adam steps (`harness.AdamStep`) of the MLP VAE (the plain loop's loss, no
  metrics), three ways, timed round-robin: one model; `members` models vmapped over their own batches
  (what a sweep of distinct seeds does); and `members` models vmapped over one batch (`in_axes=None`:
  the first layer becomes one (B, 784) x (784, members * W) matmul instead of `members` batched ones).
  `vs_sequential` as above.
  """
  images = jax.device_put(benchmark.load_dataset(options).train_images)
  batch = options.batch_sizes[0]
  steps = options.steps or max(2, 4096 // batch)
  rows = []
  for width in widths:
    config = harness.family_config("vae", batch, widths=(width,), latent_dim=20)
    model = families.model_from_config(config, images.shape[1:])
    adam = harness.AdamStep(plain_loop.make_loss(config, model), config.learning_rate)

    def update(params, opt_state, x, key):
      return tuple(adam(params, opt_state, x, key)[:3])

    def batch_at(i, offset):
      start = (i * batch + offset) % (len(images) - batch)
      return lax.dynamic_slice_in_dim(images, start, batch)

    def make(mode: str):
      offsets = jnp.arange(members) * 7919 * batch
      def run(params, opt_state, key):
        def body(carry, i):
          params, opt_state = carry
          keys = jax.random.split(jax.random.fold_in(key, i), members)
          if mode == "single":
            out = update(params, opt_state, batch_at(i, 0), keys[0])
          elif mode == "own":
            out = jax.vmap(update)(params, opt_state, jax.vmap(lambda o: batch_at(i, o))(offsets), keys)
          else:
            out = jax.vmap(update, in_axes=(0, 0, None, 0))(params, opt_state, batch_at(i, 0), keys)
          return out[:2], out[2]
        (params, opt_state), values = lax.scan(body, (params, opt_state), jnp.arange(steps))
        return params, opt_state, values[-1]
      return jax.jit(run, donate_argnums=(0, 1))

    def init(n):
      params = jax.vmap(lambda k: models.init(model, k, images.shape[1:]))(jax.random.split(jax.random.key(0), n))
      state = (params, jax.vmap(adam.init)(params))
      return state if n > 1 else jax.tree.map(lambda a: a[0], state)

    timers = [_Scan(make(mode), init(1 if mode == "single" else members)) for mode in ("single", "own", "shared")]
    if options.warmup:
      for timer in timers:
        timer()
    seconds, _ = harness.round_robin(timers, options.repeats)
    single, own, shared = (statistics.median(t) for t in seconds)
    for mode, median in (("own", own), ("shared", shared)):
      rows.append({"part": "shared_batch", "width": width, "members": members, "batch_size": batch,
                   "batches": "one per member" if mode == "own" else "one shared", "steps": steps,
                   "single_step_s": single / steps, "program_step_s": median / steps,
                   "vs_sequential": members * single / median})
  return rows


class _Scan:
  """One of shared_batch's programs and its state; a call runs it once (a new key each) and waits."""

  def __init__(self, fn, state):
    self.fn, self.state, self.calls = fn, state, 0

  def __call__(self) -> float:
    start = time.perf_counter()
    params, opt_state, value = self.fn(*self.state, jax.random.key(self.calls))
    value.block_until_ready()
    self.state, self.calls = (params, opt_state), self.calls + 1
    return time.perf_counter() - start


def _timed(args: list[str], env: dict[str, str]) -> float:
  start = time.perf_counter()
  out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{' '.join(args[:2])} failed: {out.stderr.strip().splitlines()[-1:]}")
  return time.perf_counter() - start


def end_to_end(num_steps: int, learning_rates, seeds: int) -> dict[str, Any]:
  """Wall time of one sweep process vs the same members as sequential train.py processes."""
  common = [f"--config={os.path.join(EXPERIMENTS, 'configs', 'default.py')}", f"--config.num_steps={num_steps}"]
  members = [(lr, seed) for lr in learning_rates for seed in range(seeds)]
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "sweep_cache"))
    sweep_s = _timed([os.path.join(EXPERIMENTS, "sweep.py"), *common, f"--workdir={tmp}/sweep", f"--seeds={seeds}",
                      f"--sweep=learning_rate={','.join(map(str, learning_rates))}"], env)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "single_cache"))
    single_s = sum(_timed([os.path.join(EXPERIMENTS, "train.py"), *common, f"--config.learning_rate={lr}",
                           f"--config.seed={seed}", f"--workdir={tmp}/single_{i}"], env)
                   for i, (lr, seed) in enumerate(members))
  return {"part": "end_to_end", "members": len(members), "num_steps": num_steps, "sweep_s": sweep_s,
          "sequential_s": single_s, "speedup": single_s / sweep_s}


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --members=16 --widths=400,64")
  widths = harness.positive_ints("widths", _WIDTHS.value)
  options = benchmark.Options(batch_sizes=(128,), repeats=harness.REPEATS.value)
  members, num_steps, learning_rates, seeds = _MEMBERS.value, harness.NUM_STEPS.value, LEARNING_RATES, 4
  if harness.QUICK.value:
    options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
    members, widths, num_steps, learning_rates, seeds = 2, [8], 20, LEARNING_RATES[:2], 1
  with harness.json_lines(harness.OUT.value) as emit, cli.clear_errors():
    emit(harness.device_info())  # Each throughput row carries the matmul rate measured with it.
    if _PART.value in ("all", "throughput"):
      for row in throughput(widths, members, options):
        emit({"part": "throughput", **row})
    if _PART.value in ("all", "shared_batch"):
      for row in shared_batch(widths, members, options):
        emit(row)
    if _PART.value in ("all", "end_to_end"):
      emit(end_to_end(num_steps, learning_rates, seeds))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
