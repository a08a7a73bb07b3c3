"""Trains a sweep: many hyperparameter settings and seeds of one config, as few compiled programs as can be.

  # A VAE's beta over 4 values x 3 seeds (12 members, one program) on the embedded digits:
  python experiments/sweep.py --config=experiments/configs/vae.py --sweep='beta=0.25,1,4,16' --seeds=3 \
      --workdir=runs/vae_beta --select=log_likelihood
  # Several keys: the product ('; ' separates keys); a sweep file for anything else:
  python experiments/sweep.py --config=experiments/configs/denoising.py \
      --sweep='noise_level=0.1,0.3;learning_rate=1e-3,3e-3'
  python experiments/sweep.py --config=experiments/configs/vae.py --sweep_file=experiments/sweeps/vae_beta.py
  # A search: 27 members drawn (seeded by --search_seed) instead of listed:
  python experiments/sweep.py --config=experiments/configs/vae.py \
      --sweep='learning_rate=loguniform(1e-4,1e-2);beta=uniform(0.25,4)' --members=27

Each member writes what `experiments/train.py` writes into <workdir>/<member>; the sweep writes
sweep.md, sweep.csv and sweep.png there and prints the table. The same command again resumes an
interrupted sweep or re-reports a finished one; adding values trains only the new members.
Several processes (--coordinator_address, --num_processes, --process_id; README, "Multiple hosts")
spread the members over all their devices.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ae_jax import cli
from ae_jax import launch
from ae_jax import sweep_spec

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
with cli.flag_errors():  # ml_collections applies --config.* overrides as soon as the flag is defined.
  config_flags.DEFINE_config_file(
      "config", os.path.join(_CONFIG_DIR, "default.py"), "Base config file of every member.", lock_config=True)
flags.DEFINE_string("sweep", None, "Inline sweep: 'key=v1,v2,...;key2=...' (the product of the lists); a key "
                    "may be drawn instead: 'key=loguniform(1e-4,1e-2)' (also uniform, randint, choice).")
flags.DEFINE_integer("members", None, "How many members to draw from the --sweep's distributions (each crossed "
                     "with its listed keys and --seeds).", lower_bound=1)
flags.DEFINE_integer("search_seed", None, "Seed of the --members draws (default 0); more members with the same "
                     "seed keep the earlier ones.")
flags.DEFINE_integer("seeds", None, "Each setting with seeds 0..N-1 (added as the key 'seed').", lower_bound=1)
flags.DEFINE_string("sweep_file", None, "A Python file whose get_sweep() returns the members as override dicts.")
flags.DEFINE_string("workdir", None, "Where the members and the tables go (default: runs/sweep_<family>/<digest of "
                    "the config and the swept keys>, printed at start: the same command resumes there).")
flags.DEFINE_string("select", None, "Rank the settings by this metric's mean over seeds and report the best "
                    "setting and its best seed (min:/max: prefix to force a direction), e.g. test_loss, "
                    "max:probe_accuracy or a user term's test_loss_<name>.")
flags.DEFINE_enum("search", "grid", sweep_spec.SEARCHES, "grid: every member trains to the end; halving: "
                  "successive halving, the best 1/eta of the settings go on at each rung; pbt: population-based "
                  "training, the worst quarter takes the best quarter's state and perturbs its hyperparameters "
                  "every --pbt_interval steps (both rank on the validation split's --select loss term, default "
                  "the loss).")
flags.DEFINE_integer("eta", sweep_spec.DEFAULT_ETA, "Halving: 1/eta of the settings go on at each rung.", lower_bound=2)
flags.DEFINE_integer("pbt_interval", None, "PBT: steps between exploits (a multiple of --config.eval_every; "
                     "default eval_every).", lower_bound=1)
flags.DEFINE_float("pbt_quantile", 0.25, "PBT: the bottom quantile that copies a member of the top one.")
flags.DEFINE_list("explore", None, "PBT: the hyperparameters to perturb (default: the swept ones).")
flags.DEFINE_string("replay", None, "PBT: retrain this member of the sweep in --workdir as a single run that "
                    "follows its lineage (into <workdir>/replay/<member>), and print both final test losses.")
flags.DEFINE_integer("rungs", None, "Halving: the number of rungs (default: log_eta(settings) + 1); rung r trains "
                     "num_steps / eta^(rungs-1-r) steps.", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Discard a sweep of a different base config found in --workdir "
                  "(--config.overwrite=True does the same).")
launch.define_distributed_flags()


def members_from_flags() -> tuple[list[dict], dict | None]:
  """The members the flags describe, and what a search drew them from (for sweep.json; None for a grid).

  SweepError (one line) if the flags describe no members, or describe them two ways at once.
  """
  config, inline, path, seeds = flags.FLAGS.config, flags.FLAGS.sweep, flags.FLAGS.sweep_file, flags.FLAGS.seeds
  members, search_seed = flags.FLAGS.members, flags.FLAGS.search_seed
  if inline and path:
    raise sweep_spec.SweepError("pass --sweep or --sweep_file, not both")
  if search_seed is not None and flags.FLAGS.search == "pbt" and members is None:
    search_seed = None  # Seeds PBT's choices of parents and factors (main), not draws.
  if (members is not None or search_seed is not None) and not inline:
    where = ("a sweep file draws with sweep_spec.sample(n, search_seed=...)" if path else
             "e.g. --sweep='beta=uniform(0.25,4)'")
    raise sweep_spec.SweepError(f"--members and --search_seed draw the --sweep's distributions; {where}")
  if search_seed is not None and members is None:
    raise sweep_spec.SweepError(f"--search_seed={search_seed} seeds the draws of --members=N, which is not set")
  if path:
    listed = sweep_spec.load_file(path)
    return (sweep_spec.with_seeds(listed, seeds) if seeds else listed), None
  if inline:
    search_seed = search_seed or 0
    return (sweep_spec.parse_inline(inline, seeds=seeds, config=config, members=members, search_seed=search_seed),
            sweep_spec.search_record(inline, members=members, search_seed=search_seed, config=config))
  if seeds:
    return sweep_spec.with_seeds([{}], seeds), None
  raise sweep_spec.SweepError("nothing to sweep: pass --sweep='key=v1,v2', --seeds=N or --sweep_file=FILE")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --sweep='beta=1,2' --seeds=3")
  config = flags.FLAGS.config
  overwrite = flags.FLAGS.overwrite or config.overwrite  # One flag; the config key is its alias.
  config.overwrite = False  # The sweep discards what it replaces once; its members then resume as usual.
  with cli.clear_errors():
    members, drawn = members_from_flags()
  workdir = flags.FLAGS.workdir or cli.default_workdir(config, sweep_spec.swept_keys(members))
  cli.check_workdir(workdir)  # Before JAX loads: a workdir that cannot hold the sweep is refused at once.
  cli.use_compilation_cache()
  launch.initialize_distributed()  # Several processes: join them before any JAX computation.
  if launch.is_main_process():
    cli.lock_workdir(workdir)  # One sweep per workdir; the other processes write nothing there.
  with launch.errors_end_all_processes(), cli.clear_errors():
    from ae_jax import sweep  # pylint: disable=g-import-not-at-top  # Loads JAX: after the flags are checked.
    if flags.FLAGS.replay:
      replayed, own = sweep.replay(config, members, workdir, flags.FLAGS.replay)
      if launch.is_main_process():
        print(f"{flags.FLAGS.replay}: test loss {own.test.get('loss', float('nan')):.6g} in the population, "
              f"{replayed.test['loss']:.6g} replayed as a single run into "
              f"{os.path.join(workdir, 'replay', flags.FLAGS.replay)}")
      return
    out = sweep.run(config, members, workdir, select=flags.FLAGS.select, overwrite=overwrite,
                    drawn=drawn, search=flags.FLAGS.search, eta=flags.FLAGS.eta, rungs=flags.FLAGS.rungs,
                    pbt_interval=flags.FLAGS.pbt_interval, pbt_quantile=flags.FLAGS.pbt_quantile,
                    explore=flags.FLAGS.explore, search_seed=flags.FLAGS.search_seed or 0)
    if launch.is_main_process():
      print(out["text"])
      print(f"\nTables: {out['paths']['markdown']}, {out['paths']['csv']}, {out['paths']['png']}; "
            f"members in {os.path.join(workdir, '<member>')}")
    cli.exit_for_sweep(out)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=cli.parse_flags)
