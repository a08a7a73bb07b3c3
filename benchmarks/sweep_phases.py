"""Where a sweep's own wall time goes: imports, data, assembly and compile, training, evaluation, pictures.

  python -m benchmarks.sweep_phases --out=phases.jsonl            # 16 members, default config, digits
  python -m benchmarks.sweep_phases -- --config.num_steps=1000    # anything after -- goes to experiments/sweep.py
  python -m benchmarks.sweep_phases --quick                       # CI: 2 members, 20 steps, quick evaluation

Runs `experiments/sweep.py` (4 learning rates x 4 seeds of the default config, as benchmark_sweep's end
to end) in this process, with timers wrapped around the functions each phase calls, and prints one
JSON object: seconds per phase and the rest (`other`: the CLI, workdirs, metrics files, the sweep's
tables). Training's first call also compiles: `compile_and_first_chunk_s` is apart, and
`train_s` is the other chunks. An empty XLA compilation cache (a fresh temporary directory) unless
--warm_cache.
"""

import time

START = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import contextlib
import functools
import json
import os
import sys
import tempfile

QUICK = ["--config.num_steps=20", "--config.log_every=10", "--config.eval_every=20", "--config.checkpoint_every=20",
         "--config.evaluate=quick"]


def _timer(totals, name, fn):
  @functools.wraps(fn)
  def timed(*args, **kwargs):
    start = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      totals[name] += time.perf_counter() - start
  return timed


def main() -> None:
  args = sys.argv[1:]
  out = next((a.split("=", 1)[1] for a in args if a.startswith("--out=")), "")
  warm, quick = "--warm_cache" in args, "--quick" in args
  extra = (QUICK if quick else []) + (args[args.index("--") + 1:] if "--" in args else [])
  totals = collections.defaultdict(float)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    if not warm:
      os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tmp, "cache")
    members = ["--seeds=1", "--sweep=learning_rate=0.001,0.01"] if quick else [
        "--seeds=4", "--sweep=learning_rate=0.0003,0.001,0.003,0.01"]
    argv = ["sweep.py", f"--config={os.path.join(root, 'experiments', 'configs', 'default.py')}",
            f"--workdir={tmp}/sweep", *members, *extra]
    sys.argv = argv  # ml_collections registers the --config.* overrides when the script defines --config.
    sys.path.insert(0, os.path.join(root, "experiments"))
    from absl import app
    import jax
    import sweep as sweep_script  # experiments/sweep.py

    from ae_jax import checkpoints
    from ae_jax import cli
    from ae_jax import data
    from ae_jax import feeds
    from ae_jax import program
    from ae_jax import report
    from ae_jax import sweep  # noqa: F401  # What the script imports after its flags.
    from ae_jax import train
    totals["imports_s"] = time.perf_counter() - START

    data.load = _timer(totals, "data_s", data.load)
    program.build = _timer(totals, "assembly_s", program.build)
    report.evaluate_model = _timer(totals, "evaluation_s", report.evaluate_model)
    report.save_pictures = _timer(totals, "pictures_s", report.save_pictures)
    checkpoints.Checkpointer.save = _timer(totals, "checkpoints_s", checkpoints.Checkpointer.save)
    make_evaluate = train.make_evaluate
    train.make_evaluate = lambda *a, **k: _timer(totals, "test_losses_s", make_evaluate(*a, **k))
    chunks = []
    run = feeds.DeviceFeed.run

    def timed_run(self, *a, **k):
      t = time.perf_counter()
      state, metrics = run(self, *a, **k)
      jax.block_until_ready(metrics)
      chunks.append(time.perf_counter() - t)
      return state, metrics

    feeds.DeviceFeed.run = timed_run
    start = time.perf_counter()
    with contextlib.suppress(SystemExit):
      app.run(sweep_script.main, argv=argv, flags_parser=cli.parse_flags)
    wall = time.perf_counter() - start
  row = {"members": 2 if quick else 16, "extra": extra, "warm_cache": warm,
         **{k: round(v, 2) for k, v in totals.items()}}
  row["compile_and_first_chunk_s"] = round(chunks[0], 2) if chunks else None
  row["train_s"] = round(sum(chunks[1:]), 2)
  row["chunks"] = len(chunks)
  row["sweep_wall_s"] = round(wall, 2)
  row["total_s"] = round(time.perf_counter() - START, 2)
  named = sum(v for k, v in totals.items() if k != "imports_s") + sum(chunks)
  row["other_s"] = round(wall - named, 2)
  line = json.dumps(row)
  print(line, flush=True)
  if out:
    with open(out, "w", encoding="utf-8") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  main()
