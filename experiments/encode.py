"""Exports the codes of a trained model for a data set: z_train, y_train, z_test, y_test in one .npz.

  python experiments/encode.py --workdir=runs/vae/653e4d7a --out=codes.npz     # the data it trained on
  python experiments/encode.py --workdir=runs/vae_beta --member=best --dataset=npz:other.npz --out=codes.npz

Codes are `ae_jax.load(workdir).encode(images)`: the posterior means for a VAE. --dataset takes any
name the loader reads (digits, a tensorflow-datasets name, npz:PATH) with images of the model's shape;
labels are -1 where the data set has none.
"""

import os

from absl import app
from absl import flags
from absl import logging

from ae_jax import cli

flags.DEFINE_string("workdir", None, "A trained run's workdir, or a sweep's (with --member).", required=True)
flags.DEFINE_string("member", None, "A sweep's member: its folder name, or 'best' (the one --select chose).")
flags.DEFINE_string("dataset", None, "Data set to encode (default: the one the model trained on).")
flags.DEFINE_string("out", "codes.npz", "Where the codes go (.npz: z_train, y_train, z_test, y_test).")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --workdir=runs/vae/653e4d7a --out=codes.npz")
  folder = os.path.dirname(flags.FLAGS.out)
  if folder and not os.path.isdir(folder):
    cli.fail(f"--out={flags.FLAGS.out}: no folder {folder!r}; create it or write elsewhere")
  with cli.clear_errors():
    import numpy as np  # pylint: disable=g-import-not-at-top

    from ae_jax import data  # pylint: disable=g-import-not-at-top
    from ae_jax import trained  # pylint: disable=g-import-not-at-top  # Loads JAX: after the flags are checked.

    model = trained.load(flags.FLAGS.workdir, flags.FLAGS.member)
    config = model.config
    ds = (model.dataset if not flags.FLAGS.dataset else
          data.load(flags.FLAGS.dataset, data_dir=config.data_dir, binarize=config.binarize))
    if ds.example_shape != model.dataset.example_shape:
      raise data.DataError(f"--dataset={flags.FLAGS.dataset} has images of shape {ds.example_shape}; the model in "
                           f"{model.workdir} takes {model.dataset.example_shape} (the {model.dataset.name} images)")
    codes = {"z_train": model.encode(ds.train_images), "y_train": ds.train_labels,
             "z_test": model.encode(ds.test_images), "y_test": ds.test_labels}
    np.savez(flags.FLAGS.out, **codes)
  print(f"{flags.FLAGS.out}: codes of {ds.name} from {model.workdir} (step {model.step}): z_train "
        f"{codes['z_train'].shape}, z_test {codes['z_test'].shape}, with labels y_train, y_test")


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=cli.parse_flags)
