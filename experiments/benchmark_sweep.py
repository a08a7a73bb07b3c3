"""Sweep programs against single runs: member throughput, and a whole sweep end to end.

  python experiments/benchmark_sweep.py --out=bench_sweep.jsonl     # both parts (about 10 min on 2 CPU cores)
  python experiments/benchmark_sweep.py --part=throughput --members=16 --widths=400,64
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

import json
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

_PART = flags.DEFINE_enum("part", "all", ["all", "throughput", "end_to_end"], "What to measure.")
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
  try:
    widths = [int(w) for w in _WIDTHS.value]
  except ValueError:
    cli.fail(f"--widths={','.join(_WIDTHS.value)} must be a comma-separated list of integers")
  if not widths or min(widths) <= 0:
    cli.fail("--widths needs positive integers")
  options = benchmark.Options(batch_sizes=(128,), repeats=_REPEATS.value)
  members, num_steps, learning_rates, seeds = _MEMBERS.value, _NUM_STEPS.value, LEARNING_RATES, 4
  if _QUICK.value:
    options = benchmark.Options(**{**benchmark.QUICK, "batch_sizes": (16,)})
    members, widths, num_steps, learning_rates, seeds = 2, [8], 20, LEARNING_RATES[:2], 1
  out = open(_OUT.value, "w", encoding="utf-8") if _OUT.value else None  # pylint: disable=consider-using-with

  def emit(row):
    line = json.dumps(row)
    print(line, flush=True)
    if out:
      out.write(line + "\n")
      out.flush()

  try:
    with cli.clear_errors():
      from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top
      info = benchmark.device_info(0.0, step_lib.make_mesh())
      info.pop("matmul_gflops")  # Each throughput row carries the matmul rate measured with it.
      emit(info)
      if _PART.value in ("all", "throughput"):
        for row in throughput(widths, members, options):
          emit({"part": "throughput", **row})
      if _PART.value in ("all", "end_to_end"):
        emit(end_to_end(num_steps, learning_rates, seeds))
  finally:
    if out:
      out.close()


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
