"""Sweep programs against single runs: member throughput, and a whole sweep end to end.

  python experiments/benchmark_sweep.py --out=bench_sweep.jsonl     # both parts (about 10 min on 2 CPU cores)
  python experiments/benchmark_sweep.py --part=throughput --members=16 --widths=400,64
  python experiments/benchmark_sweep.py --part=shared_batch         # members sharing one batch (seeds outside)
  python experiments/benchmark_sweep.py --quick                     # CI: everything tiny; the numbers mean nothing

Throughput: `--members` members of an MNIST-shaped MLP VAE (784-W-20 for each W in `--widths`,
batch 128, random images) trained by one program, vectorised (`vmap`) and as a loop inside the
program, timed round-robin with a single run of the same model (experiments/benchmark.py's
`run_group`: the real chunk, every metric). `vs_sequential` is the program's examples/s over all
members divided by the single run's: above 1, the sweep trains its members faster than running
them one after another.

End to end: a 16-member sweep (4 learning rates x 4 seeds) of the default config on the embedded
digits as one `experiments/sweep.py` process, against the same 16 members as 16 sequential
`experiments/train.py` processes; both start with an empty compilation cache. Prints the wall times
and `speedup` = sequential / sweep.

One JSON object per line on stdout (and in `--out`): the device first, then one per measurement.
"""

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

import benchmark  # experiments/ is on sys.path (this script's folder).
from ae_jax import cli

_PART = flags.DEFINE_enum("part", "all", ["all", "throughput", "shared_batch", "end_to_end"], "What to measure.")
_MEMBERS = flags.DEFINE_integer("members", 16, "Members of the sweep program (throughput).", lower_bound=2)
_WIDTHS = flags.DEFINE_list("widths", ["400", "64"], "Hidden widths of the VAEs whose throughput is measured.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 3000, "Training steps per member (end to end).", lower_bound=1)
# --repeats, --quick and --out are benchmark.py's flags (defined when it is imported), read here too.
_REPEATS, _QUICK, _OUT = benchmark._REPEATS, benchmark._QUICK, benchmark._OUT  # pylint: disable=protected-access

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)


def throughput(widths: list[int], members: int, options: benchmark.Options) -> list[dict[str, Any]]:
  """Single run vs the `members` program, vmapped and looped, per width; round-robin in one process."""
  from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top

  images, labels = benchmark.load_images(options)
  mesh = step_lib.make_mesh()
  matmul = benchmark.make_matmul(options.matmul_size, mesh)
  rows = []
  for width in widths:
    batch = options.batch_sizes[0]
    config = benchmark.family_config("vae", batch, widths=(width,), latent_dim=20)
    steps = options.steps or max(2, 4096 // batch)
    cases = [benchmark.Case(config, steps), benchmark.Case(config, steps, members=members, vectorize=True),
             benchmark.Case(config, steps, members=members, vectorize=False)]
    single, *swept = benchmark.run_group(cases, images, labels, mesh, matmul, options)
    for row, vectorize in zip(swept, (True, False)):
      row.update(vectorize=vectorize, vs_sequential=row["examples_per_s"] / single["examples_per_s"])
    rows += [single, *swept]
  return rows


def shared_batch(widths: list[int], members: int, options: benchmark.Options) -> list[dict[str, Any]]:
  """What members that share a seed (and so their batches) could gain from one batch for all of them.

  A bare `lax.scan` of Adam steps of the MLP VAE (the plain loop's loss, no metrics), three ways, timed
  round-robin: one model; `members` models vmapped over their own batches (what a sweep of distinct
  seeds does); and `members` models vmapped over one batch (`in_axes=None`: the first layer becomes one
  (B, 784) x (784, members * W) matmul instead of `members` batched ones). `vs_sequential` as above.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import plain_loop  # pylint: disable=g-import-not-at-top
  from ae_jax import families  # pylint: disable=g-import-not-at-top
  from ae_jax import models  # pylint: disable=g-import-not-at-top

  images = jax.device_put(benchmark.load_images(options)[0])
  batch = options.batch_sizes[0]
  steps = options.steps or max(2, 4096 // batch)
  rows = []
  for width in widths:
    config = benchmark.family_config("vae", batch, widths=(width,), latent_dim=20)
    model = families.model_from_config(config, images.shape[1:])
    loss, optimizer = plain_loop.make_loss(config, model), optax.adam(config.learning_rate)

    def update(params, opt_state, x, key):
      value, grads = jax.value_and_grad(loss)(params, x, key)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, value

    def batch_at(i, offset):
      start = (i * batch + offset) % (len(images) - batch)
      return lax.dynamic_slice_in_dim(images, start, batch)

    def make(mode: str):
      offsets = jax.numpy.arange(members) * 7919 * batch
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
        (params, opt_state), values = lax.scan(body, (params, opt_state), jax.numpy.arange(steps))
        return params, opt_state, values[-1]
      return jax.jit(run, donate_argnums=(0, 1))

    def init(n):
      params = jax.vmap(lambda k: models.init(model, k, images.shape[1:]))(jax.random.split(jax.random.key(0), n))
      return (params, jax.vmap(optimizer.init)(params)) if n > 1 else jax.tree.map(lambda a: a[0], (
          params, jax.vmap(optimizer.init)(params)))

    state = {"single": init(1), "own": init(members), "shared": init(members)}
    fns = {mode: make(mode) for mode in state}
    times: dict[str, list[float]] = {mode: [] for mode in state}
    for repeat in range(options.repeats + (1 if options.warmup else 0)):
      for mode, fn in fns.items():
        start = time.perf_counter()
        params, opt_state, value = fn(*state[mode], jax.random.key(repeat))
        value.block_until_ready()
        state[mode] = (params, opt_state)
        if repeat or not options.warmup:
          times[mode].append(time.perf_counter() - start)
    median = {mode: sorted(t)[len(t) // 2] for mode, t in times.items()}
    for mode in ("own", "shared"):
      rows.append({"part": "shared_batch", "width": width, "members": members, "batch_size": batch,
                   "batches": "one per member" if mode == "own" else "one shared", "steps": steps,
                   "single_step_s": median["single"] / steps, "program_step_s": median[mode] / steps,
                   "vs_sequential": members * median["single"] / median[mode]})
  return rows


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
  widths = cli.positive_ints("widths", _WIDTHS.value)
  options = benchmark.Options(batch_sizes=(128,), repeats=_REPEATS.value)
  members, num_steps, learning_rates, seeds = _MEMBERS.value, _NUM_STEPS.value, LEARNING_RATES, 4
  if _QUICK.value:
    options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
    members, widths, num_steps, learning_rates, seeds = 2, [8], 20, LEARNING_RATES[:2], 1
  with cli.json_lines(_OUT.value) as emit, cli.clear_errors():
    from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top
    info = benchmark.device_info(0.0, step_lib.make_mesh())
    info.pop("matmul_gflops")  # Each throughput row carries the matmul rate measured with it.
    emit(info)
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
