"""Trains one autoencoder family. Flags: --config (a file in configs/) with overrides, and --workdir.

  python experiments/train.py                                   # undercomplete AE on digits
  python experiments/train.py --config=experiments/configs/vae.py --config.latent_dim=16 --workdir=runs/vae
  # One of several processes (README, "Multiple hosts"); under SLURM, Open MPI or on a TPU pod slice
  # the three flags are found by JAX:
  python experiments/train.py --coordinator_address=host0:1234 --num_processes=2 --process_id=0
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ae_jax import cli
from ae_jax import launch

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
with cli.flag_errors():  # ml_collections applies --config.* overrides as soon as the flag is defined.
  config_flags.DEFINE_config_file(
      "config", os.path.join(_CONFIG_DIR, "default.py"), "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, pictures and checkpoints go (default: runs/<family>/<digest "
                    "of the config>, printed at start: the same command resumes there).")
flags.DEFINE_bool("overwrite", False, "Discard a run with a different config found in --workdir "
                  "(--config.overwrite=True does the same).")
launch.define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --config.latent_dim=16")
  config = flags.FLAGS.config
  if flags.FLAGS.overwrite:
    config.overwrite = True
  workdir = flags.FLAGS.workdir or cli.default_workdir(config)
  cli.check_workdir(workdir)  # Before JAX loads: a workdir that cannot hold the run is refused at once.
  from ae_jax import config as config_lib  # pylint: disable=g-import-not-at-top  # Loads JAX.
  with cli.clear_errors():
    config_lib.validate(config)  # Before importing the trainer (and TensorFlow, via clu): bad flags fail fast.
    cli.use_compilation_cache()
  launch.initialize_distributed()  # Several processes: join them before any JAX computation.
  if launch.is_main_process():
    cli.lock_workdir(workdir)  # One run per workdir; the other processes write nothing there.
  with launch.errors_end_all_processes(), cli.clear_errors():
    from ae_jax import train  # pylint: disable=g-import-not-at-top
    result = train.train_and_evaluate(config, workdir)
    if launch.is_main_process():
      cli.report(result, workdir, config)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=cli.parse_flags)
