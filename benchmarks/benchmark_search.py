"""Searches against grids, each in one run: halving against the grid it prunes, PBT against a grid of
equal compute.

  python -m benchmarks.benchmark_search --dataset=npz:/path/to/mnist.npz --out=bench_search.jsonl
  python -m benchmarks.benchmark_search --search=pbt --num_steps=1000 --dataset=npz:/path/to/mnist.npz
  python -m benchmarks.benchmark_search --search=overhead --dataset=npz:/path/to/mnist.npz
  python -m benchmarks.benchmark_search --quick      # CI: the digits, tiny; the numbers mean nothing

Halving (`--search=halving`):

The VAE 784-400-20 (experiments/configs/vae.py with widths (400,), latent 20, batch 128) over 3
learning rates x 3 betas x 3 seeds = 27 members, `--num_steps` steps, a 10% validation split, the
quick end-of-run evaluation (the ELBO terms on both splits): once as the full grid (`sweep.run`, every
member to the end) and once by halving (`search="halving"`, eta 3: rungs at 1/27, 1/9, 1/3 and all of
the steps, ranked on the validation negative ELBO = loss_rec + loss_kl, the seeds of a setting
averaged), each into a fresh workdir, the grid first. Both choose on validation and report test: the
grid the setting with the lowest mean validation -ELBO over its seeds, halving its survivor. Printed:
each side's wall seconds, halving / grid, and the chosen settings' mean test -ELBO (nats).

PBT (`--search=pbt`): the same VAE, 4 learning rates x 4 betas = 16 members, `--num_steps` steps with an
evaluation (and, for PBT, an exploit of the worst quarter, exploring learning rate and beta) every
`num_steps / 6` steps, ranked on the validation -ELBO; once as a grid and once as a population for each
of 3 search seeds. Each chooses its best member on validation; printed: the chosen members' test
-ELBO (grid, each PBT seed and their mean), PBT's gain over the grid, and PBT's wall time over the
grid's (the same members, steps and evaluations: what ranking, gathers and exploits cost).
"""

import json
import math
import statistics
import tempfile
import time

from absl import app
from absl import flags

from ae_jax import cli
from benchmarks import harness

_SEARCH = flags.DEFINE_enum("search", "halving", ["halving", "pbt", "overhead", "all"],
                            "Which search to compare with its grid (overhead: what one PBT exploit costs).")
PBT_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
PBT_BETAS = (0.25, 0.5, 1.0, 2.0)
PBT_SEARCH_SEEDS = (0, 1, 2)
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
BETAS = (0.5, 1.0, 2.0)
SEEDS = (0, 1, 2)
# Also harness's --quick and --out.


def members(quick: bool) -> list[dict]:
  rates, betas, seeds = (LEARNING_RATES, BETAS[:1], SEEDS[:1]) if quick else (LEARNING_RATES, BETAS, SEEDS)
  return [{"learning_rate": lr, "beta": b, "seed": s} for lr in rates for b in betas for s in seeds]


def _setting(row: dict) -> str:
  return json.dumps({k: row[k] for k in ("learning_rate", "beta")})


def _mean_by_setting(rows: list[dict], key: str) -> dict[str, float]:
  by: dict[str, list[float]] = {}
  for row in rows:
    value = row.get(key)
    if row["status"] == "done" and isinstance(value, float) and math.isfinite(value):
      by.setdefault(_setting(row), []).append(value)
  return {s: statistics.mean(v) for s, v in by.items()}


def run(dataset: str, num_steps: int, quick: bool) -> dict:
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top  # Loads JAX.

  log_every = 3 if quick else 100
  last = log_every * math.ceil(num_steps / log_every)  # Test losses and a checkpoint at the end only.
  config = harness.family_config("vae", 32 if quick else 128, widths=(16,) if quick else (400,),
                                 latent_dim=4 if quick else 20, dataset=dataset, num_steps=num_steps,
                                 validation_fraction=0.1, evaluate="quick", num_pictures=0, log_every=log_every,
                                 eval_every=last, checkpoint_every=last)
  row = {"part": "halving_vs_grid", "dataset": dataset, "members": len(members(quick)),
         "num_steps": config.num_steps, "batch_size": config.batch_size, "eta": 3}
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    grid = sweep.run(config, members(quick), f"{tmp}/grid")
    row["grid_s"] = time.perf_counter() - start
    start = time.perf_counter()
    halving = sweep.run(config, members(quick), f"{tmp}/halving", search="halving", select="negative_elbo")
    row["halving_s"] = time.perf_counter() - start
  row["time_ratio"] = row["halving_s"] / row["grid_s"]
  grid_val = _mean_by_setting(grid["rows"], "val/negative_elbo")
  grid_test = _mean_by_setting(grid["rows"], "negative_elbo")
  grid_choice = min(grid_val, key=grid_val.get)
  survivors = _mean_by_setting(halving["rows"], "negative_elbo")
  halving_choice = next(iter(survivors))
  row.update(grid_choice=json.loads(grid_choice), grid_choice_test_negative_elbo=grid_test[grid_choice],
             grid_best_test_negative_elbo=min(grid_test.values()), halving_choice=json.loads(halving_choice),
             halving_choice_test_negative_elbo=survivors[halving_choice],
             # The same setting trained in the grid: halving's survivors train exactly as grid members do.
             grid_test_negative_elbo_of_halving_choice=grid_test[halving_choice],
             halving_members_finished=sum(r["status"] == "done" for r in halving["rows"]))
  row["halving_minus_grid_choice_nats"] = (row["halving_choice_test_negative_elbo"]
                                           - row["grid_choice_test_negative_elbo"])
  return row


def run_pbt(dataset: str, num_steps: int, quick: bool) -> dict:
  """PBT (3 search seeds) against a grid of the same 16 members on the same budget."""
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top  # Loads JAX.

  interval = max(1, num_steps // (3 if quick else 6))
  config = harness.family_config("vae", 32 if quick else 128, widths=(16,) if quick else (400,),
                                 latent_dim=4 if quick else 20, dataset=dataset, num_steps=num_steps,
                                 validation_fraction=0.1, evaluate="quick", num_pictures=0, log_every=interval,
                                 eval_every=interval, checkpoint_every=interval * math.ceil(num_steps / interval))
  rates, betas = (PBT_RATES[2:], PBT_BETAS[2:]) if quick else (PBT_RATES, PBT_BETAS)
  population = [{"learning_rate": lr, "beta": b} for lr in rates for b in betas]
  seeds = PBT_SEARCH_SEEDS[:1] if quick else PBT_SEARCH_SEEDS
  row = {"part": "pbt_vs_grid", "dataset": dataset, "members": len(population), "num_steps": config.num_steps,
         "interval": interval, "search_seeds": len(seeds)}

  def chosen(out) -> tuple[str, float]:
    scored = [(r["val/negative_elbo"], r["member"], r["negative_elbo"]) for r in out["rows"]
              if r["status"] == "done" and math.isfinite(r.get("val/negative_elbo", math.nan))]
    _, member, test = min(scored)
    return member, test

  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    grid = sweep.run(config, population, f"{tmp}/grid")
    row["grid_s"] = time.perf_counter() - start
    row["grid_choice"], row["grid_choice_test_negative_elbo"] = chosen(grid)
    tests, seconds = [], []
    for seed in seeds:
      start = time.perf_counter()
      out = sweep.run(config, population, f"{tmp}/pbt{seed}", search="pbt", select="negative_elbo",
                      search_seed=seed)
      seconds.append(time.perf_counter() - start)
      member, test = chosen(out)
      tests.append(test)
      row[f"pbt_seed{seed}_choice"], row[f"pbt_seed{seed}_choice_test_negative_elbo"] = member, test
  row["pbt_mean_choice_test_negative_elbo"] = statistics.mean(tests)
  row["pbt_gain_nats"] = row["grid_choice_test_negative_elbo"] - row["pbt_mean_choice_test_negative_elbo"]
  row["pbt_s"] = statistics.mean(seconds)
  row["pbt_time_over_grid"] = row["pbt_s"] / row["grid_s"]
  return row


def run_overhead(dataset: str, quick: bool) -> dict:
  """What PBT adds per interval, timed in one run on the population's own program: the ranking and
  perturbation on the host, the gather of the copied members' states along the member axis and the new
  `hp` put on the mesh (exactly `pbt.run`'s exploit), against the `interval` training steps between two
  exploits (an evaluation's interval in the PBT case above: num_steps / 6 = 500 steps at 3000)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from ae_jax import data  # pylint: disable=g-import-not-at-top
  from ae_jax import hparams  # pylint: disable=g-import-not-at-top
  from ae_jax import multihost  # pylint: disable=g-import-not-at-top
  from ae_jax import pbt  # pylint: disable=g-import-not-at-top
  from ae_jax import program as program_lib  # pylint: disable=g-import-not-at-top

  interval = 4 if quick else 500
  config = harness.family_config("vae", 32 if quick else 128, widths=(16,) if quick else (400,),
                                 latent_dim=4 if quick else 20, dataset=dataset, num_steps=10 * interval)
  rates, betas = (PBT_RATES[2:], PBT_BETAS[2:]) if quick else (PBT_RATES, PBT_BETAS)
  hp_list = [{**hparams.from_config(config), "learning_rate": lr, "beta": b} for lr in rates for b in betas]
  ds = data.load(dataset)
  program = program_lib.build(config, ds, hp_list)
  state, hp = program.init_state(), program.hp
  gather = jax.jit(lambda tree, idx: jax.tree.map(lambda x: x[idx], tree), out_shardings=state.step.sharding)

  def train_interval():
    nonlocal state
    start = time.perf_counter()
    state, _ = program.feed.run(state, hp, 0, interval)
    jax.block_until_ready(state)
    return time.perf_counter() - start

  def one_exploit():
    nonlocal state
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    scores = list(rng.normal(size=len(hp_list)))
    moves = pbt.decide(scores, quantile=0.25, rng=rng)
    source = np.arange(len(hp_list), dtype=np.int32)
    new_hp = list(hp_list)
    for i, parent in moves.items():
      source[i] = parent
      new_hp[i] = {**hp_list[i], **pbt.perturb(hp_list[parent], ["learning_rate", "beta"], factors=(0.8, 1.25),
                                               rng=rng)}
    state = gather(state, source)
    put = multihost.put(hparams.stack(new_hp), hp["seed"].sharding)
    jax.block_until_ready((state, put))
    return time.perf_counter() - start

  train_interval(), one_exploit()  # Compile both.
  repeats = 1 if quick else 3
  rounds = harness.round_robin([train_interval, one_exploit], repeats)
  program.feed.close()
  interval_s, exploit_s = (statistics.median(t) for t in rounds.seconds)
  return {"part": "pbt_overhead", "dataset": dataset, "members": len(hp_list), "interval": interval,
          "interval_s": interval_s, "exploit_s": exploit_s,
          "overhead_fraction": harness.median_ratio(rounds.seconds[1], rounds.seconds[0]), "repeats": repeats}


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --dataset=npz:mnist.npz --num_steps=3000")
  harness.set_defaults(dataset="digits")  # Real data: a search on random images chooses nothing.
  quick = harness.QUICK.value
  with harness.json_lines(harness.OUT.value) as emit, cli.clear_errors():
    emit(harness.device_info())
    dataset = "digits" if quick else harness.DATASET.value
    if _SEARCH.value in ("halving", "all"):
      emit(run(dataset, 9 if quick else harness.NUM_STEPS.value, quick))
    if _SEARCH.value in ("pbt", "all"):
      emit(run_pbt(dataset, 12 if quick else harness.NUM_STEPS.value, quick))
    if _SEARCH.value in ("overhead", "all"):
      emit(run_overhead(dataset, quick))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
